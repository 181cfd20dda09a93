/* test_crash.c: crash safety. A child process appends two-event batches in a
 * loop and reports each acknowledged append on a pipe; the parent SIGKILLs
 * it at a random moment, at least 25 times. After each kill the store
 * reopens, verify passes, every acknowledged append is there, and no append
 * is there by halves; the reader slot each killed child held is reclaimed. */
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>

#include "eventstore/tests/test_util.h"

typedef struct ackmsg {
    uint32_t round;
    uint32_t seq;
    uint64_t position; /* of the first of the two events */
} ackmsg;

static char dir[512];

static void child(int fd, uint32_t round)
{
    es_store *s = NULL;
    es_txn *held = NULL;
    if (es_open(dir, NULL, &s) != ES_OK)
        _exit(3);
    /* A read transaction the kill leaves behind: its reader slot is stale
     * and the next open must reclaim it. */
    if (es_txn_begin(s, &held) != ES_OK)
        _exit(6);
    for (uint32_t i = 0;; i++) {
        es_event_data e[2];
        char stream[32];
        snprintf(stream, sizeof stream, "task-crash-%u", i % 7);
        tu_event(&e[0], round, (uint64_t)i * 2, "test.Crash", &i, sizeof i);
        tu_event(&e[1], round, (uint64_t)i * 2 + 1, "test.Crash2", &i, sizeof i);
        es_append_result r;
        if (es_append(s, stream, ES_EXPECT_ANY, e, 2, &r) != ES_OK)
            _exit(4);
        ackmsg m = {round, i, r.first_position};
        if (write(fd, &m, sizeof m) != (ssize_t)sizeof m)
            _exit(5);
    }
}

static ackmsg *acks;
static size_t nacks, capacks;

static void keep(const ackmsg *m)
{
    if (nacks == capacks) {
        capacks = capacks ? capacks * 2 : 1024;
        CHECK((acks = realloc(acks, capacks * sizeof *acks)) != NULL);
    }
    acks[nacks++] = *m;
}

static void check_store(void)
{
    es_store *s = NULL;
    es_verify_report rep;
    es_stats st;
    CHECK_OK(es_open(dir, NULL, &s));
    int rc = es_verify(s, &rep);
    if (rc != ES_OK)
        fprintf(stderr, "verify: %s at %llu\n", rep.message,
                (unsigned long long)rep.bad_position);
    CHECK_OK(rc);
    CHECK_OK(es_stats_get(s, &st));
    /* Stale reader slots of killed children were reclaimed at open. */
    CHECK(st.readers_used <= 2);
    /* Two events per append: an odd count would be half an append. */
    CHECK(st.last_position % 2 == 0);
    es_txn *t;
    es_event ev[2];
    es_page pg;
    CHECK_OK(es_txn_begin(s, &t));
    for (size_t i = 0; i < nacks; i++) {
        CHECK_OK(es_read_all(t, acks[i].position, ES_FORWARD, NULL, 2, ev, &pg));
        CHECK(pg.count == 2);
        for (int j = 0; j < 2; j++) {
            uint8_t id[ES_ID_SIZE];
            tu_id(id, acks[i].round, (uint64_t)acks[i].seq * 2 + (uint64_t)j);
            CHECK(ev[j].position == acks[i].position + (uint64_t)j);
            CHECK(!memcmp(ev[j].id, id, ES_ID_SIZE));
        }
    }
    es_txn_end(t);
    es_close(s);
}

int main(void)
{
    tu_tmpdir(dir, sizeof dir, "crash");
    int kills = (int)tu_scale(25, 25, 25);
    unsigned seed = (unsigned)time(NULL);
    printf("crash: seed %u\n", seed);
    for (int round = 1; round <= kills; round++) {
        int fds[2];
        CHECK(pipe(fds) == 0);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            child(fds[1], (uint32_t)round);
        }
        close(fds[1]);
        /* Kill after a random number of acknowledgements: the child is then
         * somewhere inside its next append, anywhere in the commit. */
        long target = 1 + rand_r(&seed) % 200, got = 0;
        ackmsg m;
        double deadline = tu_now() + 60;
        while (got < target) {
            ssize_t n = read(fds[0], &m, sizeof m);
            if (n < 0 && errno == EINTR)
                continue;
            CHECK(n == (ssize_t)sizeof m);
            CHECK(tu_now() < deadline);
            keep(&m);
            got++;
        }
        CHECK(kill(pid, SIGKILL) == 0);
        /* Whatever the child reported before dying was acknowledged too. */
        ssize_t n;
        while ((n = read(fds[0], &m, sizeof m)) == (ssize_t)sizeof m ||
               (n < 0 && errno == EINTR))
            if (n > 0)
                keep(&m);
        close(fds[0]);
        int status;
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        check_store();
    }
    printf("crash: %d kills, %zu acknowledged appends all present\n", kills,
           nacks);
    free(acks);
    tu_rmtree(dir);
    return 0;
}

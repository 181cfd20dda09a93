/* natslib_test: after am_nats_open, the threads nats.c's library started run
 * at nice AM_NATS_LIB_NICE, while the thread that opened it keeps its own
 * priority; opening again changes nothing. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <nats/nats.h>

#include "services/common/natslib.h"
#include "services/common/test_util.h"

/* Counts this process's threads by nice value: how many at `nice`, and
 * how many in all. */
static int threads_at(int nice, int *total)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    *total = 0;
    if (d == NULL)
        return -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], buf[1024];
        snprintf(path, sizeof(path), "/proc/self/task/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue;
        size_t len = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[len] = '\0';
        /* Fields after the command's closing parenthesis: state is field 3,
         * nice field 19. */
        char *p = strrchr(buf, ')');
        if (p == NULL)
            continue;
        int field = 2, v = 0;
        for (char *tok = strtok(p + 1, " "); tok != NULL; tok = strtok(NULL, " ")) {
            if (++field == 19) {
                v = atoi(tok);
                break;
            }
        }
        (*total)++;
        n += v == nice;
    }
    closedir(d);
    return n;
}

static void on_connected(natsConnection *nc, void *closure)
{
    (void)nc;
    (void)closure;
}

static void library_threads_are_niced(void)
{
    int total0 = 0, total1 = 0, total2 = 0;
    CHECK(threads_at(AM_NATS_LIB_NICE, &total0) == 0);
    CHECK(am_nats_open() == 0);
    int niced = threads_at(AM_NATS_LIB_NICE, &total1);
    /* nats.c starts at least its collector and timer threads. */
    CHECK(niced >= 2);
    CHECK(niced == total1 - total0);
    CHECK(getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid)) == 0);
    CHECK(am_nats_open() == 0);
    CHECK(threads_at(AM_NATS_LIB_NICE, &total2) == niced && total2 == total1);
    /* A connection's own threads (it connects in the background) are the
     * caller's: not niced. */
    natsConnection *nc = NULL;
    natsOptions *o = NULL;
    CHECK(natsOptions_Create(&o) == NATS_OK);
    CHECK(natsOptions_SetURL(o, "nats://127.0.0.1:1") == NATS_OK);
    CHECK(natsOptions_SetRetryOnFailedConnect(o, true, on_connected, NULL) == NATS_OK);
    CHECK(natsConnection_Connect(&nc, o) == NATS_NOT_YET_CONNECTED);
    int total3 = 0;
    CHECK(threads_at(AM_NATS_LIB_NICE, &total3) == niced);
    natsConnection_Close(nc);
    natsConnection_Destroy(nc);
    natsOptions_Destroy(o);
    CHECK(nats_CloseAndWait(5000) == NATS_OK);
}

int main(void)
{
    RUN(library_threads_are_niced);
    return TEST_EXIT();
}

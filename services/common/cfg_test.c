/* Unit tests of option parsing: precedence (flag > env > default), value
 * forms (durations, sizes, booleans), errors, positional arguments, help. */
#include <string.h>

#include "services/common/cfg.h"
#include "services/common/test_util.h"

static const cfg_option table[] = {
    CFG_RUNTIME_OPTIONS("AGENTMESH_T_", "127.0.0.1:50061", "127.0.0.1:9101",
                        "data/t"),
    {"verbose", "AGENTMESH_T_VERBOSE", CFG_BOOL, "false", "talk more"},
};
#define N (sizeof table / sizeof table[0])

static cfg *parse(int argc, char **argv, int want)
{
    cfg *c = NULL;
    char err[256] = "";
    int rc = cfg_parse(table, N, argc, argv, &c, err, sizeof err);
    CHECK(rc == want);
    if (rc != want)
        fprintf(stderr, "  rc=%d (%s) err=%s\n", rc, cfg_strerror(rc), err);
    return c;
}

static void test_defaults(void)
{
    char *argv[] = {"prog"};
    cfg *c = parse(1, argv, CFG_OK);
    const char *s = NULL;
    int64_t i = 0;
    uint64_t u = 0;
    bool b = true;
    CHECK(N == CFG_RUNTIME_OPTION_COUNT + 1);
    CHECK(cfg_get_string(c, "listen", &s) == CFG_OK && strcmp(s, "127.0.0.1:50061") == 0);
    CHECK(cfg_get_int(c, "worker-threads", &i) == CFG_OK && i == 8);
    CHECK(cfg_get_size(c, "max-message-size", &u) == CFG_OK && u == 4u << 20);
    CHECK(cfg_get_duration_ms(c, "grace-period", &i) == CFG_OK && i == 10000);
    CHECK(cfg_get_bool(c, "verbose", &b) == CFG_OK && !b);
    CHECK(cfg_get_string(c, "internal-token", &s) == CFG_OK && s == NULL);
    CHECK(cfg_get_int(c, "listen", &i) == CFG_ERR_TYPE);
    CHECK(cfg_get_int(c, "nope", &i) == CFG_ERR_NOT_FOUND);
    cfg_destroy(c);
    cfg_destroy(NULL);
}

static void test_precedence_and_forms(void)
{
    setenv("AGENTMESH_T_WORKER_THREADS", "3", 1);
    setenv("AGENTMESH_T_QUEUE_DEPTH", "7", 1);
    setenv("AGENTMESH_T_GRACE_PERIOD", "2m", 1);
    char *argv[] = {"prog", "--worker-threads=5", "--max-message-size", "512K",
                    "--verbose", "pos1", "--listen=[::1]:0", "--", "--not-a-flag"};
    cfg *c = parse(9, argv, CFG_OK);
    int64_t i = 0;
    uint64_t u = 0;
    bool b = false;
    const char *s = NULL;
    CHECK(cfg_get_int(c, "worker-threads", &i) == CFG_OK && i == 5);
    CHECK(cfg_get_int(c, "queue-depth", &i) == CFG_OK && i == 7);
    CHECK(cfg_get_duration_ms(c, "grace-period", &i) == CFG_OK && i == 120000);
    CHECK(cfg_get_size(c, "max-message-size", &u) == CFG_OK && u == 512 * 1024);
    CHECK(cfg_get_bool(c, "verbose", &b) == CFG_OK && b);
    CHECK(cfg_get_string(c, "listen", &s) == CFG_OK && strcmp(s, "[::1]:0") == 0);
    char *const *args = NULL;
    size_t nargs = 0;
    CHECK(cfg_args(c, &args, &nargs) == CFG_OK && nargs == 2);
    CHECK(nargs == 2 && strcmp(args[0], "pos1") == 0 &&
          strcmp(args[1], "--not-a-flag") == 0);
    cfg_destroy(c);
    unsetenv("AGENTMESH_T_WORKER_THREADS");
    unsetenv("AGENTMESH_T_QUEUE_DEPTH");
    unsetenv("AGENTMESH_T_GRACE_PERIOD");

    char *argv2[] = {"prog", "--no-verbose", "--grace-period=250ms",
                     "--max-message-size=1MiB"};
    c = parse(4, argv2, CFG_OK);
    CHECK(cfg_get_bool(c, "verbose", &b) == CFG_OK && !b);
    CHECK(cfg_get_duration_ms(c, "grace-period", &i) == CFG_OK && i == 250);
    CHECK(cfg_get_size(c, "max-message-size", &u) == CFG_OK && u == 1 << 20);
    cfg_destroy(c);
}

static void test_errors(void)
{
    char *unknown[] = {"prog", "--bogus=1"};
    CHECK(parse(2, unknown, CFG_ERR_UNKNOWN) == NULL);
    char *missing[] = {"prog", "--listen"};
    CHECK(parse(2, missing, CFG_ERR_MISSING) == NULL);
    char *badint[] = {"prog", "--worker-threads=many"};
    CHECK(parse(2, badint, CFG_ERR_INVALID) == NULL);
    char *baddur[] = {"prog", "--grace-period=10 s"};
    CHECK(parse(2, baddur, CFG_ERR_INVALID) == NULL);
    char *badsize[] = {"prog", "--max-message-size=-4M"};
    CHECK(parse(2, badsize, CFG_ERR_INVALID) == NULL);
    char *badbool[] = {"prog", "--verbose=maybe"};
    CHECK(parse(2, badbool, CFG_ERR_INVALID) == NULL);
    setenv("AGENTMESH_T_QUEUE_DEPTH", "deep", 1);
    char *envbad[] = {"prog"};
    CHECK(parse(1, envbad, CFG_ERR_INVALID) == NULL);
    unsetenv("AGENTMESH_T_QUEUE_DEPTH");
    char *help[] = {"prog", "--listen=x", "-h"};
    CHECK(parse(3, help, CFG_ERR_HELP) == NULL);
}

static void test_help_lists_every_option(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cfg_print_help(table, N, "prog", f);
    fclose(f);
    for (size_t i = 0; i < N; i++) {
        char flag[64];
        snprintf(flag, sizeof flag, "--%s=", table[i].name);
        CHECK(strstr(buf, flag) != NULL);
        if (table[i].env != NULL)
            CHECK(strstr(buf, table[i].env) != NULL);
    }
    CHECK(strstr(buf, "default 10s") != NULL);
    free(buf);
}

/* cfg_parse_main's exit statuses: 0 after --help, 2 after an error, and
 * -1 (go on) with the cfg set. */
static void test_parse_main(void)
{
    cfg *c = NULL;
    char *help[] = {"prog", "--help"};
    CHECK(cfg_parse_main(table, N, 2, help, &c) == 0 && c == NULL);
    char *bad[] = {"prog", "--bogus=1"};
    CHECK(cfg_parse_main(table, N, 2, bad, &c) == 2 && c == NULL);
    char *ok[] = {"prog", "--worker-threads=3"};
    CHECK(cfg_parse_main(table, N, 2, ok, &c) == -1 && c != NULL);
    int64_t i = 0;
    CHECK(cfg_get_int(c, "worker-threads", &i) == CFG_OK && i == 3);
    cfg_destroy(c);
}

int main(void)
{
    RUN(test_defaults);
    RUN(test_precedence_and_forms);
    RUN(test_errors);
    RUN(test_help_lists_every_option);
    RUN(test_parse_main);
    return TEST_EXIT();
}

/* Process configuration from a table of options: each option has a flag
 * (--name=value or --name value), an environment variable, a default and a
 * help line. Precedence: flag, then environment, then default. `--help`
 * prints the table. A parsed cfg is read-only and safe to share. */
#ifndef AGENTMESH_SERVICES_COMMON_CFG_H
#define AGENTMESH_SERVICES_COMMON_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CFG_ERRORS(X)                                                          \
    X(CFG_OK, 0, "success")                                                    \
    X(CFG_ERR_NOMEM, 1, "out of memory")                                       \
    X(CFG_ERR_INVALID, 2, "invalid value")                                     \
    X(CFG_ERR_UNKNOWN, 3, "unknown option")                                    \
    X(CFG_ERR_MISSING, 4, "option needs a value")                              \
    X(CFG_ERR_HELP, 5, "help requested")                                       \
    X(CFG_ERR_NOT_FOUND, 6, "no such option in the table")                     \
    X(CFG_ERR_TYPE, 7, "option has another type")

typedef enum cfg_err {
#define CFG_ERR_ENUM_(name, value, text) name = value,
    CFG_ERRORS(CFG_ERR_ENUM_)
#undef CFG_ERR_ENUM_
} cfg_err;

const char *cfg_strerror(int err);

typedef enum cfg_type {
    CFG_STRING = 0,
    CFG_INT = 1,      /* decimal int64 */
    CFG_BOOL = 2,     /* true/false/1/0/yes/no/on/off; a bare --flag is true */
    CFG_DURATION = 3, /* 250ms, 10s, 2m, 1h; a bare number is milliseconds */
    CFG_SIZE = 4      /* bytes: 4194304, 512K, 4M, 1G (KiB multiples; KiB/MiB/GiB too) */
} cfg_type;

/* One option. Plain static data. */
typedef struct cfg_option {
    const char *name; /* flag name without "--", e.g. "listen" */
    const char *env;  /* environment variable, e.g. "AGENTMESH_AGENTS_LISTEN"; may be NULL */
    cfg_type type;
    const char *def;  /* default as text; NULL = unset (strings read as NULL) */
    const char *help;
} cfg_option;

/* The options every agentmesh server shares. ENV is the process's env prefix
 * (e.g. "AGENTMESH_AGENTS_"), then the default listen address, admin address
 * and data directory. Use as the first entries of a table:
 *   static const cfg_option opts[] = {
 *       CFG_RUNTIME_OPTIONS("AGENTMESH_AGENTS_", "127.0.0.1:50061",
 *                           "127.0.0.1:9101", "data/agents"),
 *       {"nats-url", "AGENTMESH_NATS_URL", CFG_STRING, "nats://127.0.0.1:4222", "..."},
 *   };
 * rpc_server_options_from_cfg() reads them. */
#define CFG_RUNTIME_OPTIONS(ENV, LISTEN, ADMIN, DATA)                          \
    {"listen", ENV "LISTEN", CFG_STRING, LISTEN,                              \
     "gRPC listen address (host:port; port 0 picks a free one)"},             \
    {"admin", ENV "ADMIN", CFG_STRING, ADMIN,                                 \
     "admin HTTP address for /metrics and /healthz (empty: off)"},            \
    {"data-dir", ENV "DATA_DIR", CFG_STRING, DATA, "data directory"},          \
    {"worker-threads", ENV "WORKER_THREADS", CFG_INT, "8",                    \
     "handler threads (also bounds concurrent streams)"},                     \
    {"queue-depth", ENV "QUEUE_DEPTH", CFG_INT, "64",                         \
     "calls waiting for a worker before RESOURCE_EXHAUSTED"},                 \
    {"cq-threads", ENV "CQ_THREADS", CFG_INT, "1",                            \
     "gRPC completion-queue threads"},                                        \
    {"worker-policy", ENV "WORKER_POLICY", CFG_STRING, "batch",               \
     "handler threads' Linux scheduling policy: batch or normal"},            \
    {"max-message-size", ENV "MAX_MESSAGE_SIZE", CFG_SIZE, "4M",              \
     "largest gRPC message received or sent"},                                \
    {"grace-period", ENV "GRACE_PERIOD", CFG_DURATION, "10s",                 \
     "time in-flight calls get to finish on SIGTERM"},                        \
    {"internal-token", "AGENTMESH_INTERNAL_TOKEN", CFG_STRING, NULL,          \
     "shared secret that makes x-agentmesh-principal trusted"},               \
    {"log-level", "AGENTMESH_LOG_LEVEL", CFG_STRING, "info",                  \
     "debug, info, warn or error"},                                           \
    {"port-file", ENV "PORT_FILE", CFG_STRING, NULL,                          \
     "write the bound gRPC and admin ports to this file once serving"}

/* How many entries CFG_RUNTIME_OPTIONS expands to. */
#define CFG_RUNTIME_OPTION_COUNT 12

typedef struct cfg cfg;

/* Parses argv (argv[0] skipped) against the table; `environ`-style lookups
 * use getenv. Errors: HELP (--help or -h given; nothing else parsed),
 * UNKNOWN, MISSING, INVALID (a value of the wrong form), NOMEM. On error a
 * one-line explanation goes to `errbuf` (may be NULL) of `errlen` bytes.
 * The table is borrowed for the cfg's life; *out is freed with cfg_destroy. */
int cfg_parse(const cfg_option *table, size_t n, int argc, char *const *argv,
              cfg **out, char *errbuf, size_t errlen);
void cfg_destroy(cfg *c);

/* Prints usage and the table (flag, env, default, help) to `f`. */
void cfg_print_help(const cfg_option *table, size_t n, const char *prog,
                    FILE *f);

/* cfg_parse for a program's main(): on --help prints the table to stdout
 * and returns 0; on an error prints "prog: why" to stderr and returns 2
 * (the exit statuses); else sets *out and returns -1 (go on). */
int cfg_parse_main(const cfg_option *table, size_t n, int argc,
                   char *const *argv, cfg **out);

/* Typed reads by flag name. Strings are borrowed for the cfg's life and may
 * be NULL when the option has no default and was not given. Durations are in
 * milliseconds, sizes in bytes. Errors: NOT_FOUND, TYPE. */
int cfg_get_string(const cfg *c, const char *name, const char **out);
int cfg_get_int(const cfg *c, const char *name, int64_t *out);
int cfg_get_bool(const cfg *c, const char *name, bool *out);
int cfg_get_duration_ms(const cfg *c, const char *name, int64_t *out);
int cfg_get_size(const cfg *c, const char *name, uint64_t *out);

/* The positional arguments (not options), borrowed from argv. */
int cfg_args(const cfg *c, char *const **args, size_t *nargs);

#ifdef __cplusplus
}
#endif

#endif

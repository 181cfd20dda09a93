/* query: the process. Reads its configuration, opens its projection env,
 * starts the projector (catch-up from each source's EventStore, then live
 * events from NATS), serves Query, health and reflection on the runtime, and
 * on SIGTERM drains calls and stops the projector. `--rebuild` and `--dump`
 * are one-shot commands on the same data directory. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <grpc/grpc.h>
#include <nats/nats.h>

#include "services/common/cfg.h"
#include "services/common/log.h"
#include "services/common/runtime.h"
#include "services/query/handlers.h"
#include "services/query/query.h"

static const cfg_option options[] = {
    CFG_RUNTIME_OPTIONS("AGENTMESH_QUERY_", "127.0.0.1:50063",
                        "127.0.0.1:9103", "data/query"),
    {"agents-addr", "AGENTMESH_QUERY_AGENTS_ADDR", CFG_STRING,
     "127.0.0.1:50061", "agent-manager's gRPC address (EventStore catch-up); "
                        "empty: not projected"},
    {"memory-addr", "AGENTMESH_QUERY_MEMORY_ADDR", CFG_STRING,
     "127.0.0.1:50062", "memory-sync's gRPC address (EventStore catch-up); "
                        "empty: not projected"},
    {"nats-url", "AGENTMESH_NATS_URL", CFG_STRING, "nats://127.0.0.1:4222",
     "NATS server for live events (empty: catch-up polling only)"},
    {"poll-interval", "AGENTMESH_QUERY_POLL_INTERVAL", CFG_DURATION, "250ms",
     "how often an idle source is asked for events NATS did not bring"},
    {"page-size", "AGENTMESH_QUERY_PAGE_SIZE", CFG_INT, "1000",
     "events per EventStore.ReadAll page (1..1000)"},
    {"sync", "AGENTMESH_QUERY_SYNC", CFG_BOOL, "false",
     "fsync each projection commit (the read models are rebuilt from the "
     "sources, so this is off by default)"},
    {"rebuild", NULL, CFG_BOOL, "false",
     "drop the read models, replay every source from the start, and exit"},
    {"agents-log", "AGENTMESH_QUERY_AGENTS_LOG", CFG_STRING, "",
     "with --rebuild: agent-manager's event store folder (e.g. "
     "data/agents), read in place on this host before its EventStore API"},
    {"memory-log", "AGENTMESH_QUERY_MEMORY_LOG", CFG_STRING, "",
     "with --rebuild: memory-sync's event store folder (e.g. data/memory), "
     "read in place on this host before its EventStore API"},
    {"dump", NULL, CFG_STRING, NULL,
     "write the read models as text to this file (- for stdout) and exit"},
};

/* mkdir -p: the store creates its own folder, not the ones above it. */
static int make_dirs(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return -1;
        buf[i] = saved;
    }
    return 0;
}

static int dump(const char *dir, const char *path)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "w") : stdout;
    if (!f) {
        fprintf(stderr, "query: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    int rc = qs_dump(dir, f);
    if (f != stdout && fclose(f))
        rc = ES_IO;
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    cfg *c = NULL;
    rpc_runtime *rt = NULL;
    qs_db *db = NULL;
    qs_grpc *grpc = NULL;
    qs_projector *proj = NULL;
    int exit_code = 1;
    size_t n = sizeof options / sizeof options[0];
    const char *data_dir = NULL, *dump_path = NULL;
    const char *log_dir[QS_NSOURCES] = {NULL, NULL};
    qs_projector_options po;
    memset(&po, 0, sizeof po);
    int64_t page = 0;
    bool sync = false, rebuild = false, grpc_started = false;

    int rc = cfg_parse_main(options, n, argc, argv, &c);
    if (rc >= 0)
        return rc;
    if (cfg_get_string(c, "data-dir", &data_dir) || !data_dir ||
        cfg_get_string(c, "agents-addr", &po.addr[QS_AGENTS]) ||
        cfg_get_string(c, "memory-addr", &po.addr[QS_MEMORY]) ||
        cfg_get_string(c, "nats-url", &po.nats_url) ||
        cfg_get_duration_ms(c, "poll-interval", &po.poll_ms) ||
        po.poll_ms <= 0 || cfg_get_int(c, "page-size", &page) || page < 1 ||
        page > 1000 || cfg_get_bool(c, "sync", &sync) ||
        cfg_get_bool(c, "rebuild", &rebuild) ||
        cfg_get_string(c, "agents-log", &log_dir[QS_AGENTS]) ||
        cfg_get_string(c, "memory-log", &log_dir[QS_MEMORY]) ||
        cfg_get_string(c, "dump", &dump_path)) {
        fprintf(stderr, "%s: invalid settings (data-dir must be set, "
                        "poll-interval > 0, page-size 1..1000)\n",
                argv[0]);
        cfg_destroy(c);
        return 2;
    }
    po.page = (unsigned)page;
    if (dump_path) {
        exit_code = dump(data_dir, dump_path);
        cfg_destroy(c);
        return exit_code;
    }
    if (make_dirs(data_dir)) {
        fprintf(stderr, "%s: cannot create %s: %s\n", argv[0], data_dir,
                strerror(errno));
        cfg_destroy(c);
        return 1;
    }
    if (rebuild) {
        grpc_init();
        exit_code = qs_rebuild(data_dir, po.addr, log_dir, po.page, sync) ? 1 : 0;
        grpc_shutdown();
        cfg_destroy(c);
        return exit_code;
    }
    /* The runtime blocks SIGTERM/SIGINT: create it before any thread. */
    if ((rc = rpc_runtime_create(c, &rt)) != RPC_OK) {
        LOG_ERROR("query: cannot start: %s", rpc_strerror(rc));
        goto out;
    }
    /* The catch-up clients use the gRPC core before the server starts. */
    grpc_init();
    grpc_started = true;
    if ((rc = qs_db_open(data_dir, sync, &db)) != ES_OK) {
        LOG_ERROR("query: cannot open the read models in %s: %s", data_dir,
                  es_strerror(rc));
        goto out;
    }
    if ((rc = qs_grpc_register(rpc_runtime_server(rt), db, &grpc)) != RPC_OK) {
        LOG_ERROR("query: cannot register methods: %s", rpc_strerror(rc));
        goto out;
    }
    if (qs_db_reset_reason(db))
        LOG_WARN("query: %s held %s; dropped, projecting again from the "
                 "sources",
                 data_dir, qs_db_reset_reason(db));
    uint64_t pos[QS_NSOURCES];
    qs_db_positions_now(db, pos);
    LOG_INFO("query: read models at agents %llu, memory %llu; catching up",
             (unsigned long long)pos[QS_AGENTS],
             (unsigned long long)pos[QS_MEMORY]);
    po.metrics = rpc_runtime_metrics(rt);
    if ((rc = qs_projector_start(db, &po, &proj)) != ES_OK) {
        LOG_ERROR("query: cannot start the projector: %s", es_strerror(rc));
        goto out;
    }
    if ((rc = rpc_runtime_run(rt)) == RPC_OK)
        exit_code = 0;
    else
        LOG_ERROR("query: %s", rpc_strerror(rc));
out:
    /* rpc_runtime_run returns once every handler has returned. */
    qs_projector_stop(proj);
    rpc_runtime_destroy(rt);
    qs_grpc_destroy(grpc);
    qs_db_close(db);
    cfg_destroy(c);
    if (grpc_started)
        grpc_shutdown();
    nats_Close();
    if (exit_code == 0)
        LOG_INFO("query: stopped");
    return exit_code;
}

/* agent-manager: the process. Reads its configuration, opens its event
 * store, loads the state, serves AgentManager, EventStore, health and
 * reflection on the runtime, and on SIGTERM drains calls, writes a final
 * snapshot and closes the store. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "eventstore/eventstore.h"
#include "services/agent_manager/agent_manager.h"
#include "services/agent_manager/handlers.h"
#include "services/common/cfg.h"
#include "services/common/log.h"
#include "services/common/runtime.h"
#include "services/eventstore_api/eventstore_api.h"

static const cfg_option options[] = {
    CFG_RUNTIME_OPTIONS("AGENTMESH_AGENTS_", "127.0.0.1:50061",
                        "127.0.0.1:9101", "data/agents"),
    {"heartbeat-timeout", "AGENTMESH_AGENTS_HEARTBEAT_TIMEOUT", CFG_DURATION,
     "30s", "silence after which an agent is recorded OFFLINE"},
    {"max-input-size", "AGENTMESH_AGENTS_MAX_INPUT_SIZE", CFG_SIZE, "256K",
     "largest task input, output or error"},
    {"snapshot-every", "AGENTMESH_AGENTS_SNAPSHOT_EVERY", CFG_INT, "1000",
     "events between state snapshots (0: only at shutdown)"},
    {"no-sync", "AGENTMESH_AGENTS_NO_SYNC", CFG_BOOL, "false",
     "do not fsync commits: faster, but acknowledged events can be lost on "
     "power loss (tests and benchmarks only)"},
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

int main(int argc, char **argv)
{
    cfg *c = NULL;
    rpc_runtime *rt = NULL;
    es_store *store = NULL;
    am_service *svc = NULL;
    am_grpc *grpc = NULL;
    esapi *api = NULL;
    char err[256];
    int exit_code = 1;
    size_t n = sizeof options / sizeof options[0];
    const char *data_dir = NULL;
    int64_t hb_ms = 0, snap_every = 0;
    uint64_t max_input = 0;
    bool no_sync = false;

    int rc = cfg_parse(options, n, argc, argv, &c, err, sizeof err);
    if (rc == CFG_ERR_HELP) {
        cfg_print_help(options, n, argv[0], stdout);
        return 0;
    }
    if (rc != CFG_OK) {
        fprintf(stderr, "%s: %s\n", argv[0], err);
        return 2;
    }
    if (cfg_get_string(c, "data-dir", &data_dir) || !data_dir ||
        cfg_get_duration_ms(c, "heartbeat-timeout", &hb_ms) || hb_ms <= 0 ||
        cfg_get_size(c, "max-input-size", &max_input) || max_input == 0 ||
        max_input > ES_EVENT_SIZE_DEFAULT / 2 ||
        cfg_get_int(c, "snapshot-every", &snap_every) || snap_every < 0 ||
        cfg_get_bool(c, "no-sync", &no_sync)) {
        fprintf(stderr,
                "%s: invalid settings (data-dir must be set, heartbeat-timeout "
                "> 0, max-input-size 1..512K, snapshot-every >= 0)\n",
                argv[0]);
        goto out;
    }
    /* The runtime blocks SIGTERM/SIGINT: create it before any thread. */
    if ((rc = rpc_runtime_create(c, &rt)) != RPC_OK) {
        LOG_ERROR("agent-manager: cannot start: %s", rpc_strerror(rc));
        goto out;
    }
    if (make_dirs(data_dir)) {
        LOG_ERROR("agent-manager: cannot create %s: %s", data_dir,
                  strerror(errno));
        goto out;
    }
    es_options eo;
    es_options_init(&eo);
    if (no_sync)
        eo.flags |= ES_OPT_NOSYNC;
    if ((rc = es_open(data_dir, &eo, &store)) != ES_OK) {
        LOG_ERROR("agent-manager: cannot open the event store in %s: %s",
                  data_dir, es_strerror(rc));
        goto out;
    }
    am_options ao;
    am_options_init(&ao);
    ao.store = store;
    ao.heartbeat_timeout_ms = hb_ms;
    ao.max_input_bytes = (size_t)max_input;
    ao.snapshot_every = (uint64_t)snap_every;
    if ((rc = am_service_create(&ao, &svc)) != ES_OK) {
        LOG_ERROR("agent-manager: cannot load the state: %s", es_strerror(rc));
        goto out;
    }
    rpc_server *srv = rpc_runtime_server(rt);
    if ((rc = am_grpc_register(srv, svc, store, &grpc)) != RPC_OK ||
        (rc = esapi_register(srv, store, "agents", &api)) != RPC_OK) {
        LOG_ERROR("agent-manager: cannot register methods: %s",
                  rpc_strerror(rc));
        goto out;
    }
    if ((rc = rpc_runtime_run(rt)) == RPC_OK)
        exit_code = 0;
    else
        LOG_ERROR("agent-manager: %s", rpc_strerror(rc));
out:
    /* rpc_runtime_run returns once every handler has returned. */
    am_service_destroy(svc);
    rpc_runtime_destroy(rt);
    am_grpc_destroy(grpc);
    esapi_destroy(api);
    es_close(store);
    cfg_destroy(c);
    if (exit_code == 0)
        LOG_INFO("agent-manager: stopped");
    return exit_code;
}

/* agent-manager: the process. Reads its configuration, opens its event
 * store, loads the state, starts the NATS outbox relay, serves AgentManager,
 * EventStore, health and reflection on the runtime, and on SIGTERM drains
 * calls, flushes the outbox, writes a final snapshot and closes the store. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eventstore/eventstore.h"
#include "services/agent_manager/agent_manager.h"
#include "services/agent_manager/handlers.h"
#include "services/bus/bus.h"
#include "services/common/cfg.h"
#include "services/common/log.h"
#include "services/common/runtime.h"
#include "services/eventstore_api/eventstore_api.h"

/* Not const: main() raises the default of worker-threads (see below). */
static cfg_option options[] = {
    CFG_RUNTIME_OPTIONS("AGENTMESH_AGENTS_", "127.0.0.1:50061",
                        "127.0.0.1:9101", "data/agents"),
    {"nats-url", "AGENTMESH_NATS_URL", CFG_STRING, "nats://127.0.0.1:4222",
     "NATS server the outbox publishes every event to (empty: no outbox)"},
    {"heartbeat-timeout", "AGENTMESH_AGENTS_HEARTBEAT_TIMEOUT", CFG_DURATION,
     "30s", "silence after which an agent is recorded OFFLINE"},
    {"max-input-size", "AGENTMESH_AGENTS_MAX_INPUT_SIZE", CFG_SIZE, "256K",
     "largest task input, output or error"},
    {"snapshot-every", "AGENTMESH_AGENTS_SNAPSHOT_EVERY", CFG_INT, "1000",
     "events between state snapshots (0: only at shutdown)"},
    {"max-pending", "AGENTMESH_AGENTS_MAX_PENDING", CFG_INT, "100000",
     "tasks waiting for an agent before submits answer RESOURCE_EXHAUSTED"},
    {"fast-submit", "AGENTMESH_AGENTS_FAST_SUBMIT", CFG_BOOL, "true",
     "decide SubmitTask on the gRPC completion-queue thread and answer it "
     "from the event store's commit (false: on a worker thread, as the "
     "other commands)"},
    {"no-sync", "AGENTMESH_AGENTS_NO_SYNC", CFG_BOOL, "false",
     "do not fsync commits: faster, but acknowledged events can be lost on "
     "power loss (tests and benchmarks only)"},
};

int main(int argc, char **argv)
{
    cfg *c = NULL;
    rpc_runtime *rt = NULL;
    es_store *store = NULL;
    am_service *svc = NULL;
    am_grpc *grpc = NULL;
    esapi *api = NULL;
    bus_outbox *outbox = NULL;
    const char *nats_url = NULL;
    int exit_code = 1;
    size_t n = sizeof options / sizeof options[0];
    const char *data_dir = NULL;
    int64_t hb_ms = 0, snap_every = 0, max_pending = 0;
    uint64_t max_input = 0;
    bool no_sync = false, fast_submit = true;

    /* Every WatchTask and SubscribeAll stream holds a handler thread for its
     * life, so agent-manager defaults to more handler threads than the
     * runtime's 8: a few watchers must not starve the commands. */
    for (size_t i = 0; i < n; i++)
        if (strcmp(options[i].name, "worker-threads") == 0)
            options[i].def = "64";
    int rc = cfg_parse_main(options, n, argc, argv, &c);
    if (rc >= 0)
        return rc;
    if (cfg_get_string(c, "data-dir", &data_dir) || !data_dir ||
        cfg_get_duration_ms(c, "heartbeat-timeout", &hb_ms) || hb_ms <= 0 ||
        cfg_get_size(c, "max-input-size", &max_input) || max_input == 0 ||
        max_input > ES_EVENT_SIZE_DEFAULT / 2 ||
        cfg_get_int(c, "snapshot-every", &snap_every) || snap_every < 0 ||
        cfg_get_int(c, "max-pending", &max_pending) || max_pending < 1 ||
        cfg_get_bool(c, "no-sync", &no_sync) ||
        cfg_get_bool(c, "fast-submit", &fast_submit) ||
        cfg_get_string(c, "nats-url", &nats_url)) {
        fprintf(stderr,
                "%s: invalid settings (data-dir must be set, heartbeat-timeout "
                "> 0, max-input-size 1..512K, snapshot-every >= 0, max-pending >= 1)\n",
                argv[0]);
        goto out;
    }
    /* The runtime blocks SIGTERM/SIGINT: create it before any thread. */
    if ((rc = rpc_runtime_create(c, &rt)) != RPC_OK) {
        LOG_ERROR("agent-manager: cannot start: %s", rpc_strerror(rc));
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
    ao.max_pending = (size_t)max_pending;
    ao.metrics = rpc_runtime_metrics(rt);
    if ((rc = am_service_create(&ao, &svc)) != ES_OK) {
        LOG_ERROR("agent-manager: cannot load the state: %s", es_strerror(rc));
        goto out;
    }
    if (nats_url && *nats_url) {
        bus_outbox_options bo;
        bus_outbox_options_init(&bo);
        bo.nats_url = nats_url;
        bo.service = "agents";
        bo.metrics = rpc_runtime_metrics(rt);
        if ((rc = bus_outbox_start(store, &bo, &outbox)) != BUS_OK) {
            LOG_ERROR("agent-manager: cannot start the outbox: %s",
                      bus_strerror(rc));
            goto out;
        }
    }
    rpc_server *srv = rpc_runtime_server(rt);
    if ((rc = am_grpc_register(srv, svc, store, fast_submit, &grpc)) != RPC_OK ||
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
    /* rpc_runtime_run returns once every handler has returned. Publishing
     * what is committed gets a moment while NATS is reachable; the rest goes
     * out from the checkpoint at the next start. */
    am_service_destroy(svc);
    if (outbox) {
        bus_outbox_stats st = {0};
        bool up = bus_outbox_stats_get(outbox, &st) == BUS_OK && st.connected;
        if (!up)
            LOG_WARN("agent-manager: NATS unreachable; %llu events wait in "
                     "the log for the next start",
                     (unsigned long long)(st.last_position - st.checkpoint));
        bus_outbox_stop(outbox, up ? 2000 : 0);
    }
    rpc_runtime_destroy(rt);
    am_grpc_destroy(grpc);
    esapi_destroy(api);
    es_close(store);
    cfg_destroy(c);
    if (exit_code == 0)
        LOG_INFO("agent-manager: stopped");
    return exit_code;
}

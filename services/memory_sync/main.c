/* memory-sync: the process. Reads its configuration, opens its event store,
 * serves MemorySync, EventStore (source "memory"), health and reflection on
 * the runtime, relays its events to NATS through the outbox (values removed),
 * and on SIGTERM drains calls, flushes the outbox and closes the store. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "eventstore/eventstore.h"
#include "services/bus/bus.h"
#include "services/common/cfg.h"
#include "services/common/log.h"
#include "services/common/runtime.h"
#include "services/eventstore_api/eventstore_api.h"
#include "services/memory_sync/handlers.h"
#include "services/memory_sync/memory_sync.h"

static const cfg_option options[] = {
    CFG_RUNTIME_OPTIONS("AGENTMESH_MEMORY_", "127.0.0.1:50062",
                        "127.0.0.1:9102", "data/memory"),
    {"nats-url", "AGENTMESH_NATS_URL", CFG_STRING, "nats://127.0.0.1:4222",
     "NATS server the outbox publishes events to (empty: no publication)"},
    {"jetstream", "AGENTMESH_JETSTREAM", CFG_BOOL, "true",
     "publish through JetStream with acknowledgements (stream AGENTMESH)"},
    {"outbox-flush", "AGENTMESH_MEMORY_OUTBOX_FLUSH", CFG_DURATION, "5s",
     "time the outbox gets at shutdown to publish what is committed"},
    {"max-value-size", "AGENTMESH_MEMORY_MAX_VALUE_SIZE", CFG_SIZE, "256K",
     "largest memory value (at most 768K)"},
    {"strategy", "AGENTMESH_MEMORY_STRATEGY", CFG_STRING, "",
     "conflict strategies per namespace glob: "
     "PATTERN=STRATEGY[,order=R1|R2][;...] with STRATEGY one of "
     "LAST_WRITER_WINS, SOURCE_PRIORITY, KEEP_BOTH"},
    {"replica-id", "AGENTMESH_MEMORY_REPLICA_ID", CFG_STRING, "server",
     "replica id recorded for PutMemory/DeleteMemory without one"},
    {"max-clock-skew", "AGENTMESH_MEMORY_MAX_CLOCK_SKEW", CFG_DURATION, "5m",
     "how far a client hlc may run ahead of the server's clock"},
    {"no-sync", "AGENTMESH_MEMORY_NO_SYNC", CFG_BOOL, "false",
     "do not fsync commits: faster, but acknowledged events can be lost on "
     "power loss (tests and benchmarks only)"},
};

int main(int argc, char **argv)
{
    cfg *c = NULL;
    rpc_runtime *rt = NULL;
    es_store *store = NULL;
    ms_service *svc = NULL;
    ms_grpc *grpc = NULL;
    esapi *api = NULL;
    ms_rules *rules = NULL;
    bus_outbox *ob = NULL;
    char err[256];
    int exit_code = 1;
    size_t n = sizeof options / sizeof options[0];
    const char *data_dir = NULL, *nats_url = NULL, *strategy = NULL,
               *replica = NULL;
    int64_t flush_ms = 0, skew_ms = 0;
    uint64_t max_value = 0;
    bool no_sync = false, jetstream = true;

    int rc = cfg_parse_main(options, n, argc, argv, &c);
    if (rc >= 0)
        return rc;
    if (cfg_get_string(c, "data-dir", &data_dir) || !data_dir ||
        cfg_get_string(c, "nats-url", &nats_url) ||
        cfg_get_bool(c, "jetstream", &jetstream) ||
        cfg_get_duration_ms(c, "outbox-flush", &flush_ms) || flush_ms < 0 ||
        cfg_get_size(c, "max-value-size", &max_value) || max_value == 0 ||
        max_value > MS_VALUE_HARD_MAX ||
        cfg_get_string(c, "strategy", &strategy) ||
        cfg_get_string(c, "replica-id", &replica) || !replica ||
        strlen(replica) > MS_REPLICA_MAX ||
        cfg_get_duration_ms(c, "max-clock-skew", &skew_ms) || skew_ms <= 0 ||
        cfg_get_bool(c, "no-sync", &no_sync)) {
        fprintf(stderr,
                "%s: invalid settings (data-dir must be set, max-value-size "
                "1..768K, outbox-flush >= 0, max-clock-skew > 0, replica-id "
                "at most %d bytes)\n",
                argv[0], MS_REPLICA_MAX);
        return 2;
    }
    if ((rc = ms_rules_parse(strategy, &rules, err, sizeof err))) {
        fprintf(stderr, "%s: --strategy: %s\n", argv[0],
                rc == -2 ? err : "out of memory");
        return 2;
    }
    /* The runtime blocks SIGTERM/SIGINT: create it before any thread. */
    if ((rc = rpc_runtime_create(c, &rt)) != RPC_OK) {
        LOG_ERROR("memory-sync: cannot start: %s", rpc_strerror(rc));
        goto out;
    }
    es_options eo;
    es_options_init(&eo);
    if (no_sync)
        eo.flags |= ES_OPT_NOSYNC;
    if ((rc = es_open(data_dir, &eo, &store)) != ES_OK) {
        LOG_ERROR("memory-sync: cannot open the event store in %s: %s",
                  data_dir, es_strerror(rc));
        goto out;
    }
    ms_options mo;
    ms_options_init(&mo);
    mo.store = store;
    mo.max_value_bytes = (size_t)max_value;
    mo.replica_id = replica;
    mo.rules = rules;
    mo.max_clock_skew_ms = skew_ms;
    mo.key_dir = data_dir;
    if ((rc = ms_service_create(&mo, &svc)) != ES_OK) {
        LOG_ERROR("memory-sync: cannot start the service: %s%s", es_strerror(rc),
                  rc == ES_BAD_KEY ? " (the master key file memory-master-<generation>.key "
                                     "is missing from the data directory)"
                                   : "");
        goto out;
    }
    rpc_server *srv = rpc_runtime_server(rt);
    if ((rc = ms_grpc_register(srv, svc, store, &grpc)) != RPC_OK ||
        (rc = esapi_register(srv, store, "memory", &api)) != RPC_OK) {
        LOG_ERROR("memory-sync: cannot register methods: %s",
                  rpc_strerror(rc));
        goto out;
    }
    if (nats_url && *nats_url) {
        bus_outbox_options bo;
        bus_outbox_options_init(&bo);
        bo.nats_url = nats_url;
        bo.service = "memory";
        bo.jetstream = jetstream;
        bo.payload_hook = ms_payload_hook;
        bo.metrics = rpc_runtime_metrics(rt);
        if ((rc = bus_outbox_start(store, &bo, &ob)) != BUS_OK) {
            LOG_ERROR("memory-sync: cannot start the outbox: %s",
                      bus_strerror(rc));
            goto out;
        }
    }
    if ((rc = rpc_runtime_run(rt)) == RPC_OK)
        exit_code = 0;
    else
        LOG_ERROR("memory-sync: %s", rpc_strerror(rc));
out:
    /* rpc_runtime_run returns once every handler has returned: the outbox
     * then gets its flush time for what the last calls committed. */
    bus_outbox_stop(ob, flush_ms);
    rpc_runtime_destroy(rt);
    ms_grpc_destroy(grpc);
    esapi_destroy(api);
    ms_service_destroy(svc);
    es_close(store);
    ms_rules_free(rules);
    cfg_destroy(c);
    if (exit_code == 0)
        LOG_INFO("memory-sync: stopped");
    return exit_code;
}

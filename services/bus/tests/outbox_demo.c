/*
 * outbox_demo: a test driver for the outbox relay against a real
 * nats-server. It opens an event store, starts the relay, appends events
 * (task and agent payloads of the real API, optionally one of an unknown
 * type), and with --wait waits until everything is published; it prints one
 * JSON line of statistics. Tests kill it, and nats-server, at will.
 *
 * usage: outbox_demo --data DIR --nats URL [--events N] [--batch K]
 *        [--unknown-at POS] [--core] [--wait SECONDS] [--pace-us US]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include <nats/nats.h>

#include "agentmesh/v1/events.pb-c.h"
#include "services/bus/bus.h"

static void usage(void)
{
    fprintf(stderr, "usage: outbox_demo --data DIR --nats URL [--events N] [--batch K] "
                    "[--unknown-at N] [--core] [--wait SECONDS] [--pace-us US]\n");
    exit(2);
}

static int append_one(es_store *st, uint64_t n, uint64_t unknown_at)
{
    char stream[64], task_id[48], input[64];
    uint8_t buf[512];
    es_event_data ev;
    memset(&ev, 0, sizeof(ev));
    RAND_bytes(ev.id, sizeof(ev.id));
    snprintf(task_id, sizeof(task_id), "t%llu", (unsigned long long)(n / 3));
    snprintf(input, sizeof(input), "{\"n\":%llu}", (unsigned long long)n);
    ev.meta.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    ev.meta.actor = "outbox-demo";
    ev.content_type = "application/x-protobuf";
    if (n == unknown_at) {
        snprintf(stream, sizeof(stream), "task-%s", task_id);
        ev.type = "agentmesh.v1.NoSuchEvent";
        ev.data = "x";
        ev.data_len = 1;
    } else if (n % 5 == 4) {
        Agentmesh__V1__AgentWentOnline p = AGENTMESH__V1__AGENT_WENT_ONLINE__INIT;
        snprintf(stream, sizeof(stream), "agent-a%llu", (unsigned long long)(n % 7));
        p.agent_id = stream + 6;
        p.at_unix_nano = (int64_t)n;
        ev.type = "agentmesh.v1.AgentWentOnline";
        ev.data_len = agentmesh__v1__agent_went_online__pack(&p, buf);
        ev.data = buf;
    } else {
        Agentmesh__V1__TaskSubmitted p = AGENTMESH__V1__TASK_SUBMITTED__INIT;
        snprintf(stream, sizeof(stream), "task-%s", task_id);
        p.task_id = task_id;
        p.input = input;
        p.priority = (int32_t)(n % 3);
        ev.type = "agentmesh.v1.TaskSubmitted";
        ev.data_len = agentmesh__v1__task_submitted__pack(&p, buf);
        ev.data = buf;
    }
    es_append_result r;
    int rc = es_append(st, stream, ES_EXPECT_ANY, &ev, 1, &r);
    if (rc != ES_OK) {
        fprintf(stderr, "outbox_demo: append: %s\n", es_strerror(rc));
        return -1;
    }
    /* One line per acknowledged append: the test knows what must arrive. */
    printf("{\"appended\":%llu}\n", (unsigned long long)r.last_position);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    const char *data = NULL, *nats = NULL;
    uint64_t events = 0, unknown_at = 0;
    long wait_s = 0, pace_us = 0;
    bool core = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--core") == 0) {
            core = true;
            continue;
        }
        if (i + 1 >= argc)
            usage();
        if (strcmp(argv[i], "--data") == 0)
            data = argv[++i];
        else if (strcmp(argv[i], "--nats") == 0)
            nats = argv[++i];
        else if (strcmp(argv[i], "--events") == 0)
            events = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--unknown-at") == 0)
            unknown_at = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--wait") == 0)
            wait_s = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--pace-us") == 0)
            pace_us = strtol(argv[++i], NULL, 10);
        else
            usage();
    }
    if (data == NULL || nats == NULL)
        usage();

    es_options eo;
    es_options_init(&eo);
    es_store *st = NULL;
    int rc = es_open(data, &eo, &st);
    if (rc != ES_OK) {
        fprintf(stderr, "outbox_demo: open %s: %s\n", data, es_strerror(rc));
        return 1;
    }
    bus_outbox_options bo;
    bus_outbox_options_init(&bo);
    bo.nats_url = nats;
    bo.service = "test";
    bo.jetstream = !core;
    bo.ack_wait_ms = 2000;
    bo.retry_max_ms = 500;
    bus_outbox *ob = NULL;
    rc = bus_outbox_start(st, &bo, &ob);
    if (rc != BUS_OK) {
        fprintf(stderr, "outbox_demo: outbox: %s\n", bus_strerror(rc));
        es_close(st);
        return 1;
    }
    es_stats s0, s1;
    es_stats_get(st, &s0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (uint64_t n = s0.last_position + 1; n <= s0.last_position + events; n++) {
        if (append_one(st, n, unknown_at) != 0)
            break;
        if (pace_us > 0)
            usleep((useconds_t)pace_us);
    }
    bus_outbox_stats bs = {0};
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        bus_outbox_stats_get(ob, &bs);
        if (bs.checkpoint >= bs.last_position)
            break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec >= wait_s)
            break;
        usleep(20000);
    }
    bus_outbox_stop(ob, 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    es_stats_get(st, &s1);
    /* commits: write transactions since the first append (the appends' and
     * the checkpoint's); elapsed_ms: from the first append to the stop. */
    printf("{\"checkpoint\":%llu,\"last_position\":%llu,\"published\":%llu,\"dead_lettered\":%llu,"
           "\"commits\":%llu,\"elapsed_ms\":%lld}\n",
           (unsigned long long)bs.checkpoint, (unsigned long long)bs.last_position,
           (unsigned long long)bs.published, (unsigned long long)bs.dead_lettered,
           (unsigned long long)(s1.commits - s0.commits),
           (long long)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000));
    es_close(st);
    nats_Close(); /* the library's global threads and memory */
    return bs.checkpoint >= bs.last_position ? 0 : 3;
}

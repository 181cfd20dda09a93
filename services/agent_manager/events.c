/* Building the agent manager's events: packed agentmesh.v1 payloads, ids
 * (random, or derived for idempotent retries), metadata, and the UUIDs and
 * traceparents that metadata carries. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "services/agent_manager/internal.h"

#define CONTENT_TYPE "application/x-protobuf"

/* Random bytes for ids and trace ids (never for keys or nonces), taken from
 * a per-thread block of RAND_bytes output. Each RAND_bytes call re-keys the
 * generator, which cost more than the 16 or 24 bytes an id needs: one call
 * per block serves about 20 ids. A byte is handed out once: the block is
 * refilled, never rewound. The services do not fork, so no copy of a block
 * outlives its thread. */
#define RANDOM_BLOCK 512

static int random_ids(uint8_t *out, size_t n)
{
    static _Thread_local uint8_t block[RANDOM_BLOCK];
    static _Thread_local size_t used = RANDOM_BLOCK;
    if (n > RANDOM_BLOCK)
        return RAND_bytes(out, (int)n) == 1 ? 0 : -1;
    if (used + n > RANDOM_BLOCK) {
        if (RAND_bytes(block, RANDOM_BLOCK) != 1)
            return -1;
        used = 0;
    }
    memcpy(out, block + used, n);
    used += n;
    return 0;
}

/* A UUIDv7 (RFC 9562): 48 bits of unix milliseconds, then random bits.
 * Time-ordered ids keep the store's event-id index inserts at the right edge
 * of its B-tree instead of a random leaf per event. */
static int uuid7(uint8_t id[16])
{
    struct timespec ts;
    if (random_ids(id, 16))
        return -1;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    for (int i = 0; i < 6; i++)
        id[i] = (uint8_t)(ms >> (40 - 8 * i));
    id[6] = (uint8_t)((id[6] & 0x0f) | 0x70);
    id[8] = (uint8_t)((id[8] & 0x3f) | 0x80);
    return 0;
}

int am_events_add(am_events *b, const char *type,
                  const ProtobufCMessage *payload, const am_ctx *ctx,
                  const uint8_t *det_id)
{
    if (b->n >= AM_OP_EVENTS)
        return -1;
    size_t len = protobuf_c_message_get_packed_size(payload);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return -1;
    protobuf_c_message_pack(payload, buf);
    es_event_data *e = &b->ev[b->n];
    memset(e, 0, sizeof *e);
    if (det_id)
        memcpy(e->id, det_id, ES_ID_SIZE);
    else if (uuid7(e->id)) {
        free(buf);
        return -1;
    }
    e->type = type;
    e->content_type = CONTENT_TYPE;
    e->data = buf;
    e->data_len = len;
    if (ctx) {
        e->meta.actor = ctx->actor;
        e->meta.correlation_id = ctx->correlation_id;
        e->meta.causation_id = ctx->causation_id;
        e->meta.traceparent = ctx->traceparent;
    }
    b->buf[b->n++] = buf;
    return 0;
}

void am_events_free(am_events *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->buf[i]);
    memset(b, 0, sizeof *b);
}

static void hex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

void am_uuid_format(const uint8_t id[16], char *out)
{
    /* 8-4-4-4-12 */
    static const size_t groups[] = {4, 2, 2, 2, 6};
    size_t at = 0;
    for (size_t g = 0; g < 5; g++) {
        hex(id + at, groups[g], out);
        out += 2 * groups[g];
        at += groups[g];
        if (g < 4)
            *out++ = '-';
    }
    *out = '\0';
}

int am_uuid_new(char *out)
{
    uint8_t id[16];
    /* Time-ordered too: generated task and agent ids name streams, and
     * ordered names keep the store's stream indexes growing at one edge. */
    if (uuid7(id))
        return -1;
    am_uuid_format(id, out);
    return 0;
}

int am_traceparent_new(char *out)
{
    uint8_t r[24];
    char t[33], sp[17];
    if (random_ids(r, sizeof r))
        return -1;
    hex(r, 16, t);
    hex(r + 16, 8, sp);
    snprintf(out, 56, "00-%s-%s-01", t, sp);
    return 0;
}

void am_ctx_followup(am_ctx_buf *b, const am_ctx *parent, const uint8_t *cause)
{
    memset(b, 0, sizeof *b);
    if (parent && parent->correlation_id)
        snprintf(b->correlation, sizeof b->correlation, "%s",
                 parent->correlation_id);
    else if (am_uuid_new(b->correlation))
        b->correlation[0] = '\0';
    if (cause)
        am_uuid_format(cause, b->causation);
    if (parent && parent->traceparent)
        snprintf(b->traceparent, sizeof b->traceparent, "%s",
                 parent->traceparent);
    else if (am_traceparent_new(b->traceparent))
        b->traceparent[0] = '\0';
    snprintf(b->actor, sizeof b->actor, "%s",
             parent && parent->actor ? parent->actor : "agent-manager");
    b->ctx.actor = b->actor;
    b->ctx.correlation_id = b->correlation;
    b->ctx.causation_id = b->causation;
    b->ctx.traceparent = b->traceparent;
}

int64_t am_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t am_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int am_fail(am_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

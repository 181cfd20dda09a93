/* Structured JSON log lines (see log.h). jansson builds and escapes each line;
 * one write(2) per line keeps concurrent lines whole. */
#include "services/common/log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

static atomic_int min_level = LOG_LEVEL_INFO;
static atomic_int out_fd = 2;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(log_level level)
{
    atomic_store(&min_level, (int)level);
}

void log_set_fd(int fd)
{
    atomic_store(&out_fd, fd);
}

bool log_enabled(log_level level)
{
    return (int)level >= atomic_load(&min_level);
}

int log_level_parse(const char *text, log_level *out)
{
    if (text == NULL)
        return -1;
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcasecmp(text, level_names[i]) == 0) {
            *out = (log_level)i;
            return 0;
        }
    }
    if (strcasecmp(text, "warning") == 0) {
        *out = LOG_LEVEL_WARN;
        return 0;
    }
    return -1;
}

static int is_hex_run(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
    }
    return 1;
}

int log_ctx_from_traceparent(const char *tp, char buf[50], log_ctx *ctx)
{
    /* version(2) - trace(32) - span(16) - flags(2) */
    if (tp == NULL || strlen(tp) < 55 || tp[2] != '-' || tp[35] != '-' ||
        tp[52] != '-' || !is_hex_run(tp, 2) || !is_hex_run(tp + 3, 32) ||
        !is_hex_run(tp + 36, 16) || !is_hex_run(tp + 53, 2))
        return -1;
    memcpy(buf, tp + 3, 32);
    buf[32] = '\0';
    memcpy(buf + 33, tp + 36, 16);
    buf[49] = '\0';
    ctx->trace_id = buf;
    ctx->span_id = buf + 33;
    return 0;
}

static void format_time(char *buf, size_t len)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000);
}

static int formatv(log_level level, const log_ctx *ctx, const char *const *kv,
                   char **out, const char *fmt, va_list ap)
{
    int rc = -1;
    json_t *obj = NULL;
    char *msg = NULL;
    char *text = NULL;
    char tbuf[96];

    if (vasprintf(&msg, fmt, ap) < 0) {
        msg = NULL;
        goto out;
    }
    obj = json_object();
    if (obj == NULL)
        goto out;
    format_time(tbuf, sizeof tbuf);
    if ((unsigned)level > LOG_LEVEL_ERROR)
        level = LOG_LEVEL_ERROR;
    /* json_stringn keeps invalid UTF-8 out of the line: it fails, and the
     * message is then escaped byte by byte below. */
    if (json_object_set_new(obj, "time", json_string(tbuf)) != 0 ||
        json_object_set_new(obj, "level", json_string(level_names[level])) != 0)
        goto out;
    json_t *m = json_string(msg);
    if (m == NULL) {
        for (char *p = msg; *p; p++)
            if ((unsigned char)*p >= 0x80)
                *p = '?';
        m = json_string(msg);
    }
    if (m == NULL || json_object_set_new(obj, "msg", m) != 0)
        goto out;
    if (ctx != NULL && ctx->trace_id != NULL &&
        json_object_set_new(obj, "trace_id", json_string(ctx->trace_id)) != 0)
        goto out;
    if (ctx != NULL && ctx->span_id != NULL &&
        json_object_set_new(obj, "span_id", json_string(ctx->span_id)) != 0)
        goto out;
    for (size_t i = 0; kv != NULL && kv[i] != NULL && kv[i + 1] != NULL; i += 2) {
        json_t *v = json_string(kv[i + 1]);
        if (v == NULL)
            v = json_string("(invalid utf-8)");
        if (json_object_set_new(obj, kv[i], v) != 0)
            goto out;
    }
    text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (text == NULL)
        goto out;
    size_t n = strlen(text);
    char *line = realloc(text, n + 2);
    if (line == NULL)
        goto out;
    text = line;
    text[n] = '\n';
    text[n + 1] = '\0';
    *out = text;
    text = NULL;
    rc = 0;
out:
    free(text);
    free(msg);
    json_decref(obj);
    return rc;
}

int log_format(log_level level, const log_ctx *ctx, const char *const *kv,
               char **out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = formatv(level, ctx, kv, out, fmt, ap);
    va_end(ap);
    return rc;
}

void log_emitv(log_level level, const log_ctx *ctx, const char *const *kv,
               const char *fmt, va_list ap)
{
    char *line = NULL;
    if ((int)level < atomic_load(&min_level))
        return;
    if (formatv(level, ctx, kv, &line, fmt, ap) != 0)
        return;
    size_t len = strlen(line);
    size_t off = 0;
    int fd = atomic_load(&out_fd);
    while (off < len) {
        ssize_t w = write(fd, line + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    free(line);
}

void log_emit(log_level level, const log_ctx *ctx, const char *const *kv,
              const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_emitv(level, ctx, kv, fmt, ap);
    va_end(ap);
}

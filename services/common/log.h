/* Structured logging: one JSON object per line on stderr, with time (RFC 3339
 * UTC, microseconds), level, msg, trace_id/span_id when known, and extra
 * string fields. Lines are written with one write(2), so concurrent writers
 * never interleave. All calls are thread-safe. */
#ifndef AGENTMESH_SERVICES_COMMON_LOG_H
#define AGENTMESH_SERVICES_COMMON_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum log_level {
    LOG_LEVEL_DEBUG = 0,
    LOG_LEVEL_INFO = 1,
    LOG_LEVEL_WARN = 2,
    LOG_LEVEL_ERROR = 3
} log_level;

/* Trace context of a line; plain data, any field may be NULL. */
typedef struct log_ctx {
    const char *trace_id; /* 32 lower-case hex digits */
    const char *span_id;  /* 16 lower-case hex digits */
} log_ctx;

/* Fills ctx with the trace and parent-span ids of a W3C traceparent
 * ("00-<trace>-<span>-<flags>"), pointing into `buf` (33 + 17 bytes) that the
 * caller keeps alive. Returns 0, or -1 (ctx untouched) when malformed. */
int log_ctx_from_traceparent(const char *traceparent, char buf[50],
                             log_ctx *ctx);

/* Lines below `level` are dropped (default INFO). */
void log_set_level(log_level level);
/* Whether lines of `level` are written (to skip building costly fields). */
bool log_enabled(log_level level);
/* Parses "debug", "info", "warn", "error". Returns 0, or -1 when unknown. */
int log_level_parse(const char *text, log_level *out);
/* Where lines go (default 2 = stderr). */
void log_set_fd(int fd);

/* Formats one line (without writing it): `kv` is a NULL-terminated list of
 * key, value strings (may be NULL). *out is NUL-terminated, ends in '\n', and
 * is freed by the caller with free(). Returns 0, or -1 out of memory. */
int log_format(log_level level, const log_ctx *ctx, const char *const *kv,
               char **out, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Writes one line; never fails visibly (a line that cannot be built is
 * dropped). */
void log_emit(log_level level, const log_ctx *ctx, const char *const *kv,
              const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void log_emitv(log_level level, const log_ctx *ctx, const char *const *kv,
               const char *fmt, va_list ap);

#define LOG_DEBUG(...) log_emit(LOG_LEVEL_DEBUG, NULL, NULL, __VA_ARGS__)
#define LOG_INFO(...) log_emit(LOG_LEVEL_INFO, NULL, NULL, __VA_ARGS__)
#define LOG_WARN(...) log_emit(LOG_LEVEL_WARN, NULL, NULL, __VA_ARGS__)
#define LOG_ERROR(...) log_emit(LOG_LEVEL_ERROR, NULL, NULL, __VA_ARGS__)

#ifdef __cplusplus
}
#endif

#endif

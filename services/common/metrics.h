/* Process metrics: counters, gauges and histograms with labels, rendered in the
 * Prometheus text exposition format (version 0.0.4) for GET /metrics.
 *
 * Thread-safety: every call is thread-safe once the registry exists; each
 * metric family has its own mutex. Families live as long as their registry. */
#ifndef AGENTMESH_SERVICES_COMMON_METRICS_H
#define AGENTMESH_SERVICES_COMMON_METRICS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define METRICS_ERRORS(X)                                                      \
    X(METRICS_OK, 0, "success")                                                \
    X(METRICS_ERR_NOMEM, 1, "out of memory")                                   \
    X(METRICS_ERR_INVALID, 2, "invalid argument")                              \
    X(METRICS_ERR_EXISTS, 3, "metric already registered with another type")   \
    X(METRICS_ERR_LIMIT, 4, "too many label combinations")

typedef enum metrics_err {
#define METRICS_ERR_ENUM_(name, value, text) name = value,
    METRICS_ERRORS(METRICS_ERR_ENUM_)
#undef METRICS_ERR_ENUM_
} metrics_err;

/* A static text for a metrics_err value; never NULL. */
const char *metrics_strerror(int err);

/* Most label combinations (children) one family keeps; more answer LIMIT. */
#define METRICS_MAX_CHILDREN 2048
/* Most labels per family. */
#define METRICS_MAX_LABELS 8

typedef struct metrics_registry metrics_registry;
/* A metric family (name, help, type, label names). Owned by its registry. */
typedef struct metrics_family metrics_family;

int metrics_registry_create(metrics_registry **out);
/* Frees the registry and all its families; NULL is a no-op. Nothing may use
 * the registry or its families concurrently. */
void metrics_registry_destroy(metrics_registry *reg);

/* Creates (or returns the existing family of the same name and type) a
 * counter, gauge or histogram. `name` must match [a-zA-Z_:][a-zA-Z0-9_:]*;
 * `labels` holds nlabels label names (copied). Histogram `bounds` are nbounds
 * strictly increasing upper bounds (copied; NULL = the default latency buckets
 * in seconds, 0.0005 .. 10). *out is borrowed until the registry is
 * destroyed. Errors: INVALID, EXISTS (same name, other type or labels),
 * NOMEM. */
int metrics_counter_create(metrics_registry *reg, const char *name,
                           const char *help, const char *const *labels,
                           size_t nlabels, metrics_family **out);
int metrics_gauge_create(metrics_registry *reg, const char *name,
                         const char *help, const char *const *labels,
                         size_t nlabels, metrics_family **out);
int metrics_histogram_create(metrics_registry *reg, const char *name,
                             const char *help, const char *const *labels,
                             size_t nlabels, const double *bounds,
                             size_t nbounds, metrics_family **out);

/* Updates the child with the given label values (as many as the family has
 * labels; NULL when it has none; copied on first use). Counters only go up
 * (INVALID for v < 0). Errors: INVALID (wrong type), LIMIT, NOMEM. */
int metrics_counter_add(metrics_family *f, const char *const *values,
                        double v);
int metrics_gauge_set(metrics_family *f, const char *const *values, double v);
int metrics_gauge_add(metrics_family *f, const char *const *values, double v);
int metrics_histogram_observe(metrics_family *f, const char *const *values,
                              double v);

/* Reads a counter or gauge child's value, or a histogram child's count.
 * Errors: INVALID; a child never updated reads 0. */
int metrics_value(metrics_family *f, const char *const *values, double *out);

/* Renders every family in the text exposition format. *out is
 * NUL-terminated and freed by the caller with free(). NOMEM. */
int metrics_registry_render(metrics_registry *reg, char **out, size_t *len);

#ifdef __cplusplus
}
#endif

#endif

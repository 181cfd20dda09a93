/* Metric families with labelled children and their Prometheus text rendering
 * (see metrics.h). Each family has a mutex; children are a small array found
 * by linear search, which is fast for the few label combinations a process
 * has and bounded by METRICS_MAX_CHILDREN. */
#include "services/common/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM } kind;

struct child {
    char **values;
    double value;      /* counter, gauge; histogram sum */
    uint64_t count;    /* histogram */
    uint64_t *buckets; /* histogram, non-cumulative, nbounds + 1 */
};

struct metrics_family {
    struct metrics_family *next;
    kind kind;
    char *name;
    char *help;
    char *labels[METRICS_MAX_LABELS];
    size_t nlabels;
    double *bounds;
    size_t nbounds;
    pthread_mutex_t mu;
    struct child *children;
    size_t nchildren, capchildren;
};

struct metrics_registry {
    pthread_mutex_t mu;
    metrics_family *head, *tail;
};

static const double default_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                        0.025,  0.05,  0.1,    0.25,  0.5,
                                        1,      2.5,   5,      10};

const char *metrics_strerror(int err)
{
    switch (err) {
#define METRICS_ERR_CASE_(name, value, text) \
    case value:                              \
        return text;
        METRICS_ERRORS(METRICS_ERR_CASE_)
#undef METRICS_ERR_CASE_
    }
    return "unknown metrics error";
}

int metrics_registry_create(metrics_registry **out)
{
    metrics_registry *r = calloc(1, sizeof *r);
    if (r == NULL)
        return METRICS_ERR_NOMEM;
    pthread_mutex_init(&r->mu, NULL);
    *out = r;
    return METRICS_OK;
}

static void family_free(metrics_family *f)
{
    if (f == NULL)
        return;
    for (size_t i = 0; i < f->nchildren; i++) {
        for (size_t j = 0; j < f->nlabels; j++)
            free(f->children[i].values[j]);
        free(f->children[i].values);
        free(f->children[i].buckets);
    }
    free(f->children);
    for (size_t j = 0; j < f->nlabels; j++)
        free(f->labels[j]);
    free(f->name);
    free(f->help);
    free(f->bounds);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

void metrics_registry_destroy(metrics_registry *reg)
{
    if (reg == NULL)
        return;
    metrics_family *f = reg->head;
    while (f != NULL) {
        metrics_family *next = f->next;
        family_free(f);
        f = next;
    }
    pthread_mutex_destroy(&reg->mu);
    free(reg);
}

static bool valid_name(const char *s, bool allow_colon)
{
    if (s == NULL || s[0] == '\0')
        return false;
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (allow_colon && c == ':') || (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

static bool same_shape(const metrics_family *f, kind k,
                       const char *const *labels, size_t nlabels)
{
    if (f->kind != k || f->nlabels != nlabels)
        return false;
    for (size_t i = 0; i < nlabels; i++)
        if (strcmp(f->labels[i], labels[i]) != 0)
            return false;
    return true;
}

static int family_create(metrics_registry *reg, kind k, const char *name,
                         const char *help, const char *const *labels,
                         size_t nlabels, const double *bounds, size_t nbounds,
                         metrics_family **out)
{
    int rc = METRICS_ERR_NOMEM;
    metrics_family *f = NULL;

    if (reg == NULL || out == NULL || !valid_name(name, true) ||
        nlabels > METRICS_MAX_LABELS || (nlabels > 0 && labels == NULL))
        return METRICS_ERR_INVALID;
    for (size_t i = 0; i < nlabels; i++)
        if (!valid_name(labels[i], false) || strncmp(labels[i], "__", 2) == 0 ||
            (k == KIND_HISTOGRAM && strcmp(labels[i], "le") == 0))
            return METRICS_ERR_INVALID;
    if (k == KIND_HISTOGRAM && bounds == NULL) {
        bounds = default_bounds;
        nbounds = sizeof default_bounds / sizeof default_bounds[0];
    }
    for (size_t i = 0; k == KIND_HISTOGRAM && i < nbounds; i++)
        if (!isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
            return METRICS_ERR_INVALID;

    pthread_mutex_lock(&reg->mu);
    for (metrics_family *e = reg->head; e != NULL; e = e->next) {
        if (strcmp(e->name, name) == 0) {
            rc = same_shape(e, k, labels, nlabels) ? METRICS_OK
                                                   : METRICS_ERR_EXISTS;
            if (rc == METRICS_OK)
                *out = e;
            goto out;
        }
    }
    f = calloc(1, sizeof *f);
    if (f == NULL)
        goto out;
    pthread_mutex_init(&f->mu, NULL);
    f->kind = k;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    if (f->name == NULL || f->help == NULL)
        goto out;
    for (size_t i = 0; i < nlabels; i++) {
        f->labels[i] = strdup(labels[i]);
        if (f->labels[i] == NULL)
            goto out;
        f->nlabels = i + 1;
    }
    if (k == KIND_HISTOGRAM && nbounds > 0) {
        f->bounds = malloc(nbounds * sizeof *f->bounds);
        if (f->bounds == NULL)
            goto out;
        memcpy(f->bounds, bounds, nbounds * sizeof *f->bounds);
        f->nbounds = nbounds;
    }
    if (reg->tail != NULL)
        reg->tail->next = f;
    else
        reg->head = f;
    reg->tail = f;
    *out = f;
    f = NULL;
    rc = METRICS_OK;
out:
    pthread_mutex_unlock(&reg->mu);
    family_free(f);
    return rc;
}

int metrics_counter_create(metrics_registry *reg, const char *name,
                           const char *help, const char *const *labels,
                           size_t nlabels, metrics_family **out)
{
    return family_create(reg, KIND_COUNTER, name, help, labels, nlabels, NULL,
                         0, out);
}

int metrics_gauge_create(metrics_registry *reg, const char *name,
                         const char *help, const char *const *labels,
                         size_t nlabels, metrics_family **out)
{
    return family_create(reg, KIND_GAUGE, name, help, labels, nlabels, NULL, 0,
                         out);
}

int metrics_histogram_create(metrics_registry *reg, const char *name,
                             const char *help, const char *const *labels,
                             size_t nlabels, const double *bounds,
                             size_t nbounds, metrics_family **out)
{
    return family_create(reg, KIND_HISTOGRAM, name, help, labels, nlabels,
                         bounds, nbounds, out);
}

/* Finds or adds the child for `values`; called with f->mu held. */
static int child_get(metrics_family *f, const char *const *values,
                     bool create, struct child **out)
{
    if (f->nlabels > 0 && values == NULL)
        return METRICS_ERR_INVALID;
    for (size_t i = 0; i < f->nlabels; i++)
        if (values[i] == NULL)
            return METRICS_ERR_INVALID;
    for (size_t i = 0; i < f->nchildren; i++) {
        size_t j = 0;
        while (j < f->nlabels && strcmp(f->children[i].values[j], values[j]) == 0)
            j++;
        if (j == f->nlabels) {
            *out = &f->children[i];
            return METRICS_OK;
        }
    }
    if (!create) {
        *out = NULL;
        return METRICS_OK;
    }
    if (f->nchildren >= METRICS_MAX_CHILDREN)
        return METRICS_ERR_LIMIT;
    if (f->nchildren == f->capchildren) {
        size_t cap = f->capchildren ? f->capchildren * 2 : 4;
        struct child *c = realloc(f->children, cap * sizeof *c);
        if (c == NULL)
            return METRICS_ERR_NOMEM;
        f->children = c;
        f->capchildren = cap;
    }
    int rc = METRICS_ERR_NOMEM;
    struct child ch = {0};
    ch.values = calloc(f->nlabels ? f->nlabels : 1, sizeof *ch.values);
    if (ch.values == NULL)
        goto out;
    if (f->kind == KIND_HISTOGRAM) {
        ch.buckets = calloc(f->nbounds + 1, sizeof *ch.buckets);
        if (ch.buckets == NULL)
            goto out;
    }
    for (size_t j = 0; j < f->nlabels; j++) {
        ch.values[j] = strdup(values[j]);
        if (ch.values[j] == NULL)
            goto out;
    }
    f->children[f->nchildren] = ch;
    *out = &f->children[f->nchildren++];
    memset(&ch, 0, sizeof ch); /* owned by the family now */
    rc = METRICS_OK;
out:
    for (size_t j = 0; ch.values != NULL && j < f->nlabels; j++)
        free(ch.values[j]);
    free(ch.values);
    free(ch.buckets);
    return rc;
}

static int update(metrics_family *f, kind k, const char *const *values,
                  double v, bool set)
{
    struct child *c = NULL;
    if (f == NULL || f->kind != k || isnan(v) ||
        (k == KIND_COUNTER && v < 0))
        return METRICS_ERR_INVALID;
    pthread_mutex_lock(&f->mu);
    int rc = child_get(f, values, true, &c);
    if (rc == METRICS_OK) {
        if (k == KIND_HISTOGRAM) {
            size_t b = 0;
            while (b < f->nbounds && v > f->bounds[b])
                b++;
            c->buckets[b]++;
            c->count++;
            c->value += v;
        } else if (set) {
            c->value = v;
        } else {
            c->value += v;
        }
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

int metrics_counter_add(metrics_family *f, const char *const *values, double v)
{
    return update(f, KIND_COUNTER, values, v, false);
}

int metrics_gauge_set(metrics_family *f, const char *const *values, double v)
{
    return update(f, KIND_GAUGE, values, v, true);
}

int metrics_gauge_add(metrics_family *f, const char *const *values, double v)
{
    return update(f, KIND_GAUGE, values, v, false);
}

int metrics_histogram_observe(metrics_family *f, const char *const *values,
                              double v)
{
    return update(f, KIND_HISTOGRAM, values, v, false);
}

int metrics_value(metrics_family *f, const char *const *values, double *out)
{
    struct child *c = NULL;
    if (f == NULL || out == NULL)
        return METRICS_ERR_INVALID;
    pthread_mutex_lock(&f->mu);
    int rc = child_get(f, values, false, &c);
    if (rc == METRICS_OK)
        *out = c == NULL ? 0 : (f->kind == KIND_HISTOGRAM ? (double)c->count
                                                          : c->value);
    pthread_mutex_unlock(&f->mu);
    return rc;
}

/* A growing text buffer; `failed` sticks after the first allocation error. */
struct buf {
    char *data;
    size_t len, cap;
    bool failed;
};

static void buf_put(struct buf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (d == NULL) {
            b->failed = true;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

static void buf_printf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void buf_printf(struct buf *b, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        b->failed = true;
        return;
    }
    buf_put(b, tmp, (size_t)n);
}

/* Escapes backslash and newline (HELP) and also '"' (label values). */
static void buf_escaped(struct buf *b, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            buf_str(b, "\\\\");
        else if (*s == '\n')
            buf_str(b, "\\n");
        else if (quote && *s == '"')
            buf_str(b, "\\\"");
        else
            buf_put(b, s, 1);
    }
}

static void buf_number(struct buf *b, double v)
{
    if (isinf(v))
        buf_str(b, v > 0 ? "+Inf" : "-Inf");
    else if (isnan(v))
        buf_str(b, "NaN");
    else if (v == (double)(int64_t)v && fabs(v) < 1e15)
        buf_printf(b, "%lld", (long long)v);
    else
        buf_printf(b, "%.17g", v);
}

/* Writes `{a="x",b="y"` plus an optional extra label, then `}`. */
static void buf_labels(struct buf *b, const metrics_family *f,
                       const struct child *c, const char *extra_name,
                       double extra)
{
    if (f->nlabels == 0 && extra_name == NULL)
        return;
    buf_str(b, "{");
    for (size_t j = 0; j < f->nlabels; j++) {
        if (j > 0)
            buf_str(b, ",");
        buf_str(b, f->labels[j]);
        buf_str(b, "=\"");
        buf_escaped(b, c->values[j], true);
        buf_str(b, "\"");
    }
    if (extra_name != NULL) {
        if (f->nlabels > 0)
            buf_str(b, ",");
        buf_str(b, extra_name);
        buf_str(b, "=\"");
        buf_number(b, extra);
        buf_str(b, "\"");
    }
    buf_str(b, "}");
}

static void render_family(struct buf *b, metrics_family *f)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    buf_str(b, "# HELP ");
    buf_str(b, f->name);
    buf_str(b, " ");
    buf_escaped(b, f->help, false);
    buf_str(b, "\n# TYPE ");
    buf_str(b, f->name);
    buf_str(b, " ");
    buf_str(b, type_names[f->kind]);
    buf_str(b, "\n");
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < f->nchildren; i++) {
        const struct child *c = &f->children[i];
        if (f->kind != KIND_HISTOGRAM) {
            buf_str(b, f->name);
            buf_labels(b, f, c, NULL, 0);
            buf_str(b, " ");
            buf_number(b, c->value);
            buf_str(b, "\n");
            continue;
        }
        uint64_t cum = 0;
        for (size_t k = 0; k <= f->nbounds; k++) {
            cum += c->buckets[k];
            buf_str(b, f->name);
            buf_str(b, "_bucket");
            buf_labels(b, f, c, "le", k < f->nbounds ? f->bounds[k] : INFINITY);
            buf_printf(b, " %llu\n", (unsigned long long)cum);
        }
        buf_str(b, f->name);
        buf_str(b, "_sum");
        buf_labels(b, f, c, NULL, 0);
        buf_str(b, " ");
        buf_number(b, c->value);
        buf_str(b, "\n");
        buf_str(b, f->name);
        buf_str(b, "_count");
        buf_labels(b, f, c, NULL, 0);
        buf_printf(b, " %llu\n", (unsigned long long)c->count);
    }
    pthread_mutex_unlock(&f->mu);
}

int metrics_registry_render(metrics_registry *reg, char **out, size_t *len)
{
    struct buf b = {0};
    if (reg == NULL || out == NULL)
        return METRICS_ERR_INVALID;
    buf_put(&b, "", 0);
    pthread_mutex_lock(&reg->mu);
    for (metrics_family *f = reg->head; f != NULL; f = f->next)
        render_family(&b, f);
    pthread_mutex_unlock(&reg->mu);
    if (b.failed) {
        free(b.data);
        return METRICS_ERR_NOMEM;
    }
    *out = b.data;
    if (len != NULL)
        *len = b.len;
    return METRICS_OK;
}

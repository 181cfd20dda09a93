/* Unit tests of the metrics module: types, labels, limits, and the exact
 * Prometheus text exposition (escaping, histogram buckets, number format). */
#include <string.h>

#include "services/common/metrics.h"
#include "services/common/test_util.h"

static char *render(metrics_registry *r)
{
    char *out = NULL;
    size_t len = 0;
    CHECK(metrics_registry_render(r, &out, &len) == METRICS_OK);
    CHECK(out != NULL && strlen(out) == len);
    return out;
}

static void test_counter_and_gauge_text(void)
{
    metrics_registry *r = NULL;
    metrics_family *c = NULL, *g = NULL;
    static const char *const labels[] = {"method", "code"};
    CHECK(metrics_registry_create(&r) == METRICS_OK);
    CHECK(metrics_counter_create(r, "requests_total", "Requests\nby \\method",
                                 labels, 2, &c) == METRICS_OK);
    CHECK(metrics_gauge_create(r, "open", "Open things", NULL, 0, &g) == METRICS_OK);
    CHECK(metrics_counter_add(c, (const char *[]){"/a.B/C", "OK"}, 1) == METRICS_OK);
    CHECK(metrics_counter_add(c, (const char *[]){"/a.B/C", "OK"}, 2) == METRICS_OK);
    CHECK(metrics_counter_add(c, (const char *[]){"x\"y\\z\nw", "NOT_FOUND"}, 1) ==
          METRICS_OK);
    CHECK(metrics_gauge_set(g, NULL, 5) == METRICS_OK);
    CHECK(metrics_gauge_add(g, NULL, -1.5) == METRICS_OK);
    char *text = render(r);
    const char *want =
        "# HELP requests_total Requests\\nby \\\\method\n"
        "# TYPE requests_total counter\n"
        "requests_total{method=\"/a.B/C\",code=\"OK\"} 3\n"
        "requests_total{method=\"x\\\"y\\\\z\\nw\",code=\"NOT_FOUND\"} 1\n"
        "# HELP open Open things\n"
        "# TYPE open gauge\n"
        "open 3.5\n";
    CHECK(text != NULL && strcmp(text, want) == 0);
    if (text != NULL && strcmp(text, want) != 0)
        fprintf(stderr, "got:\n%s\nwant:\n%s\n", text, want);
    free(text);
    double v = 0;
    CHECK(metrics_value(c, (const char *[]){"/a.B/C", "OK"}, &v) == METRICS_OK && v == 3);
    CHECK(metrics_value(c, (const char *[]){"never", "OK"}, &v) == METRICS_OK && v == 0);
    metrics_registry_destroy(r);
}

static void test_histogram_text(void)
{
    metrics_registry *r = NULL;
    metrics_family *h = NULL;
    static const double bounds[] = {0.1, 1, 2.5};
    static const char *const labels[] = {"op"};
    CHECK(metrics_registry_create(&r) == METRICS_OK);
    CHECK(metrics_histogram_create(r, "lat_seconds", "Latency", labels, 1, bounds,
                                   3, &h) == METRICS_OK);
    const char *const op[] = {"get"};
    CHECK(metrics_histogram_observe(h, op, 0.05) == METRICS_OK);
    CHECK(metrics_histogram_observe(h, op, 0.1) == METRICS_OK);
    CHECK(metrics_histogram_observe(h, op, 2) == METRICS_OK);
    CHECK(metrics_histogram_observe(h, op, 7) == METRICS_OK);
    char *text = render(r);
    const char *want = "# HELP lat_seconds Latency\n"
                       "# TYPE lat_seconds histogram\n"
                       "lat_seconds_bucket{op=\"get\",le=\"0.10000000000000001\"} 2\n"
                       "lat_seconds_bucket{op=\"get\",le=\"1\"} 2\n"
                       "lat_seconds_bucket{op=\"get\",le=\"2.5\"} 3\n"
                       "lat_seconds_bucket{op=\"get\",le=\"+Inf\"} 4\n"
                       "lat_seconds_sum{op=\"get\"} 9.1500000000000004\n"
                       "lat_seconds_count{op=\"get\"} 4\n";
    CHECK(text != NULL && strcmp(text, want) == 0);
    if (text != NULL && strcmp(text, want) != 0)
        fprintf(stderr, "got:\n%s\nwant:\n%s\n", text, want);
    free(text);
    double n = 0;
    CHECK(metrics_value(h, op, &n) == METRICS_OK && n == 4);
    metrics_registry_destroy(r);
}

static void test_validation(void)
{
    metrics_registry *r = NULL;
    metrics_family *f = NULL, *f2 = NULL;
    static const char *const bad_label[] = {"__reserved"};
    static const char *const le[] = {"le"};
    static const double unsorted[] = {1, 0.5};
    CHECK(metrics_registry_create(&r) == METRICS_OK);
    CHECK(metrics_counter_create(r, "1bad", "", NULL, 0, &f) == METRICS_ERR_INVALID);
    CHECK(metrics_counter_create(r, "bad-name", "", NULL, 0, &f) == METRICS_ERR_INVALID);
    CHECK(metrics_counter_create(r, "ok", "", bad_label, 1, &f) == METRICS_ERR_INVALID);
    CHECK(metrics_histogram_create(r, "h", "", le, 1, NULL, 0, &f) ==
          METRICS_ERR_INVALID);
    CHECK(metrics_histogram_create(r, "h", "", NULL, 0, unsorted, 2, &f) ==
          METRICS_ERR_INVALID);
    CHECK(metrics_counter_create(r, "same", "", NULL, 0, &f) == METRICS_OK);
    CHECK(metrics_counter_create(r, "same", "", NULL, 0, &f2) == METRICS_OK && f == f2);
    CHECK(metrics_gauge_create(r, "same", "", NULL, 0, &f2) == METRICS_ERR_EXISTS);
    CHECK(metrics_counter_add(f, NULL, -1) == METRICS_ERR_INVALID);
    CHECK(metrics_gauge_set(f, NULL, 1) == METRICS_ERR_INVALID);
    metrics_registry_destroy(r);
    metrics_registry_destroy(NULL);
    CHECK(strcmp(metrics_strerror(METRICS_ERR_LIMIT), "too many label combinations") == 0);
}

static void test_child_limit(void)
{
    metrics_registry *r = NULL;
    metrics_family *f = NULL;
    static const char *const labels[] = {"k"};
    char buf[32];
    CHECK(metrics_registry_create(&r) == METRICS_OK);
    CHECK(metrics_counter_create(r, "many", "", labels, 1, &f) == METRICS_OK);
    for (int i = 0; i < METRICS_MAX_CHILDREN; i++) {
        snprintf(buf, sizeof buf, "v%d", i);
        CHECK(metrics_counter_add(f, (const char *[]){buf}, 1) == METRICS_OK);
    }
    CHECK(metrics_counter_add(f, (const char *[]){"one-more"}, 1) == METRICS_ERR_LIMIT);
    CHECK(metrics_counter_add(f, (const char *[]){"v7"}, 1) == METRICS_OK);
    metrics_registry_destroy(r);
}

int main(void)
{
    RUN(test_counter_and_gauge_text);
    RUN(test_histogram_text);
    RUN(test_validation);
    RUN(test_child_limit);
    return TEST_EXIT();
}

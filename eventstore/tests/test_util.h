/* test_util.h: the small harness the event store tests share: checks that
 * name the failing expression and status, temporary store directories, event
 * ids, and the sanitizer-aware scaling of iteration counts. */
#ifndef AGENTMESH_ES_TEST_UTIL_H
#define AGENTMESH_ES_TEST_UTIL_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "eventstore/eventstore.h"

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,         \
                    __LINE__, #cond);                                      \
            abort();                                                       \
        }                                                                  \
    } while (0)

#define CHECK_ES(expect, call)                                             \
    do {                                                                   \
        int rc_ = (call);                                                  \
        if (rc_ != (expect)) {                                             \
            fprintf(stderr, "%s:%d: %s returned %s (%s), expected %s\n",   \
                    __FILE__, __LINE__, #call, es_errname(rc_),            \
                    es_strerror(rc_), es_errname(expect));                 \
            abort();                                                       \
        }                                                                  \
    } while (0)

#define CHECK_OK(call) CHECK_ES(ES_OK, call)

/* A fresh directory under the test's temporary directory. */
static inline void tu_tmpdir(char *buf, size_t cap, const char *tag)
{
    const char *base = getenv("TEST_TMPDIR");
    if (!base)
        base = "/tmp";
    snprintf(buf, cap, "%s/es-%s-XXXXXX", base, tag);
    CHECK(mkdtemp(buf) != NULL);
}

static inline void tu_rmtree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[4096];
    if (!d)
        return;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        int n = snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (n < 0 || (size_t)n >= sizeof path)
            continue;
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
            tu_rmtree(path);
        else
            unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

/* Deterministic distinct ids: a tag and a counter. */
static inline void tu_id(uint8_t id[ES_ID_SIZE], uint32_t tag, uint64_t n)
{
    memset(id, 0, ES_ID_SIZE);
    for (int i = 0; i < 4; i++)
        id[i] = (uint8_t)(tag >> (24 - 8 * i));
    for (int i = 0; i < 8; i++)
        id[8 + i] = (uint8_t)(n >> (56 - 8 * i));
}

static inline void tu_event(es_event_data *e, uint32_t tag, uint64_t n,
                            const char *type, const void *data, size_t len)
{
    memset(e, 0, sizeof *e);
    tu_id(e->id, tag, n);
    e->type = type;
    e->content_type = "application/x-protobuf";
    e->data = data;
    e->data_len = len;
    e->meta.correlation_id = "corr-1";
    e->meta.causation_id = "cause-1";
    e->meta.traceparent =
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    e->meta.actor = "tester";
}

/* "asan", "tsan" or "" (AGENTMESH_SANITIZER, set by the .bazelrc configs). */
static inline const char *tu_sanitizer(void)
{
    const char *s = getenv("AGENTMESH_SANITIZER");
    return s ? s : "";
}

/* Scale an iteration count down under a sanitizer. */
static inline long tu_scale(long plain, long asan, long tsan)
{
    const char *s = tu_sanitizer();
    if (!strcmp(s, "asan"))
        return asan;
    if (!strcmp(s, "tsan"))
        return tsan;
    return plain;
}

static inline double tu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Options for tests: durable unless a test says otherwise. */
static inline es_options tu_options(void)
{
    es_options o;
    es_options_init(&o);
    return o;
}

#endif

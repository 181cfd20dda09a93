/* record_fuzz.c: libFuzzer driver for es_record_decode, the parser of stored
 * event records. Built with -DES_LIBFUZZER under clang -fsanitize=fuzzer;
 * otherwise its own main replays a corpus (files or directories given as
 * arguments), which is how the committed seed corpus runs as a test. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "eventstore/eventstore.h"

/* A decoded string must lie inside the input and end with its NUL. */
static void check_str(const uint8_t *buf, size_t len, const char *s, size_t n)
{
    const uint8_t *p = (const uint8_t *)s;
    if (p < buf || p + n + 1 > buf + len || p[n] != 0 || memchr(p, 0, n))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    es_event ev, *copy = NULL;
    if (es_record_decode(data, size, &ev) != ES_OK)
        return 0;
    check_str(data, size, ev.stream, ev.stream_len);
    check_str(data, size, ev.type, ev.type_len);
    check_str(data, size, ev.content_type, ev.content_type_len);
    check_str(data, size, ev.correlation_id, ev.correlation_id_len);
    check_str(data, size, ev.causation_id, ev.causation_id_len);
    check_str(data, size, ev.traceparent, ev.traceparent_len);
    check_str(data, size, ev.actor, ev.actor_len);
    const uint8_t *d = ev.data;
    if (d < data || d + ev.data_len + ES_HASH_SIZE != data + size)
        abort();
    /* A copy must carry the same content. */
    if (es_event_copy(&ev, &copy) != ES_OK)
        return 0;
    if (copy->data_len != ev.data_len ||
        memcmp(copy->data, ev.data, ev.data_len) ||
        strcmp(copy->stream, ev.stream) || strcmp(copy->actor, ev.actor) ||
        copy->position != ev.position)
        abort();
    es_event_free(copy);
    return 0;
}

#ifndef ES_LIBFUZZER
static int replay_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "record_fuzz: cannot open %s\n", path);
        return -1;
    }
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            uint8_t *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return -1;
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        if (got == 0)
            break;
        len += got;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, len);
    /* Every prefix too: truncation is the commonest damage. */
    for (size_t cut = 0; cut < len; cut++)
        LLVMFuzzerTestOneInput(buf, cut);
    free(buf);
    (*n)++;
    return 0;
}

static int replay(const char *path, size_t *n)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "record_fuzz: %s not found\n", path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return replay_file(path, n);
    DIR *d = opendir(path);
    struct dirent *e;
    int rc = 0;
    if (!d)
        return -1;
    while ((e = readdir(d)) && rc == 0) {
        char sub[4096];
        if (e->d_name[0] == '.')
            continue;
        int w = snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        if (w < 0 || (size_t)w >= sizeof sub)
            continue;
        rc = replay(sub, n);
    }
    closedir(d);
    return rc;
}

int main(int argc, char **argv)
{
    size_t n = 0;
    for (int i = 1; i < argc; i++)
        if (replay(argv[i], &n) != 0)
            return 1;
    if (n == 0) {
        fprintf(stderr, "record_fuzz: no corpus files replayed\n");
        return 1;
    }
    printf("record_fuzz: replayed %zu files and their prefixes\n", n);
    return 0;
}
#endif

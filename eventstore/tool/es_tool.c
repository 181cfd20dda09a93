/* es_tool.c: the operator's command-line tool for an event store directory:
 * dump (human-readable or JSON lines), verify, hot backup, restore, stats.
 * It uses only the public header, as any other client of the library. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eventstore/eventstore.h"

/* Exit codes. */
enum { EXIT_OK = 0, EXIT_CORRUPT = 1, EXIT_USAGE = 2, EXIT_ERROR = 3 };

static const char usage_text[] =
    "usage: es_tool <command> [options] <args>\n"
    "\n"
    "commands:\n"
    "  dump [--json] [--from POS] [--limit N] [--backward]\n"
    "       [--stream NAME | --prefix P] [--type T]... DIR\n"
    "                      print events (one JSON object per line with --json);\n"
    "                      --from is a position, or a version with --stream\n"
    "  verify DIR          check the hash chain and every index\n"
    "  backup DIR DEST     hot, compacting copy of DIR into the new directory DEST\n"
    "  restore [--force] BACKUP DIR\n"
    "                      verify BACKUP, then copy it into DIR\n"
    "  stats [--json] DIR  counts, positions, map use\n"
    "\n"
    "common options:\n"
    "  --key-file FILE     the hash chain's HMAC key (a keyed store needs it\n"
    "                      for verify and restore)\n"
    "\n"
    "exit status: 0 ok, 1 verification failed or store corrupt, 2 usage error,\n"
    "3 any other error\n";

static int usage(const char *msg)
{
    if (msg)
        fprintf(stderr, "es_tool: %s\n\n", msg);
    fputs(usage_text, stderr);
    return EXIT_USAGE;
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "es_tool: %s: %s (%s)\n", what, es_strerror(rc),
            es_errname(rc));
    return rc == ES_CORRUPT ? EXIT_CORRUPT : EXIT_ERROR;
}

typedef struct args {
    int json, backward, force;
    uint64_t from;
    int from_set;
    size_t limit;
    const char *stream, *prefix, *key_file;
    const char *types[ES_FILTER_TYPES_MAX];
    size_t n_types;
    const char *pos[2];
    int n_pos;
    uint8_t key[4096];
    size_t key_len;
} args;

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!s || !*s || *s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static int parse(int argc, char **argv, args *a, const char **err)
{
    for (int i = 2; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n;
        if (!strcmp(o, "--json")) {
            a->json = 1;
        } else if (!strcmp(o, "--backward")) {
            a->backward = 1;
        } else if (!strcmp(o, "--force")) {
            a->force = 1;
        } else if (!strcmp(o, "--from")) {
            if (parse_u64(v, &a->from))
                return *err = "--from needs a number", -1;
            a->from_set = 1;
            i++;
        } else if (!strcmp(o, "--limit")) {
            if (parse_u64(v, &n) || n == 0)
                return *err = "--limit needs a positive number", -1;
            a->limit = (size_t)n;
            i++;
        } else if (!strcmp(o, "--stream")) {
            if (!v || !es_stream_name_valid(v))
                return *err = "--stream needs a valid stream name", -1;
            a->stream = v;
            i++;
        } else if (!strcmp(o, "--prefix")) {
            if (!v)
                return *err = "--prefix needs a value", -1;
            a->prefix = v;
            i++;
        } else if (!strcmp(o, "--type")) {
            if (!v || a->n_types == ES_FILTER_TYPES_MAX)
                return *err = "--type needs a value (at most 32 of them)", -1;
            a->types[a->n_types++] = v;
            i++;
        } else if (!strcmp(o, "--key-file")) {
            if (!v)
                return *err = "--key-file needs a file", -1;
            a->key_file = v;
            i++;
        } else if (o[0] == '-' && o[1] == '-') {
            return *err = "unknown option", -1;
        } else if (a->n_pos < 2) {
            a->pos[a->n_pos++] = o;
        } else {
            return *err = "too many arguments", -1;
        }
    }
    return 0;
}

static int load_key(args *a)
{
    if (!a->key_file)
        return 0;
    FILE *f = fopen(a->key_file, "rb");
    if (!f) {
        fprintf(stderr, "es_tool: %s: %s\n", a->key_file, strerror(errno));
        return -1;
    }
    a->key_len = fread(a->key, 1, sizeof a->key, f);
    fclose(f);
    /* A key written with echo carries a newline that is not part of it. */
    while (a->key_len && (a->key[a->key_len - 1] == '\n' ||
                          a->key[a->key_len - 1] == '\r'))
        a->key_len--;
    if (a->key_len == 0) {
        fprintf(stderr, "es_tool: %s: empty key\n", a->key_file);
        return -1;
    }
    return 0;
}

static es_options options(const args *a, unsigned flags)
{
    es_options o;
    es_options_init(&o);
    o.flags = flags;
    if (a->key_len) {
        o.chain_key = a->key;
        o.chain_key_len = a->key_len;
    }
    return o;
}

static int open_ro(const args *a, const char *dir, es_store **s)
{
    es_options o = options(a, ES_OPT_RDONLY);
    int rc = es_open(dir, &o, s);
    if (rc) {
        char what[600];
        snprintf(what, sizeof what, "open %s", dir);
        return fail(what, rc);
    }
    return EXIT_OK;
}

/* ---- output helpers ------------------------------------------------------ */

static void json_str(FILE *f, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc(c, f);
        } else if (c == '\n') {
            fputs("\\n", f);
        } else if (c == '\t') {
            fputs("\\t", f);
        } else if (c == '\r') {
            fputs("\\r", f);
        } else if (c < 0x20 || c == 0x7f) {
            fprintf(f, "\\u00%c%c", hex[c >> 4], hex[c & 15]);
        } else {
            fputc(c, f);
        }
    }
    fputc('"', f);
}

static void base64(FILE *f, const uint8_t *p, size_t n)
{
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    fputc('"', f);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        fputc(tbl[(v >> 18) & 63], f);
        fputc(tbl[(v >> 12) & 63], f);
        fputc(i + 1 < n ? tbl[(v >> 6) & 63] : '=', f);
        fputc(i + 2 < n ? tbl[v & 63] : '=', f);
    }
    fputc('"', f);
}

static void uuid(char out[37], const uint8_t id[ES_ID_SIZE])
{
    es_id_format(id, out);
}

static void hexstr(char *out, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[p[i] >> 4];
        out[2 * i + 1] = hex[p[i] & 15];
    }
    out[2 * n] = 0;
}

static void rfc3339(char *out, size_t cap, int64_t ns)
{
    time_t secs = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, cap, "%s.%09lldZ", base, (long long)(ns % 1000000000));
}

static void print_json(const es_event *e)
{
    char id[37], hash[2 * ES_HASH_SIZE + 1], when[64];
    uuid(id, e->id);
    hexstr(hash, e->hash, ES_HASH_SIZE);
    rfc3339(when, sizeof when, e->time_unix_nano);
    printf("{\"position\":%" PRIu64 ",\"stream\":", e->position);
    json_str(stdout, e->stream, e->stream_len);
    printf(",\"stream_version\":%" PRIu64 ",\"type\":", e->stream_version);
    json_str(stdout, e->type, e->type_len);
    printf(",\"event_id\":\"%s\",\"time_unix_nano\":%" PRId64
           ",\"time\":\"%s\",\"content_type\":",
           id, e->time_unix_nano, when);
    json_str(stdout, e->content_type, e->content_type_len);
    printf(",\"metadata\":{\"correlation_id\":");
    json_str(stdout, e->correlation_id, e->correlation_id_len);
    printf(",\"causation_id\":");
    json_str(stdout, e->causation_id, e->causation_id_len);
    printf(",\"traceparent\":");
    json_str(stdout, e->traceparent, e->traceparent_len);
    printf(",\"actor\":");
    json_str(stdout, e->actor, e->actor_len);
    printf("},\"data_base64\":");
    base64(stdout, e->data, e->data_len);
    printf(",\"hash\":\"%s\",\"keyed\":%s}\n", hash, e->keyed ? "true" : "false");
}

static void print_text(const es_event *e)
{
    char id[37], when[64];
    uuid(id, e->id);
    rfc3339(when, sizeof when, e->time_unix_nano);
    printf("#%" PRIu64 " %s@%" PRIu64 " %s %s id=%s", e->position, e->stream,
           e->stream_version, e->type, when, id);
    if (e->actor_len)
        printf(" actor=%s", e->actor);
    if (e->correlation_id_len)
        printf(" corr=%s", e->correlation_id);
    printf(" data=%zuB", e->data_len);
    /* A short preview, escaped, since payloads are mostly binary protobuf. */
    const unsigned char *d = e->data;
    size_t n = e->data_len < 48 ? e->data_len : 48;
    printf(" \"");
    for (size_t i = 0; i < n; i++)
        if (d[i] >= 0x20 && d[i] < 0x7f && d[i] != '"' && d[i] != '\\')
            putchar(d[i]);
        else
            printf("\\x%02x", d[i]);
    printf(n < e->data_len ? "\"...\n" : "\"\n");
}

/* ---- commands ------------------------------------------------------------ */

#define PAGE 512

static int cmd_dump(args *a)
{
    static es_event page[PAGE];
    es_store *s = NULL;
    es_txn *t = NULL;
    es_page pg;
    int ex, rc;
    if (a->n_pos != 1)
        return usage("dump takes one directory");
    if ((ex = open_ro(a, a->pos[0], &s)))
        return ex;
    es_direction dir = a->backward ? ES_BACKWARD : ES_FORWARD;
    uint64_t next = a->from_set ? a->from : (a->backward ? ES_END : 0);
    size_t left = a->limit ? a->limit : SIZE_MAX;
    es_filter f = {a->prefix, a->types, a->n_types, 0};
    if ((rc = es_txn_begin(s, &t))) {
        ex = fail("read", rc);
        goto out;
    }
    do {
        size_t want = left < PAGE ? left : PAGE;
        if (a->stream)
            rc = es_read_stream(t, a->stream, next, dir, want, page, &pg);
        else
            rc = es_read_all(t, next, dir, &f, want, page, &pg);
        if (rc) {
            ex = fail("read", rc);
            goto out;
        }
        for (size_t i = 0; i < pg.count; i++) {
            if (a->stream && a->n_types) {
                int match = 0;
                for (size_t j = 0; j < a->n_types; j++)
                    match |= !strcmp(a->types[j], page[i].type);
                if (!match)
                    continue;
            }
            if (a->json)
                print_json(&page[i]);
            else
                print_text(&page[i]);
        }
        left -= pg.count;
        next = pg.next;
    } while (!pg.end_of_stream && left > 0);
    ex = fflush(stdout) == 0 ? EXIT_OK : EXIT_ERROR;
out:
    es_txn_end(t);
    es_close(s);
    return ex;
}

static int cmd_verify(args *a)
{
    es_store *s = NULL;
    es_verify_report rep;
    int ex;
    if (a->n_pos != 1)
        return usage("verify takes one directory");
    if ((ex = open_ro(a, a->pos[0], &s)))
        return ex;
    int rc = es_verify(s, &rep);
    es_close(s);
    if (rc == ES_OK) {
        printf("verify: %s\n", rep.message);
        return EXIT_OK;
    }
    if (rc == ES_CORRUPT) {
        printf("verify: FAILED at position %" PRIu64 ": %s\n",
               rep.bad_position, rep.message);
        return EXIT_CORRUPT;
    }
    if (rep.message[0])
        fprintf(stderr, "es_tool: verify: %s\n", rep.message);
    return fail("verify", rc);
}

static int cmd_backup(args *a)
{
    es_store *s = NULL;
    int ex;
    if (a->n_pos != 2)
        return usage("backup takes a store directory and a destination");
    if ((ex = open_ro(a, a->pos[0], &s)))
        return ex;
    int rc = es_backup(s, a->pos[1]);
    es_close(s);
    if (rc == ES_BUSY) {
        fprintf(stderr, "es_tool: backup: %s already holds a store\n",
                a->pos[1]);
        return EXIT_ERROR;
    }
    if (rc)
        return fail("backup", rc);
    printf("backup: %s -> %s\n", a->pos[0], a->pos[1]);
    return EXIT_OK;
}

static int cmd_restore(args *a)
{
    if (a->n_pos != 2)
        return usage("restore takes a backup directory and a destination");
    es_options o = options(a, 0);
    int rc = es_restore(a->pos[0], a->pos[1], &o, a->force);
    if (rc == ES_BUSY) {
        fprintf(stderr,
                "es_tool: restore: %s already holds a store (--force replaces "
                "it; stop every process using it first)\n",
                a->pos[1]);
        return EXIT_ERROR;
    }
    if (rc)
        return fail("restore", rc);
    printf("restore: %s -> %s (verified)\n", a->pos[0], a->pos[1]);
    return EXIT_OK;
}

static int cmd_stats(args *a)
{
    es_store *s = NULL;
    es_stats st;
    int ex;
    if (a->n_pos != 1)
        return usage("stats takes one directory");
    if ((ex = open_ro(a, a->pos[0], &s)))
        return ex;
    int rc = es_stats_get(s, &st);
    es_close(s);
    if (rc)
        return fail("stats", rc);
    if (a->json) {
        printf("{\"last_position\":%" PRIu64 ",\"events\":%" PRIu64
               ",\"streams\":%" PRIu64 ",\"map_size\":%" PRIu64
               ",\"map_used\":%" PRIu64 ",\"readers_used\":%u"
               ",\"readers_max\":%u,\"keyed\":%s}\n",
               st.last_position, st.events, st.streams, st.map_size,
               st.map_used, st.readers_used, st.readers_max,
               st.keyed ? "true" : "false");
    } else {
        printf("last position  %" PRIu64 "\n"
               "events         %" PRIu64 "\n"
               "streams        %" PRIu64 "\n"
               "map size       %" PRIu64 " bytes\n"
               "map used       %" PRIu64 " bytes (%.1f%%)\n"
               "readers        %u of %u slots\n",
               st.last_position, st.events, st.streams, st.map_size,
               st.map_used, st.map_size ? 100.0 * st.map_used / st.map_size : 0,
               st.readers_used, st.readers_max);
    }
    return EXIT_OK;
}

int main(int argc, char **argv)
{
    static args a;
    const char *err = NULL;
    if (argc < 2)
        return usage(NULL);
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        fputs(usage_text, stdout);
        return EXIT_OK;
    }
    if (parse(argc, argv, &a, &err))
        return usage(err);
    if (a.stream && a.prefix)
        return usage("--stream and --prefix exclude each other");
    if (load_key(&a))
        return EXIT_ERROR;
    if (!strcmp(cmd, "dump"))
        return cmd_dump(&a);
    if (!strcmp(cmd, "verify"))
        return cmd_verify(&a);
    if (!strcmp(cmd, "backup"))
        return cmd_backup(&a);
    if (!strcmp(cmd, "restore"))
        return cmd_restore(&a);
    if (!strcmp(cmd, "stats"))
        return cmd_stats(&a);
    return usage("unknown command");
}

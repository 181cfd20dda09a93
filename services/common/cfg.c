/* Option tables parsed from flags and the environment (see cfg.h). Values are
 * validated at parse time, so typed reads never fail on form. */
#include "services/common/cfg.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct cfg_value {
    const char *text; /* borrowed from argv, environ or the table */
    int64_t i;
    uint64_t u;
    bool b;
};

struct cfg {
    const cfg_option *table;
    size_t n;
    struct cfg_value *values;
    char *const *args;
    size_t nargs;
    char **argbuf;
};

const char *cfg_strerror(int err)
{
    switch (err) {
#define CFG_ERR_CASE_(name, value, text) \
    case value:                          \
        return text;
        CFG_ERRORS(CFG_ERR_CASE_)
#undef CFG_ERR_CASE_
    }
    return "unknown cfg error";
}

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
{
    if (errbuf == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

static int parse_int(const char *s, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* A non-negative decimal number followed by a unit from `units`. */
struct unit {
    const char *suffix;
    uint64_t mul;
};

static int parse_scaled(const char *s, const struct unit *units, size_t nunits,
                        uint64_t *out)
{
    char *end = NULL;
    if (!isdigit((unsigned char)s[0]))
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s)
        return -1;
    for (size_t i = 0; i < nunits; i++) {
        if (strcasecmp(end, units[i].suffix) == 0) {
            if (units[i].mul != 0 && v > UINT64_MAX / units[i].mul)
                return -1;
            *out = v * units[i].mul;
            return 0;
        }
    }
    return -1;
}

static const struct unit duration_units[] = {
    {"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000},
};

static const struct unit size_units[] = {
    {"", 1},
    {"b", 1},
    {"k", 1024},
    {"kib", 1024},
    {"kb", 1024},
    {"m", 1024 * 1024},
    {"mib", 1024 * 1024},
    {"mb", 1024 * 1024},
    {"g", 1024ull * 1024 * 1024},
    {"gib", 1024ull * 1024 * 1024},
    {"gb", 1024ull * 1024 * 1024},
};

static int convert(const cfg_option *opt, const char *text, struct cfg_value *v)
{
    v->text = text;
    if (text == NULL)
        return 0;
    switch (opt->type) {
    case CFG_STRING:
        return 0;
    case CFG_INT:
        return parse_int(text, &v->i);
    case CFG_BOOL:
        return parse_bool(text, &v->b);
    case CFG_DURATION:
        if (parse_scaled(text, duration_units,
                         sizeof duration_units / sizeof duration_units[0],
                         &v->u) != 0 || v->u > INT64_MAX)
            return -1;
        v->i = (int64_t)v->u;
        return 0;
    case CFG_SIZE:
        return parse_scaled(text, size_units,
                            sizeof size_units / sizeof size_units[0], &v->u);
    }
    return -1;
}

static const char *type_name(cfg_type t)
{
    switch (t) {
    case CFG_STRING:
        return "string";
    case CFG_INT:
        return "integer";
    case CFG_BOOL:
        return "boolean";
    case CFG_DURATION:
        return "duration";
    case CFG_SIZE:
        return "size";
    }
    return "value";
}

static long find(const cfg_option *table, size_t n, const char *name,
                 size_t namelen)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(table[i].name) == namelen &&
            strncmp(table[i].name, name, namelen) == 0)
            return (long)i;
    return -1;
}

int cfg_parse(const cfg_option *table, size_t n, int argc, char *const *argv,
              cfg **out, char *errbuf, size_t errlen)
{
    int rc = CFG_ERR_NOMEM;
    cfg *c = NULL;

    if (table == NULL || out == NULL || argc < 0) {
        set_err(errbuf, errlen, "invalid arguments");
        return CFG_ERR_INVALID;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return CFG_ERR_HELP;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL)
        goto out;
    c->table = table;
    c->n = n;
    c->values = calloc(n ? n : 1, sizeof *c->values);
    c->argbuf = calloc((size_t)argc + 1, sizeof *c->argbuf);
    if (c->values == NULL || c->argbuf == NULL)
        goto out;

    for (size_t i = 0; i < n; i++) {
        const char *text = table[i].def;
        const char *src = "default";
        const char *env = table[i].env ? getenv(table[i].env) : NULL;
        if (env != NULL) {
            text = env;
            src = table[i].env;
        }
        if (convert(&table[i], text, &c->values[i]) != 0) {
            set_err(errbuf, errlen, "%s: %s is not a valid %s: \"%s\"", src,
                    table[i].name, type_name(table[i].type), text);
            rc = CFG_ERR_INVALID;
            goto out;
        }
    }

    bool only_args = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_args || strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            if (!only_args && strcmp(a, "--") == 0) {
                only_args = true;
                continue;
            }
            c->argbuf[c->nargs++] = argv[i];
            continue;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t namelen = eq ? (size_t)(eq - name) : strlen(name);
        long idx = find(table, n, name, namelen);
        bool negated = false;
        if (idx < 0 && eq == NULL && namelen > 3 && strncmp(name, "no-", 3) == 0) {
            idx = find(table, n, name + 3, namelen - 3);
            negated = idx >= 0 && table[idx].type == CFG_BOOL;
            if (!negated)
                idx = -1;
        }
        if (idx < 0) {
            set_err(errbuf, errlen, "unknown option --%.*s (see --help)",
                    (int)namelen, name);
            rc = CFG_ERR_UNKNOWN;
            goto out;
        }
        const char *text;
        if (eq != NULL) {
            text = eq + 1;
        } else if (table[idx].type == CFG_BOOL) {
            text = negated ? "false" : "true";
        } else if (i + 1 < argc) {
            text = argv[++i];
        } else {
            set_err(errbuf, errlen, "option --%s needs a value",
                    table[idx].name);
            rc = CFG_ERR_MISSING;
            goto out;
        }
        if (convert(&table[idx], text, &c->values[idx]) != 0) {
            set_err(errbuf, errlen, "--%s: not a valid %s: \"%s\"",
                    table[idx].name, type_name(table[idx].type), text);
            rc = CFG_ERR_INVALID;
            goto out;
        }
    }
    c->args = c->argbuf;
    *out = c;
    c = NULL;
    rc = CFG_OK;
out:
    cfg_destroy(c);
    return rc;
}

void cfg_destroy(cfg *c)
{
    if (c == NULL)
        return;
    free(c->values);
    free(c->argbuf);
    free(c);
}

int cfg_parse_main(const cfg_option *table, size_t n, int argc,
                   char *const *argv, cfg **out)
{
    char err[256];
    int rc = cfg_parse(table, n, argc, argv, out, err, sizeof err);
    if (rc == CFG_ERR_HELP) {
        cfg_print_help(table, n, argv[0], stdout);
        return 0;
    }
    if (rc != CFG_OK) {
        fprintf(stderr, "%s: %s\n", argv[0], err);
        return 2;
    }
    return -1;
}

void cfg_print_help(const cfg_option *table, size_t n, const char *prog,
                    FILE *f)
{
    fprintf(f, "usage: %s [--option=value ...]\n\n", prog ? prog : "server");
    fprintf(f, "Each option may also come from its environment variable; a flag "
               "wins over the environment, which wins over the default.\n\n");
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "  --%s=<%s>\n      %s\n      env %s, default %s\n",
                table[i].name, type_name(table[i].type),
                table[i].help ? table[i].help : "",
                table[i].env ? table[i].env : "(none)",
                table[i].def ? (table[i].def[0] ? table[i].def : "\"\"")
                             : "(unset)");
    }
}

static int lookup(const cfg *c, const char *name, cfg_type type,
                  const struct cfg_value **v)
{
    if (c == NULL || name == NULL)
        return CFG_ERR_NOT_FOUND;
    long idx = find(c->table, c->n, name, strlen(name));
    if (idx < 0)
        return CFG_ERR_NOT_FOUND;
    if (c->table[idx].type != type)
        return CFG_ERR_TYPE;
    *v = &c->values[idx];
    return CFG_OK;
}

int cfg_get_string(const cfg *c, const char *name, const char **out)
{
    const struct cfg_value *v = NULL;
    int rc = lookup(c, name, CFG_STRING, &v);
    if (rc == CFG_OK)
        *out = v->text;
    return rc;
}

int cfg_get_int(const cfg *c, const char *name, int64_t *out)
{
    const struct cfg_value *v = NULL;
    int rc = lookup(c, name, CFG_INT, &v);
    if (rc == CFG_OK)
        *out = v->text ? v->i : 0;
    return rc;
}

int cfg_get_bool(const cfg *c, const char *name, bool *out)
{
    const struct cfg_value *v = NULL;
    int rc = lookup(c, name, CFG_BOOL, &v);
    if (rc == CFG_OK)
        *out = v->text ? v->b : false;
    return rc;
}

int cfg_get_duration_ms(const cfg *c, const char *name, int64_t *out)
{
    const struct cfg_value *v = NULL;
    int rc = lookup(c, name, CFG_DURATION, &v);
    if (rc == CFG_OK)
        *out = v->text ? v->i : 0;
    return rc;
}

int cfg_get_size(const cfg *c, const char *name, uint64_t *out)
{
    const struct cfg_value *v = NULL;
    int rc = lookup(c, name, CFG_SIZE, &v);
    if (rc == CFG_OK)
        *out = v->text ? v->u : 0;
    return rc;
}

int cfg_args(const cfg *c, char *const **args, size_t *nargs)
{
    if (c == NULL)
        return CFG_ERR_INVALID;
    *args = c->args;
    *nargs = c->nargs;
    return CFG_OK;
}

/* Conflict resolution between the server's version of a key and a
 * replica's change based on an older one, and the configured strategy
 * rules that say which resolution each namespace uses. */
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "services/memory_sync/model.h"

static int lww(const ms_stamp *s, const ms_stamp *c)
{
    if (c->hlc != s->hlc)
        return c->hlc > s->hlc ? MS_CLIENT_WON : MS_SERVER_WON;
    return strcmp(c->replica, s->replica) > 0 ? MS_CLIENT_WON : MS_SERVER_WON;
}

static size_t rank(const char *replica, const char *const *order, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(order[i], replica) == 0)
            return i;
    return n;
}

int ms_resolve(int strategy, const ms_stamp *server, const ms_stamp *client,
               const char *const *order, size_t n_order)
{
    if (strategy == MS_KEEP_BOTH)
        return MS_KEPT_BOTH;
    if (strategy == MS_SOURCE_PRIORITY) {
        size_t rs = rank(server->replica, order, n_order);
        size_t rc = rank(client->replica, order, n_order);
        if (rs != rc)
            return rc < rs ? MS_CLIENT_WON : MS_SERVER_WON;
    }
    return lww(server, client);
}

static const char *const names[] = {
    [MS_LAST_WRITER_WINS] = "LAST_WRITER_WINS",
    [MS_SOURCE_PRIORITY] = "SOURCE_PRIORITY",
    [MS_KEEP_BOTH] = "KEEP_BOTH",
};

int ms_strategy_parse(const char *name, size_t n)
{
    for (int s = MS_LAST_WRITER_WINS; s <= MS_KEEP_BOTH; s++)
        if (strlen(names[s]) == n && strncasecmp(names[s], name, n) == 0)
            return s;
    return MS_STRATEGY_UNSPECIFIED;
}

const char *ms_strategy_name(int strategy)
{
    if (strategy < MS_LAST_WRITER_WINS || strategy > MS_KEEP_BOTH)
        strategy = MS_LAST_WRITER_WINS;
    return names[strategy];
}

typedef struct rule {
    char *pattern;
    int strategy;
    char *order_text;              /* owns the order strings */
    const char *order[MS_ORDER_MAX];
    size_t n_order;
} rule;

struct ms_rules {
    rule r[MS_RULES_MAX];
    size_t n;
};

static int fail(char *err, size_t errlen, const char *what, const char *text)
{
    if (err)
        snprintf(err, errlen, "strategy rule \"%s\": %s", text, what);
    return -2;
}

/* Parses one "PATTERN=STRATEGY[,order=A|B]" (text is modified). */
static int parse_rule(char *text, rule *r, char *err, size_t errlen)
{
    char *eq = strchr(text, '=');
    if (!eq || eq == text)
        return fail(err, errlen, "expected PATTERN=STRATEGY", text);
    *eq = '\0';
    char *strat = eq + 1, *opt = strchr(strat, ',');
    if (opt)
        *opt++ = '\0';
    r->strategy = ms_strategy_parse(strat, strlen(strat));
    if (!r->strategy)
        return fail(err, errlen, "unknown strategy", strat);
    if (!(r->pattern = strdup(text)))
        return -1;
    if (!opt)
        return 0;
    if (strncmp(opt, "order=", 6) != 0 || opt[6] == '\0')
        return fail(err, errlen, "expected order=R1|R2", opt);
    if (!(r->order_text = strdup(opt + 6)))
        return -1;
    for (char *p = r->order_text; p;) {
        char *bar = strchr(p, '|');
        if (bar)
            *bar++ = '\0';
        if (*p == '\0' || r->n_order == MS_ORDER_MAX ||
            strlen(p) > MS_REPLICA_MAX)
            return fail(err, errlen, "bad replica order", opt);
        r->order[r->n_order++] = p;
        p = bar;
    }
    return 0;
}

int ms_rules_parse(const char *text, ms_rules **out, char *err, size_t errlen)
{
    ms_rules *rs = calloc(1, sizeof *rs);
    char *copy = NULL;
    int rc = -1;
    if (!rs)
        return -1;
    if (text && *text) {
        if (!(copy = strdup(text)))
            goto out;
        for (char *p = copy; p;) {
            char *semi = strchr(p, ';');
            if (semi)
                *semi++ = '\0';
            if (*p) {
                if (rs->n == MS_RULES_MAX) {
                    rc = fail(err, errlen, "too many rules", p);
                    goto out;
                }
                if ((rc = parse_rule(p, &rs->r[rs->n++], err, errlen)))
                    goto out;
            }
            p = semi;
        }
    }
    *out = rs;
    rs = NULL;
    rc = 0;
out:
    free(copy);
    ms_rules_free(rs);
    return rc;
}

void ms_rules_free(ms_rules *rs)
{
    if (!rs)
        return;
    for (size_t i = 0; i < rs->n; i++) {
        free(rs->r[i].pattern);
        free(rs->r[i].order_text);
    }
    free(rs);
}

int ms_rules_match(const ms_rules *rs, const char *ns,
                   const char *const **order, size_t *n_order)
{
    for (size_t i = 0; rs && i < rs->n; i++) {
        if (fnmatch(rs->r[i].pattern, ns, 0) == 0) {
            *order = rs->r[i].order;
            *n_order = rs->r[i].n_order;
            return rs->r[i].strategy;
        }
    }
    *order = NULL;
    *n_order = 0;
    return MS_STRATEGY_UNSPECIFIED;
}

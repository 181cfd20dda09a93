/* The agents read model: one Agent record per agent (as AgentManager.GetAgent
 * would show it, heartbeat-only last_seen aside), with indexes by status,
 * capability and label, and the agents-by-status counters. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentmesh/v1/events.pb-c.h"
#include "services/query/query.h"

#define NS "q.agents"
#define NS_STATUS "q.agents.status"
#define NS_CAP "q.agents.cap"
#define NS_LABEL "q.agents.label"
#define PREFIX "agent-"

typedef struct keybuf {
    uint8_t b[QS_KEY_CAP + 64];
    size_t n;
} keybuf;

static int kb_add(keybuf *k, const void *p, size_t n)
{
    if (k->n + n > sizeof k->b)
        return -1;
    memcpy(k->b + k->n, p, n);
    k->n += n;
    return 0;
}

static int kb_str(keybuf *k, const char *s)
{
    return kb_add(k, s, strlen(s));
}

static const char *status_name(int s)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
        &agentmesh__v1__agent_status__descriptor, s);
    return v ? v->name : "AGENT_STATUS_UNSPECIFIED";
}

/* Puts (put = 1) or deletes the index entries of an agent. Keys too long
 * for LMDB are left out of the index (the record still has them). */
static int index_agent(qs_tx *tx, const Agentmesh__V1__Agent *a, int put)
{
    es_txn *txn = tx->txn;
    keybuf k = {{0}, 0};
    int rc;
    uint8_t st = (uint8_t)a->status;
    const char *id = a->agent_id;
#define EDIT(ns)                                                              \
    do {                                                                      \
        rc = put ? es_kv_put(txn, ns, k.b, k.n, "", 0)                        \
                 : es_kv_del(txn, ns, k.b, k.n);                              \
        if (rc && rc != ES_NOT_FOUND && rc != ES_INVALID)                     \
            return rc;                                                        \
    } while (0)
    if (!kb_add(&k, &st, 1) && !kb_str(&k, id))
        EDIT(NS_STATUS);
    for (size_t i = 0; i < a->n_capabilities; i++) {
        k.n = 0;
        if (!kb_str(&k, a->capabilities[i]) && !kb_add(&k, "", 1) &&
            !kb_str(&k, id))
            EDIT(NS_CAP);
    }
    for (size_t i = 0; i < a->n_labels; i++) {
        k.n = 0;
        if (!kb_str(&k, a->labels[i]->key) && !kb_add(&k, "=", 1) &&
            !kb_str(&k, a->labels[i]->value) && !kb_add(&k, "", 1) &&
            !kb_str(&k, id))
            EDIT(NS_LABEL);
    }
#undef EDIT
    int rc2 = qs_stats_add(tx, "agent", status_name(a->status), put ? 1 : -1);
    return rc2;
}

static int load(es_txn *txn, const char *id, Agentmesh__V1__Agent **out)
{
    const void *v;
    size_t vl;
    int rc = es_kv_get(txn, NS, id, strlen(id), &v, &vl);
    if (rc)
        return rc;
    *out = agentmesh__v1__agent__unpack(NULL, vl, v);
    return *out ? ES_OK : ES_CORRUPT;
}

static int store(es_txn *txn, const Agentmesh__V1__Agent *a)
{
    uint8_t *buf;
    size_t len;
    int rc = qs_pack(&a->base, &buf, &len);
    if (rc)
        return rc;
    rc = es_kv_put(txn, NS, a->agent_id, strlen(a->agent_id), buf, len);
    free(buf);
    return rc;
}

/* Replaces a's capabilities and labels with deep copies of the payload's. */
static int set_settings(Agentmesh__V1__Agent *a, size_t n_caps, char **caps,
                        size_t n_labels,
                        Agentmesh__V1__AgentRegistered__LabelsEntry **labels,
                        uint32_t max_concurrency)
{
    char **c = n_caps ? calloc(n_caps, sizeof *c) : NULL;
    Agentmesh__V1__Agent__LabelsEntry **l =
        n_labels ? calloc(n_labels, sizeof *l) : NULL;
    bool oom = (n_caps && !c) || (n_labels && !l);
    for (size_t i = 0; !oom && i < n_caps; i++)
        oom = !(c[i] = strdup(caps[i]));
    for (size_t i = 0; !oom && i < n_labels; i++) {
        if (!(l[i] = malloc(sizeof *l[i]))) {
            oom = true;
            break;
        }
        agentmesh__v1__agent__labels_entry__init(l[i]);
        l[i]->key = strdup(labels[i]->key);
        l[i]->value = strdup(labels[i]->value);
        oom = !l[i]->key || !l[i]->value;
    }
    /* Hand the arrays to the message, even partly filled, so one free
     * path releases them. */
    for (size_t i = 0; i < a->n_capabilities; i++)
        free(a->capabilities[i]);
    free(a->capabilities);
    for (size_t i = 0; i < a->n_labels; i++)
        protobuf_c_message_free_unpacked(&a->labels[i]->base, NULL);
    free(a->labels);
    a->capabilities = c;
    a->n_capabilities = 0;
    while (c && a->n_capabilities < n_caps && c[a->n_capabilities])
        a->n_capabilities++;
    a->labels = l;
    a->n_labels = 0;
    while (l && a->n_labels < n_labels && l[a->n_labels])
        a->n_labels++;
    a->max_concurrency = max_concurrency ? max_concurrency : 1;
    return oom ? ES_NOMEM : ES_OK;
}

int qs_agents_apply(qs_tx *tx, const qs_event *ev)
{
    es_txn *txn = tx->txn;
    size_t pl = strlen(PREFIX);
    if (strncmp(ev->stream, PREFIX, pl) || !ev->stream[pl] || !ev->payload)
        return ES_OK;
    const char *id = ev->stream + pl;
    if (strlen(id) > ES_KEY_MAX)
        return ES_OK;
    Agentmesh__V1__Agent *a = NULL;
    int rc = load(txn, id, &a);
    bool existed = rc == ES_OK;
    if (rc && rc != ES_NOT_FOUND)
        return rc;
    const ProtobufCMessageDescriptor *d = ev->payload->descriptor;
    if (!existed) {
        if (d != &agentmesh__v1__agent_registered__descriptor)
            return ES_OK;
        if (!(a = malloc(sizeof *a)))
            return ES_NOMEM;
        agentmesh__v1__agent__init(a);
        if (!(a->agent_id = strdup(id))) {
            free(a);
            return ES_NOMEM;
        }
    } else if (ev->stream_version <= a->version) {
        goto out;
    } else if ((rc = index_agent(tx, a, 0))) {
        goto out;
    }
    if (d == &agentmesh__v1__agent_registered__descriptor) {
        const Agentmesh__V1__AgentRegistered *p = (const void *)ev->payload;
        qs_free_str(a->name);
        if (!(a->name = strdup(p->name ? p->name : ""))) {
            rc = ES_NOMEM;
            goto out;
        }
        if ((rc = set_settings(a, p->n_capabilities, p->capabilities,
                               p->n_labels, p->labels, p->max_concurrency)))
            goto out;
        a->registered_at_unix_nano = p->registered_at_unix_nano;
        a->status = AGENTMESH__V1__AGENT_STATUS__AGENT_STATUS_ONLINE;
    } else if (d == &agentmesh__v1__agent_updated__descriptor) {
        const Agentmesh__V1__AgentUpdated *p = (const void *)ev->payload;
        if ((rc = set_settings(a, p->n_capabilities, p->capabilities,
                               p->n_labels,
                               (Agentmesh__V1__AgentRegistered__LabelsEntry **)
                                   p->labels,
                               p->max_concurrency)))
            goto out;
    } else if (d == &agentmesh__v1__agent_deregistered__descriptor) {
        a->status = AGENTMESH__V1__AGENT_STATUS__AGENT_STATUS_DEREGISTERED;
    } else if (d == &agentmesh__v1__agent_went_online__descriptor) {
        a->status = AGENTMESH__V1__AGENT_STATUS__AGENT_STATUS_ONLINE;
    } else if (d == &agentmesh__v1__agent_went_offline__descriptor) {
        a->status = AGENTMESH__V1__AGENT_STATUS__AGENT_STATUS_OFFLINE;
    }
    a->version = ev->stream_version;
    a->position = ev->position;
    if (ev->time_unix_nano > a->last_seen_unix_nano)
        a->last_seen_unix_nano = ev->time_unix_nano;
    if ((rc = store(txn, a)) == ES_OK)
        rc = index_agent(tx, a, 1);
out:
    protobuf_c_message_free_unpacked(&a->base, NULL);
    return rc;
}

int qs_agents_adjust_active(qs_tx *tx, const char *agent_id, int delta)
{
    es_txn *txn = tx->txn;
    Agentmesh__V1__Agent *a = NULL;
    if (!agent_id || !*agent_id || strlen(agent_id) > ES_KEY_MAX)
        return ES_OK;
    int rc = load(txn, agent_id, &a);
    if (rc == ES_NOT_FOUND)
        return ES_OK;
    if (rc)
        return rc;
    if (delta < 0 && a->active_tasks == 0)
        a->active_tasks = 0;
    else
        a->active_tasks = (uint32_t)((int64_t)a->active_tasks + delta);
    rc = store(txn, a);
    protobuf_c_message_free_unpacked(&a->base, NULL);
    return rc;
}

int qs_agents_get(es_txn *txn, const char *agent_id, Agentmesh__V1__Agent **out)
{
    if (!agent_id || !*agent_id || strlen(agent_id) > ES_KEY_MAX)
        return ES_NOT_FOUND;
    return load(txn, agent_id, out);
}

typedef struct label {
    const char *k, *v;
    size_t kl, vl;
} label;

typedef struct list_ctx {
    const Agentmesh__V1__ListAgentsRequest *req;
    label labels[32];
    size_t n_labels;
    Agentmesh__V1__Agent **out;
    size_t n, cap;
} list_ctx;

static bool has_label(const Agentmesh__V1__Agent *a, const label *l)
{
    for (size_t i = 0; i < a->n_labels; i++)
        if (strlen(a->labels[i]->key) == l->kl &&
            !memcmp(a->labels[i]->key, l->k, l->kl) &&
            strlen(a->labels[i]->value) == l->vl &&
            !memcmp(a->labels[i]->value, l->v, l->vl))
            return true;
    return false;
}

static int take_agent(void *arg, es_txn *txn, const uint8_t *suffix,
                      size_t sl, const void *val, size_t vl)
{
    list_ctx *c = arg;
    Agentmesh__V1__Agent *a = NULL;
    const Agentmesh__V1__ListAgentsRequest *r = c->req;
    (void)val;
    (void)vl;
    char id[ES_KEY_MAX + 1];
    /* Index suffixes are agent ids, as are the record keys. */
    if (sl > ES_KEY_MAX)
        return 0;
    memcpy(id, suffix, sl);
    id[sl] = '\0';
    int rc = load(txn, id, &a);
    if (rc == ES_NOT_FOUND)
        return 0;
    if (rc)
        return -rc;
    bool ok = !r->status || (int)a->status == (int)r->status;
    if (ok && r->capability && *r->capability) {
        ok = false;
        for (size_t i = 0; i < a->n_capabilities; i++)
            if (!strcmp(a->capabilities[i], r->capability))
                ok = true;
    }
    for (size_t i = 0; ok && i < c->n_labels; i++)
        ok = has_label(a, &c->labels[i]);
    if (!ok) {
        protobuf_c_message_free_unpacked(&a->base, NULL);
        return 0;
    }
    c->out[c->n++] = a;
    return 1;
}

static int parse_selector(const char *sel, list_ctx *c, char *msg,
                          size_t msglen)
{
    const char *p = sel;
    while (p && *p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        if (!eq || eq == p || c->n_labels == 32) {
            snprintf(msg, msglen, "label_selector: expected key=value"
                                  "[,key=value] (at most 32)");
            return ES_INVALID;
        }
        label *l = &c->labels[c->n_labels++];
        l->k = p;
        l->kl = (size_t)(eq - p);
        l->v = eq + 1;
        l->vl = n - l->kl - 1;
        p = end ? end + 1 : NULL;
    }
    return ES_OK;
}

int qs_agents_list(es_txn *txn, const Agentmesh__V1__ListAgentsRequest *req,
                   Agentmesh__V1__ListAgentsResponse *resp, char *msg,
                   size_t msglen)
{
    list_ctx c;
    memset(&c, 0, sizeof c);
    c.req = req;
    int rc = parse_selector(req->label_selector, &c, msg, msglen);
    if (rc)
        return rc;
    size_t limit = qs_page_size(req->page_size);
    uint64_t h = qs_hash(0, &req->status, sizeof req->status);
    h = qs_hash(h, req->capability, strlen(req->capability));
    h = qs_hash(h, req->label_selector, strlen(req->label_selector));
    uint8_t after[QS_KEY_CAP], last[QS_KEY_CAP];
    size_t after_len = 0, last_len = 0;
    if (qs_token_decode(req->page_token, 'a', h, after, sizeof after,
                        &after_len)) {
        snprintf(msg, msglen, "page_token: malformed or issued for other "
                              "filters");
        return ES_INVALID;
    }
    keybuf k = {{0}, 0};
    const char *ns = NS;
    if (req->capability && *req->capability) {
        ns = NS_CAP;
        if (kb_str(&k, req->capability) || kb_add(&k, "", 1))
            return ES_INVALID;
    } else if (c.n_labels) {
        ns = NS_LABEL;
        if (kb_add(&k, c.labels[0].k, c.labels[0].kl) || kb_add(&k, "=", 1) ||
            kb_add(&k, c.labels[0].v, c.labels[0].vl) || kb_add(&k, "", 1))
            return ES_INVALID;
    } else if (req->status) {
        uint8_t st = (uint8_t)req->status;
        ns = NS_STATUS;
        kb_add(&k, &st, 1);
    }
    if (!(c.out = calloc(limit, sizeof *c.out)))
        return ES_NOMEM;
    bool more = false;
    rc = qs_scan_page(txn, ns, k.b, k.n, after, after_len, limit, take_agent,
                      &c, last, &last_len, &more);
    if (!rc && more && last_len)
        rc = qs_token_encode('a', h, last, last_len, &resp->next_page_token);
    if (rc) {
        for (size_t i = 0; i < c.n; i++)
            protobuf_c_message_free_unpacked(&c.out[i]->base, NULL);
        free(c.out);
        return rc;
    }
    resp->agents = c.out;
    resp->n_agents = c.n;
    return ES_OK;
}

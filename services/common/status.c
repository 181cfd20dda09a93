/* Rich error statuses: a gRPC code and message plus google.protobuf.Any
 * details, encoded as the google.rpc.Status that travels in the
 * grpc-status-details-bin trailer (the gRPC richer error model). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "services/common/rpc_internal.h"

struct detail {
    char *type_url;
    uint8_t *data; /* packed; NULL for the BadRequest slot */
    size_t len;
};

struct violation {
    char *field;
    char *description;
};

struct rpc_status {
    grpc_status_code code;
    char *message;
    struct detail *details;
    size_t ndetails;
    size_t bad_request; /* index of the BadRequest slot, or SIZE_MAX */
    struct violation *violations;
    size_t nviolations;
};

const char *rpc_strerror(int err)
{
    switch (err) {
#define RPC_ERR_CASE_(name, value, text) \
    case value:                          \
        return text;
        RPC_ERRORS(RPC_ERR_CASE_)
#undef RPC_ERR_CASE_
    }
    return "unknown rpc error";
}

int rpc_status_create(grpc_status_code code, const char *message,
                      rpc_status **out)
{
    if (out == NULL || (int)code < 0 || (int)code > 16)
        return RPC_ERR_INVALID;
    rpc_status *st = calloc(1, sizeof *st);
    if (st == NULL)
        return RPC_ERR_NOMEM;
    st->code = code;
    st->bad_request = SIZE_MAX;
    st->message = strdup(message ? message : "");
    if (st->message == NULL) {
        free(st);
        return RPC_ERR_NOMEM;
    }
    *out = st;
    return RPC_OK;
}

void rpc_status_destroy(rpc_status *st)
{
    if (st == NULL)
        return;
    for (size_t i = 0; i < st->ndetails; i++) {
        free(st->details[i].type_url);
        free(st->details[i].data);
    }
    free(st->details);
    for (size_t i = 0; i < st->nviolations; i++) {
        free(st->violations[i].field);
        free(st->violations[i].description);
    }
    free(st->violations);
    free(st->message);
    free(st);
}

grpc_status_code rpc_status_code(const rpc_status *st)
{
    return st->code;
}

const char *rpc_status_message(const rpc_status *st)
{
    return st->message;
}

/* Appends a detail slot; takes `type_url` and `data` on success only. */
static int add_slot(rpc_status *st, char *type_url, uint8_t *data, size_t len)
{
    struct detail *d = realloc(st->details, (st->ndetails + 1) * sizeof *d);
    if (d == NULL)
        return RPC_ERR_NOMEM;
    st->details = d;
    d[st->ndetails].type_url = type_url;
    d[st->ndetails].data = data;
    d[st->ndetails].len = len;
    st->ndetails++;
    return RPC_OK;
}

int rpc_status_add_detail(rpc_status *st, const ProtobufCMessage *detail)
{
    int rc = RPC_ERR_NOMEM;
    char *url = NULL;
    uint8_t *data = NULL;
    size_t len = 0;
    if (st == NULL || detail == NULL)
        return RPC_ERR_INVALID;
    if (asprintf(&url, "type.googleapis.com/%s", detail->descriptor->name) < 0) {
        url = NULL;
        goto out;
    }
    rc = rpc__pack(detail, 0, &data, &len);
    if (rc != RPC_OK)
        goto out;
    rc = add_slot(st, url, data, len);
    if (rc == RPC_OK) {
        url = NULL;
        data = NULL;
    }
out:
    free(url);
    free(data);
    return rc;
}

int rpc_status_add_retry_info(rpc_status *st, int64_t retry_delay_ms)
{
    if (st == NULL || retry_delay_ms < 0)
        return RPC_ERR_INVALID;
    Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
    d.seconds = retry_delay_ms / 1000;
    d.nanos = (int32_t)((retry_delay_ms % 1000) * 1000000);
    Google__Rpc__RetryInfo ri = GOOGLE__RPC__RETRY_INFO__INIT;
    ri.retry_delay = &d;
    return rpc_status_add_detail(st, &ri.base);
}

int rpc_status_add_error_info(rpc_status *st, const char *reason,
                              const char *domain, const char *const *kv,
                              size_t nkv)
{
    int rc = RPC_ERR_NOMEM;
    Google__Rpc__ErrorInfo__MetadataEntry *entries = NULL;
    Google__Rpc__ErrorInfo__MetadataEntry **ptrs = NULL;
    if (st == NULL || (nkv > 0 && kv == NULL) || nkv > 1024)
        return RPC_ERR_INVALID;
    for (size_t i = 0; i < 2 * nkv; i++)
        if (kv[i] == NULL)
            return RPC_ERR_INVALID;
    if (nkv > 0) {
        entries = calloc(nkv, sizeof *entries);
        ptrs = calloc(nkv, sizeof *ptrs);
        if (entries == NULL || ptrs == NULL)
            goto out;
    }
    for (size_t i = 0; i < nkv; i++) {
        Google__Rpc__ErrorInfo__MetadataEntry e =
            GOOGLE__RPC__ERROR_INFO__METADATA_ENTRY__INIT;
        e.key = (char *)kv[2 * i];
        e.value = (char *)kv[2 * i + 1];
        entries[i] = e;
        ptrs[i] = &entries[i];
    }
    Google__Rpc__ErrorInfo ei = GOOGLE__RPC__ERROR_INFO__INIT;
    ei.reason = (char *)(reason ? reason : "");
    ei.domain = (char *)(domain ? domain : "");
    ei.n_metadata = nkv;
    ei.metadata = ptrs;
    rc = rpc_status_add_detail(st, &ei.base);
out:
    free(entries);
    free(ptrs);
    return rc;
}

int rpc_status_add_bad_request(rpc_status *st, const char *field,
                               const char *description)
{
    if (st == NULL || field == NULL)
        return RPC_ERR_INVALID;
    if (st->bad_request == SIZE_MAX) {
        char *url = strdup("type.googleapis.com/google.rpc.BadRequest");
        if (url == NULL)
            return RPC_ERR_NOMEM;
        if (add_slot(st, url, NULL, 0) != RPC_OK) {
            free(url);
            return RPC_ERR_NOMEM;
        }
        st->bad_request = st->ndetails - 1;
    }
    struct violation *v =
        realloc(st->violations, (st->nviolations + 1) * sizeof *v);
    if (v == NULL)
        return RPC_ERR_NOMEM;
    st->violations = v;
    char *f = strdup(field);
    char *d = strdup(description ? description : "");
    if (f == NULL || d == NULL) {
        free(f);
        free(d);
        return RPC_ERR_NOMEM;
    }
    v[st->nviolations].field = f;
    v[st->nviolations].description = d;
    st->nviolations++;
    return RPC_OK;
}

static int pack_bad_request(const rpc_status *st, uint8_t **out, size_t *len)
{
    int rc = RPC_ERR_NOMEM;
    Google__Rpc__BadRequest__FieldViolation *fv =
        calloc(st->nviolations, sizeof *fv);
    Google__Rpc__BadRequest__FieldViolation **pv =
        calloc(st->nviolations, sizeof *pv);
    if (fv == NULL || pv == NULL)
        goto out;
    for (size_t i = 0; i < st->nviolations; i++) {
        Google__Rpc__BadRequest__FieldViolation v =
            GOOGLE__RPC__BAD_REQUEST__FIELD_VIOLATION__INIT;
        v.field = st->violations[i].field;
        v.description = st->violations[i].description;
        fv[i] = v;
        pv[i] = &fv[i];
    }
    Google__Rpc__BadRequest br = GOOGLE__RPC__BAD_REQUEST__INIT;
    br.n_field_violations = st->nviolations;
    br.field_violations = pv;
    rc = rpc__pack(&br.base, 0, out, len);
out:
    free(fv);
    free(pv);
    return rc;
}

int rpc_status_encode(const rpc_status *st, uint8_t **out, size_t *len)
{
    int rc = RPC_ERR_NOMEM;
    Google__Protobuf__Any *anys = NULL;
    Google__Protobuf__Any **ptrs = NULL;
    uint8_t *br = NULL;
    size_t brlen = 0;
    if (st == NULL || out == NULL || len == NULL)
        return RPC_ERR_INVALID;
    if (st->ndetails > 0) {
        anys = calloc(st->ndetails, sizeof *anys);
        ptrs = calloc(st->ndetails, sizeof *ptrs);
        if (anys == NULL || ptrs == NULL)
            goto out;
    }
    if (st->bad_request != SIZE_MAX) {
        rc = pack_bad_request(st, &br, &brlen);
        if (rc != RPC_OK)
            goto out;
    }
    for (size_t i = 0; i < st->ndetails; i++) {
        Google__Protobuf__Any a = GOOGLE__PROTOBUF__ANY__INIT;
        a.type_url = st->details[i].type_url;
        if (i == st->bad_request) {
            a.value.data = br;
            a.value.len = brlen;
        } else {
            a.value.data = st->details[i].data;
            a.value.len = st->details[i].len;
        }
        anys[i] = a;
        ptrs[i] = &anys[i];
    }
    Google__Rpc__Status s = GOOGLE__RPC__STATUS__INIT;
    s.code = (int32_t)st->code;
    s.message = st->message;
    s.n_details = st->ndetails;
    s.details = ptrs;
    rc = rpc__pack(&s.base, 0, out, len);
out:
    free(br);
    free(anys);
    free(ptrs);
    return rc;
}

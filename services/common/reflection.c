/* gRPC server reflection (grpc.reflection.v1 and v1alpha, which share one
 * wire format) over one or more embedded descriptor sets: list_services from
 * the registered methods; file_by_filename, file_containing_symbol (packages'
 * services, methods, messages, enums), file_containing_extension and
 * all_extension_numbers_of_type from an index built at registration. Files
 * come back with their transitive dependencies. A bidi method on a worker. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "services/common/rpc_internal.h"

/* Most files and symbols indexed; descriptor sets come from the build. */
#define MAX_FILES 4096
#define MAX_SYMBOLS 262144

struct file {
    char *name;
    uint8_t *data; /* serialized FileDescriptorProto */
    size_t len;
    size_t *deps; /* indexes of direct dependencies */
    size_t ndeps;
};

struct symbol {
    char *name;
    size_t file;
};

struct extension {
    char *extendee; /* without the leading '.' */
    int32_t number;
    size_t file;
};

struct rpc__reflection {
    rpc_server *srv;
    struct file *files;
    size_t nfiles;
    struct symbol *symbols;
    size_t nsymbols, capsymbols;
    struct extension *exts;
    size_t nexts, capexts;
    Google__Protobuf__FileDescriptorSet **sets; /* kept for dependency names */
    size_t nsets;
};

void rpc__reflection_destroy(struct rpc__reflection *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->nfiles; i++) {
        free(r->files[i].name);
        free(r->files[i].data);
        free(r->files[i].deps);
    }
    free(r->files);
    for (size_t i = 0; i < r->nsymbols; i++)
        free(r->symbols[i].name);
    free(r->symbols);
    for (size_t i = 0; i < r->nexts; i++)
        free(r->exts[i].extendee);
    free(r->exts);
    for (size_t i = 0; i < r->nsets; i++)
        google__protobuf__file_descriptor_set__free_unpacked(r->sets[i], NULL);
    free(r->sets);
    free(r);
}

static int add_symbol(struct rpc__reflection *r, const char *scope,
                      const char *name, size_t file)
{
    char *full = NULL;
    if (r->nsymbols >= MAX_SYMBOLS)
        return RPC_ERR_FULL;
    if (asprintf(&full, "%s%s%s", scope, scope[0] ? "." : "", name) < 0)
        return RPC_ERR_NOMEM;
    if (r->nsymbols == r->capsymbols) {
        size_t cap = r->capsymbols ? r->capsymbols * 2 : 256;
        struct symbol *s = realloc(r->symbols, cap * sizeof *s);
        if (s == NULL) {
            free(full);
            return RPC_ERR_NOMEM;
        }
        r->symbols = s;
        r->capsymbols = cap;
    }
    r->symbols[r->nsymbols].name = full;
    r->symbols[r->nsymbols].file = file;
    r->nsymbols++;
    return RPC_OK;
}

static int add_extensions(struct rpc__reflection *r,
                          Google__Protobuf__FieldDescriptorProto **fields,
                          size_t n, size_t file)
{
    for (size_t i = 0; i < n; i++) {
        const char *ext = fields[i]->extendee ? fields[i]->extendee : "";
        if (ext[0] == '.')
            ext++;
        if (r->nexts == r->capexts) {
            size_t cap = r->capexts ? r->capexts * 2 : 16;
            struct extension *e = realloc(r->exts, cap * sizeof *e);
            if (e == NULL)
                return RPC_ERR_NOMEM;
            r->exts = e;
            r->capexts = cap;
        }
        char *name = strdup(ext);
        if (name == NULL)
            return RPC_ERR_NOMEM;
        r->exts[r->nexts].extendee = name;
        r->exts[r->nexts].number = fields[i]->number;
        r->exts[r->nexts].file = file;
        r->nexts++;
    }
    return RPC_OK;
}

static int index_message(struct rpc__reflection *r, const char *scope,
                         const Google__Protobuf__DescriptorProto *m,
                         size_t file, int depth)
{
    char *full = NULL;
    int rc;
    if (depth > 32 || m->name == NULL)
        return RPC_ERR_DECODE;
    rc = add_symbol(r, scope, m->name, file);
    if (rc != RPC_OK)
        return rc;
    full = r->symbols[r->nsymbols - 1].name;
    for (size_t i = 0; rc == RPC_OK && i < m->n_nested_type; i++)
        rc = index_message(r, full, m->nested_type[i], file, depth + 1);
    for (size_t i = 0; rc == RPC_OK && i < m->n_enum_type; i++)
        rc = add_symbol(r, full, m->enum_type[i]->name, file);
    if (rc == RPC_OK)
        rc = add_extensions(r, m->extension, m->n_extension, file);
    return rc;
}

static long find_file(const struct rpc__reflection *r, const char *name)
{
    for (size_t i = 0; i < r->nfiles; i++)
        if (strcmp(r->files[i].name, name) == 0)
            return (long)i;
    return -1;
}

static int index_file(struct rpc__reflection *r,
                      const Google__Protobuf__FileDescriptorProto *f)
{
    int rc = RPC_ERR_NOMEM;
    struct file nf = {0};
    if (f->name == NULL)
        return RPC_ERR_DECODE;
    if (find_file(r, f->name) >= 0)
        return RPC_OK; /* the same file from another set */
    if (r->nfiles >= MAX_FILES)
        return RPC_ERR_FULL;
    nf.name = strdup(f->name);
    if (nf.name == NULL)
        goto out;
    rc = rpc__pack(&f->base, 0, &nf.data, &nf.len);
    if (rc != RPC_OK)
        goto out;
    rc = RPC_ERR_NOMEM;
    if (f->n_dependency > 0) {
        nf.deps = calloc(f->n_dependency, sizeof *nf.deps);
        if (nf.deps == NULL)
            goto out;
    }
    for (size_t i = 0; i < f->n_dependency; i++) {
        /* protoc --include_imports lists dependencies before dependents. */
        long d = find_file(r, f->dependency[i]);
        if (d >= 0)
            nf.deps[nf.ndeps++] = (size_t)d;
    }
    struct file *files = realloc(r->files, (r->nfiles + 1) * sizeof *files);
    if (files == NULL)
        goto out;
    r->files = files;
    size_t idx = r->nfiles;
    r->files[r->nfiles++] = nf;
    memset(&nf, 0, sizeof nf); /* owned by r->files now */
    const char *pkg = f->package ? f->package : "";
    rc = RPC_OK;
    for (size_t i = 0; rc == RPC_OK && i < f->n_message_type; i++)
        rc = index_message(r, pkg, f->message_type[i], idx, 0);
    for (size_t i = 0; rc == RPC_OK && i < f->n_enum_type; i++)
        rc = add_symbol(r, pkg, f->enum_type[i]->name, idx);
    for (size_t i = 0; rc == RPC_OK && i < f->n_service; i++) {
        const Google__Protobuf__ServiceDescriptorProto *s = f->service[i];
        rc = add_symbol(r, pkg, s->name, idx);
        const char *svc = rc == RPC_OK ? r->symbols[r->nsymbols - 1].name : "";
        for (size_t j = 0; rc == RPC_OK && j < s->n_method; j++)
            rc = add_symbol(r, svc, s->method[j]->name, idx);
    }
    if (rc == RPC_OK)
        rc = add_extensions(r, f->extension, f->n_extension, idx);
out:
    free(nf.name);
    free(nf.data);
    free(nf.deps);
    return rc;
}

/* --- answering ------------------------------------------------------------ */

typedef Grpc__Reflection__V1__ServerReflectionRequest req_t;
typedef Grpc__Reflection__V1__ServerReflectionResponse resp_t;

static int send_error(rpc_call *c, resp_t *resp, grpc_status_code code,
                      const char *msg)
{
    Grpc__Reflection__V1__ErrorResponse e =
        GRPC__REFLECTION__V1__ERROR_RESPONSE__INIT;
    e.error_code = (int32_t)code;
    e.error_message = (char *)msg;
    resp->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
    resp->error_response = &e;
    return rpc_call_send(c, &resp->base);
}

/* Sends file `idx` and everything it depends on, the file itself first. */
static int send_files(struct rpc__reflection *r, rpc_call *c, resp_t *resp,
                      size_t idx)
{
    int rc = RPC_ERR_NOMEM;
    size_t *order = calloc(r->nfiles, sizeof *order);
    bool *seen = calloc(r->nfiles, sizeof *seen);
    ProtobufCBinaryData *blobs = calloc(r->nfiles, sizeof *blobs);
    size_t n = 0;
    if (order == NULL || seen == NULL || blobs == NULL)
        goto out;
    order[n++] = idx;
    seen[idx] = true;
    for (size_t k = 0; k < n; k++) {
        const struct file *f = &r->files[order[k]];
        for (size_t d = 0; d < f->ndeps; d++) {
            if (!seen[f->deps[d]]) {
                seen[f->deps[d]] = true;
                order[n++] = f->deps[d];
            }
        }
    }
    for (size_t k = 0; k < n; k++) {
        blobs[k].data = r->files[order[k]].data;
        blobs[k].len = r->files[order[k]].len;
    }
    Grpc__Reflection__V1__FileDescriptorResponse fdr =
        GRPC__REFLECTION__V1__FILE_DESCRIPTOR_RESPONSE__INIT;
    fdr.n_file_descriptor_proto = n;
    fdr.file_descriptor_proto = blobs;
    resp->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
    resp->file_descriptor_response = &fdr;
    rc = rpc_call_send(c, &resp->base);
out:
    free(order);
    free(seen);
    free(blobs);
    return rc;
}

static int list_services(struct rpc__reflection *r, rpc_call *c, resp_t *resp)
{
    int rc = RPC_ERR_NOMEM;
    rpc_server *srv = r->srv;
    Grpc__Reflection__V1__ServiceResponse *svcs =
        calloc(srv->nmethods + 1, sizeof *svcs);
    Grpc__Reflection__V1__ServiceResponse **ptrs =
        calloc(srv->nmethods + 1, sizeof *ptrs);
    char **names = calloc(srv->nmethods + 1, sizeof *names);
    size_t n = 0;
    if (svcs == NULL || ptrs == NULL || names == NULL)
        goto out;
    /* Methods are fixed once the server started: no lock needed. */
    for (size_t i = 0; i < srv->nmethods; i++) {
        const char *full = srv->methods[i].name + 1;
        const char *slash = strchr(full, '/');
        size_t len = (size_t)(slash - full);
        bool dup = false;
        for (size_t k = 0; k < n && !dup; k++)
            dup = strlen(names[k]) == len && strncmp(names[k], full, len) == 0;
        if (dup)
            continue;
        names[n] = strndup(full, len);
        if (names[n] == NULL)
            goto out;
        Grpc__Reflection__V1__ServiceResponse s =
            GRPC__REFLECTION__V1__SERVICE_RESPONSE__INIT;
        s.name = names[n];
        svcs[n] = s;
        ptrs[n] = &svcs[n];
        n++;
    }
    Grpc__Reflection__V1__ListServiceResponse l =
        GRPC__REFLECTION__V1__LIST_SERVICE_RESPONSE__INIT;
    l.n_service = n;
    l.service = ptrs;
    resp->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
    resp->list_services_response = &l;
    rc = rpc_call_send(c, &resp->base);
out:
    for (size_t k = 0; names != NULL && k < n; k++)
        free(names[k]);
    free(names);
    free(svcs);
    free(ptrs);
    return rc;
}

static int extension_numbers(struct rpc__reflection *r, rpc_call *c,
                             resp_t *resp, const char *type)
{
    int rc = RPC_ERR_NOMEM;
    int32_t *nums = calloc(r->nexts + 1, sizeof *nums);
    size_t n = 0;
    bool known = false;
    if (nums == NULL)
        return rc;
    for (size_t i = 0; i < r->nsymbols && !known; i++)
        known = strcmp(r->symbols[i].name, type) == 0;
    if (!known) {
        rc = send_error(c, resp, GRPC_STATUS_NOT_FOUND, "type not found");
        goto out;
    }
    for (size_t i = 0; i < r->nexts; i++)
        if (strcmp(r->exts[i].extendee, type) == 0)
            nums[n++] = r->exts[i].number;
    Grpc__Reflection__V1__ExtensionNumberResponse e =
        GRPC__REFLECTION__V1__EXTENSION_NUMBER_RESPONSE__INIT;
    e.base_type_name = (char *)type;
    e.n_extension_number = n;
    e.extension_number = nums;
    resp->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
    resp->all_extension_numbers_response = &e;
    rc = rpc_call_send(c, &resp->base);
out:
    free(nums);
    return rc;
}

static int answer(struct rpc__reflection *r, rpc_call *c, req_t *req)
{
    resp_t resp = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
    resp.valid_host = req->host ? req->host : "";
    resp.original_request = req;
    switch (req->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        return list_services(r, c, &resp);
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME: {
        long f = find_file(r, req->file_by_filename);
        if (f < 0)
            return send_error(c, &resp, GRPC_STATUS_NOT_FOUND, "file not found");
        return send_files(r, c, &resp, (size_t)f);
    }
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL: {
        const char *sym = req->file_containing_symbol;
        if (sym[0] == '.')
            sym++;
        for (size_t i = 0; i < r->nsymbols; i++)
            if (strcmp(r->symbols[i].name, sym) == 0)
                return send_files(r, c, &resp, r->symbols[i].file);
        return send_error(c, &resp, GRPC_STATUS_NOT_FOUND, "symbol not found");
    }
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION: {
        const Grpc__Reflection__V1__ExtensionRequest *e =
            req->file_containing_extension;
        const char *type = e && e->containing_type ? e->containing_type : "";
        if (type[0] == '.')
            type++;
        for (size_t i = 0; e != NULL && i < r->nexts; i++)
            if (r->exts[i].number == e->extension_number &&
                strcmp(r->exts[i].extendee, type) == 0)
                return send_files(r, c, &resp, r->exts[i].file);
        return send_error(c, &resp, GRPC_STATUS_NOT_FOUND, "extension not found");
    }
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE: {
        const char *type = req->all_extension_numbers_of_type;
        return extension_numbers(r, c, &resp, type[0] == '.' ? type + 1 : type);
    }
    default:
        return send_error(c, &resp, GRPC_STATUS_INVALID_ARGUMENT,
                          "empty reflection request");
    }
}

static void info(rpc_call *c, const ProtobufCMessage *unused, void *user)
{
    struct rpc__reflection *r = user;
    (void)unused;
    for (;;) {
        ProtobufCMessage *m = NULL;
        int rc = rpc_call_recv(c, &m);
        if (rc == RPC_ERR_CLOSED)
            return;
        if (rc == RPC_ERR_DECODE) {
            rpc_call_fail(c, GRPC_STATUS_INVALID_ARGUMENT,
                          "malformed ServerReflectionRequest");
            return;
        }
        if (rc != RPC_OK)
            return;
        rc = answer(r, c, (req_t *)m);
        protobuf_c_message_free_unpacked(m, NULL);
        if (rc != RPC_OK)
            return;
    }
}

int rpc_server_enable_reflection(rpc_server *srv, const uint8_t *fds,
                                 size_t len)
{
    int rc;
    Google__Protobuf__FileDescriptorSet *set = NULL;
    if (srv == NULL || fds == NULL)
        return RPC_ERR_INVALID;
    if (atomic_load(&srv->state) != SRV_CREATED)
        return RPC_ERR_STATE;
    struct rpc__reflection *r = srv->reflection;
    bool fresh = r == NULL;
    if (fresh) {
        r = calloc(1, sizeof *r);
        if (r == NULL)
            return RPC_ERR_NOMEM;
        r->srv = srv;
    }
    set = google__protobuf__file_descriptor_set__unpack(NULL, len, fds);
    if (set == NULL) {
        rc = RPC_ERR_DECODE;
        goto out;
    }
    Google__Protobuf__FileDescriptorSet **sets =
        realloc(r->sets, (r->nsets + 1) * sizeof *sets);
    if (sets == NULL) {
        rc = RPC_ERR_NOMEM;
        goto out;
    }
    r->sets = sets;
    r->sets[r->nsets++] = set;
    set = NULL;
    Google__Protobuf__FileDescriptorSet *s = r->sets[r->nsets - 1];
    rc = RPC_OK;
    for (size_t i = 0; rc == RPC_OK && i < s->n_file; i++)
        rc = index_file(r, s->file[i]);
    if (rc != RPC_OK)
        goto out;
    if (fresh) {
        static const char *const names[] = {
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"};
        for (size_t i = 0; rc == RPC_OK && i < 2; i++) {
            rpc_method_desc m = {
                .name = names[i],
                .kind = RPC_METHOD_BIDI_STREAM,
                .request = &grpc__reflection__v1__server_reflection_request__descriptor,
                .reply = &grpc__reflection__v1__server_reflection_response__descriptor,
                .handler = info,
                .user = r,
            };
            rc = rpc_server_register(srv, &m);
        }
        if (rc != RPC_OK)
            goto out;
        srv->reflection = r;
    }
    r = NULL;
out:
    if (set != NULL)
        google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
    if (fresh)
        rpc__reflection_destroy(r);
    return rc;
}

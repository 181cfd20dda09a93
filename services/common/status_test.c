/* Unit tests of rich statuses: the google.rpc.Status encoding with Any
 * details (BadRequest, ErrorInfo, RetryInfo, any message), and the error
 * table. */
#include <string.h>

#include "google/protobuf/any.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "services/common/rpc.h"
#include "services/common/test_util.h"

static void test_encode_details(void)
{
    rpc_status *st = NULL;
    static const char *const kv[] = {"limit", "10", "window", "1s"};
    CHECK(rpc_status_create(GRPC_STATUS_RESOURCE_EXHAUSTED, "slow down", &st) == RPC_OK);
    CHECK(rpc_status_add_bad_request(st, "name", "too long") == RPC_OK);
    CHECK(rpc_status_add_retry_info(st, 2250) == RPC_OK);
    CHECK(rpc_status_add_bad_request(st, "labels[0]", "empty key") == RPC_OK);
    CHECK(rpc_status_add_error_info(st, "RATE_LIMITED", "agentmesh.io", kv, 2) == RPC_OK);
    Google__Rpc__ResourceInfo ri = GOOGLE__RPC__RESOURCE_INFO__INIT;
    ri.resource_type = "agent";
    ri.resource_name = "a-1";
    CHECK(rpc_status_add_detail(st, &ri.base) == RPC_OK);
    CHECK(rpc_status_code(st) == GRPC_STATUS_RESOURCE_EXHAUSTED);
    CHECK(strcmp(rpc_status_message(st), "slow down") == 0);

    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK(rpc_status_encode(st, &buf, &len) == RPC_OK);
    Google__Rpc__Status *s = google__rpc__status__unpack(NULL, len, buf);
    CHECK(s != NULL);
    if (s == NULL)
        goto out;
    CHECK(s->code == 8 && strcmp(s->message, "slow down") == 0);
    CHECK(s->n_details == 4);
    CHECK(strcmp(s->details[0]->type_url, "type.googleapis.com/google.rpc.BadRequest") == 0);
    CHECK(strcmp(s->details[1]->type_url, "type.googleapis.com/google.rpc.RetryInfo") == 0);
    CHECK(strcmp(s->details[2]->type_url, "type.googleapis.com/google.rpc.ErrorInfo") == 0);
    CHECK(strcmp(s->details[3]->type_url, "type.googleapis.com/google.rpc.ResourceInfo") == 0);

    Google__Rpc__BadRequest *br = google__rpc__bad_request__unpack(
        NULL, s->details[0]->value.len, s->details[0]->value.data);
    CHECK(br != NULL && br->n_field_violations == 2);
    if (br != NULL && br->n_field_violations == 2) {
        CHECK(strcmp(br->field_violations[0]->field, "name") == 0);
        CHECK(strcmp(br->field_violations[1]->description, "empty key") == 0);
    }
    google__rpc__bad_request__free_unpacked(br, NULL);

    Google__Rpc__RetryInfo *rt = google__rpc__retry_info__unpack(
        NULL, s->details[1]->value.len, s->details[1]->value.data);
    CHECK(rt != NULL && rt->retry_delay != NULL && rt->retry_delay->seconds == 2 &&
          rt->retry_delay->nanos == 250000000);
    google__rpc__retry_info__free_unpacked(rt, NULL);

    Google__Rpc__ErrorInfo *ei = google__rpc__error_info__unpack(
        NULL, s->details[2]->value.len, s->details[2]->value.data);
    CHECK(ei != NULL && strcmp(ei->reason, "RATE_LIMITED") == 0 && ei->n_metadata == 2);
    if (ei != NULL && ei->n_metadata == 2)
        CHECK(strcmp(ei->metadata[1]->key, "window") == 0 &&
              strcmp(ei->metadata[1]->value, "1s") == 0);
    google__rpc__error_info__free_unpacked(ei, NULL);
    google__rpc__status__free_unpacked(s, NULL);
out:
    free(buf);
    rpc_status_destroy(st);
}

static void test_invalid(void)
{
    rpc_status *st = NULL;
    CHECK(rpc_status_create((grpc_status_code)17, "x", &st) == RPC_ERR_INVALID);
    CHECK(rpc_status_create(GRPC_STATUS_NOT_FOUND, NULL, &st) == RPC_OK);
    CHECK(strcmp(rpc_status_message(st), "") == 0);
    CHECK(rpc_status_add_retry_info(st, -1) == RPC_ERR_INVALID);
    CHECK(rpc_status_add_error_info(st, "r", "d", NULL, 1) == RPC_ERR_INVALID);
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK(rpc_status_encode(st, &buf, &len) == RPC_OK);
    Google__Rpc__Status *s = google__rpc__status__unpack(NULL, len, buf);
    CHECK(s != NULL && s->code == 5 && s->n_details == 0);
    google__rpc__status__free_unpacked(s, NULL);
    free(buf);
    rpc_status_destroy(st);
    rpc_status_destroy(NULL);
}

static void test_strerror(void)
{
    CHECK(strcmp(rpc_strerror(RPC_OK), "success") == 0);
    CHECK(strcmp(rpc_strerror(RPC_ERR_CLOSED), "client half-closed the stream") == 0);
    CHECK(strcmp(rpc_strerror(9999), "unknown rpc error") == 0);
}

int main(void)
{
    RUN(test_encode_details);
    RUN(test_invalid);
    RUN(test_strerror);
    return TEST_EXIT();
}

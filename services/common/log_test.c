/* Unit tests of JSON log lines: one valid object per line, escaping of
 * quotes, control characters and invalid UTF-8, trace ids, levels. */
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "services/common/log.h"
#include "services/common/test_util.h"

static json_t *parse_line(const char *line)
{
    size_t n = strlen(line);
    CHECK(n > 0 && line[n - 1] == '\n');
    CHECK(strchr(line, '\n') == line + n - 1);
    json_error_t e;
    json_t *j = json_loads(line, 0, &e);
    CHECK(j != NULL && json_is_object(j));
    return j;
}

static void test_escaping(void)
{
    char *line = NULL;
    const char *kv[] = {"path", "/a\"b\\c", "tab", "x\ty\001", NULL};
    CHECK(log_format(LOG_LEVEL_WARN, NULL, kv, &line, "said \"%s\"\nnext %d",
                     "hi", 42) == 0);
    json_t *j = parse_line(line);
    CHECK(strcmp(json_string_value(json_object_get(j, "msg")),
                 "said \"hi\"\nnext 42") == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "level")), "warn") == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "path")), "/a\"b\\c") == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "tab")), "x\ty\001") == 0);
    const char *t = json_string_value(json_object_get(j, "time"));
    CHECK(t != NULL && strlen(t) == 27 && t[10] == 'T' && t[26] == 'Z');
    CHECK(json_object_get(j, "trace_id") == NULL);
    json_decref(j);
    free(line);
}

static void test_invalid_utf8_stays_valid_json(void)
{
    char *line = NULL;
    const char *kv[] = {"bad", "\xff\xfe", NULL};
    CHECK(log_format(LOG_LEVEL_INFO, NULL, kv, &line, "bytes %s", "\xc3\x28") == 0);
    json_t *j = parse_line(line);
    CHECK(strcmp(json_string_value(json_object_get(j, "msg")), "bytes ?(") == 0);
    CHECK(json_string_value(json_object_get(j, "bad")) != NULL);
    json_decref(j);
    free(line);
}

static void test_trace_context(void)
{
    char buf[50];
    log_ctx ctx = {0};
    CHECK(log_ctx_from_traceparent(
              "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", buf,
              &ctx) == 0);
    CHECK(strcmp(ctx.trace_id, "0af7651916cd43dd8448eb211c80319c") == 0);
    CHECK(strcmp(ctx.span_id, "b7ad6b7169203331") == 0);
    log_ctx untouched = {"t", "s"};
    CHECK(log_ctx_from_traceparent("00-XYZ-b7ad6b7169203331-01", buf, &untouched) == -1);
    CHECK(log_ctx_from_traceparent(NULL, buf, &untouched) == -1);
    CHECK(strcmp(untouched.trace_id, "t") == 0);
    char *line = NULL;
    CHECK(log_format(LOG_LEVEL_ERROR, &ctx, NULL, &line, "traced") == 0);
    json_t *j = parse_line(line);
    CHECK(strcmp(json_string_value(json_object_get(j, "trace_id")), ctx.trace_id) == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "span_id")), ctx.span_id) == 0);
    json_decref(j);
    free(line);
}

static void test_levels_and_emit(void)
{
    log_level lv;
    CHECK(log_level_parse("DEBUG", &lv) == 0 && lv == LOG_LEVEL_DEBUG);
    CHECK(log_level_parse("warning", &lv) == 0 && lv == LOG_LEVEL_WARN);
    CHECK(log_level_parse("loud", &lv) == -1);
    int fds[2];
    CHECK(pipe(fds) == 0);
    log_set_fd(fds[1]);
    log_set_level(LOG_LEVEL_WARN);
    LOG_INFO("dropped");
    LOG_ERROR("kept %d", 1);
    log_set_fd(2);
    log_set_level(LOG_LEVEL_INFO);
    close(fds[1]);
    char buf[1024];
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    close(fds[0]);
    CHECK(n > 0);
    buf[n > 0 ? n : 0] = '\0';
    CHECK(strstr(buf, "dropped") == NULL);
    CHECK(strstr(buf, "\"msg\":\"kept 1\"") != NULL);
}

int main(void)
{
    RUN(test_escaping);
    RUN(test_invalid_utf8_stays_valid_json);
    RUN(test_trace_context);
    RUN(test_levels_and_emit);
    return TEST_EXIT();
}

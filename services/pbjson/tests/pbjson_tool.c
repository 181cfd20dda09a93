/*
 * pbjson_tool: a line protocol over pbjson for tests in other languages.
 * Each input line is "encode <type> <hex of protobuf bytes>" or
 * "decode <type> <JSON on one line>"; each answer is one line: the JSON, the
 * hex of the protobuf bytes, or "ERR <reason>".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/pbjson/pbjson.h"
#include "services/pbjson/registry.h"

#define LINE_MAX_BYTES (8u << 20)

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static void answer(char *line, const pbjson_options *o)
{
    char *verb = line, *type = strchr(line, ' '), *arg;
    if (type == NULL || (arg = strchr(type + 1, ' ')) == NULL) {
        printf("ERR bad request line\n");
        return;
    }
    *type++ = '\0';
    *arg++ = '\0';
    const ProtobufCMessageDescriptor *d = pbjson_registry_find(type);
    if (d == NULL) {
        printf("ERR unknown type %s\n", type);
        return;
    }
    if (strcmp(verb, "encode") == 0) {
        size_t n = strlen(arg) / 2;
        uint8_t *buf = malloc(n + 1);
        for (size_t i = 0; buf && i < n; i++) {
            int hi = hexval(arg[2 * i]), lo = hexval(arg[2 * i + 1]);
            buf[i] = (uint8_t)(hi << 4 | lo);
        }
        ProtobufCMessage *m = buf ? protobuf_c_message_unpack(d, NULL, n, buf) : NULL;
        char *json = NULL;
        int rc = m ? pbjson_encode(m, o, &json, NULL) : -1;
        if (rc == PBJSON_OK)
            printf("%s\n", json);
        else
            printf("ERR %s\n", m ? pbjson_strerror(rc) : "protobuf does not parse");
        free(json);
        if (m)
            protobuf_c_message_free_unpacked(m, NULL);
        free(buf);
    } else if (strcmp(verb, "decode") == 0) {
        ProtobufCMessage *m = NULL;
        char err[512];
        if (pbjson_decode(d, arg, strlen(arg), o, &m, err, sizeof(err)) != PBJSON_OK) {
            printf("ERR %s\n", err);
            return;
        }
        size_t n = protobuf_c_message_get_packed_size(m);
        uint8_t *buf = malloc(n + 1);
        if (buf != NULL) {
            protobuf_c_message_pack(m, buf);
            for (size_t i = 0; i < n; i++)
                printf("%02x", buf[i]);
        }
        printf("\n");
        free(buf);
        protobuf_c_message_free_unpacked(m, NULL);
    } else {
        printf("ERR unknown verb %s\n", verb);
    }
}

int main(void)
{
    pbjson_options o = {0, 0, 0, pbjson_registry_resolve, NULL};
    char *line = malloc(LINE_MAX_BYTES);
    if (line == NULL)
        return 1;
    while (fgets(line, (int)LINE_MAX_BYTES, stdin) != NULL) {
        size_t n = strlen(line);
        if (n > 0 && line[n - 1] == '\n')
            line[--n] = '\0';
        answer(line, &o);
        fflush(stdout);
    }
    free(line);
    return 0;
}

/* Unit test of page tokens: round trip, binding to kind and filters, and
 * refusal of malformed text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/query/query.h"

#define CHECK(c)                                                              \
    do {                                                                      \
        if (!(c)) {                                                           \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #c);                                                      \
            return 1;                                                         \
        }                                                                     \
    } while (0)

int main(void)
{
    uint8_t key[QS_KEY_CAP], back[QS_KEY_CAP];
    for (size_t len = 0; len < 40; len++) {
        for (size_t i = 0; i < len; i++)
            key[i] = (uint8_t)(i * 37 + len);
        char *t = NULL;
        size_t bl = 99;
        CHECK(qs_token_encode('t', 42, key, len, &t) == ES_OK);
        CHECK(qs_token_decode(t, 't', 42, back, sizeof back, &bl) == ES_OK);
        CHECK(bl == len && memcmp(back, key, len) == 0);
        CHECK(qs_token_decode(t, 'a', 42, back, sizeof back, &bl) == ES_INVALID);
        CHECK(qs_token_decode(t, 't', 43, back, sizeof back, &bl) == ES_INVALID);
        free(t);
    }
    size_t bl;
    CHECK(qs_token_decode("", 't', 1, back, sizeof back, &bl) == ES_OK && bl == 0);
    CHECK(qs_token_decode("!!!!", 't', 1, back, sizeof back, &bl) == ES_INVALID);
    CHECK(qs_token_decode("A", 't', 1, back, sizeof back, &bl) == ES_INVALID);
    CHECK(qs_token_decode("AAAA", 't', 1, back, sizeof back, &bl) == ES_INVALID);
    CHECK(qs_hash(0, "ab", 2) != qs_hash(0, "a", 1));
    CHECK(qs_hash(qs_hash(0, "ab", 2), "c", 1) !=
          qs_hash(qs_hash(0, "a", 1), "bc", 2));
    puts("token_test: ok");
    return 0;
}

/* libFuzzer driver for the decoders that face client input in memory-sync:
 * page tokens and cursors (and base64url under them). The first input byte
 * picks the namespace, the rest is the token text. Every decoded value must
 * encode back to the same text. Replayed over fuzz/corpus as a test. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "services/memory_sync/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const spaces[] = {"ns", "team-a", "x"};
    char text[1024], key[MS_KEY_MAX], again[MS_TOKEN_TEXT_MAX];
    uint8_t raw[1024];
    size_t n = 0;
    ms_cursor c;

    if (size == 0 || size > sizeof text)
        return 0;
    const char *ns = spaces[data[0] % 3];
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    if (ms_page_token_decode(ns, text, key, &n) == 0) {
        if (n == 0 || n > MS_KEY_MAX || ms_page_token_encode(ns, key, n, again) ||
            strcmp(again, text) != 0)
            abort();
    }
    if (ms_cursor_decode(ns, text, &c) == 0 && text[0]) {
        if (ms_cursor_encode(ns, &c, again) || strcmp(again, text) != 0)
            abort();
    }
    if (ms_b64url_decode((const char *)data, size, raw, sizeof raw, &n) == 0) {
        char *enc = malloc(size + 2);
        if (!enc)
            return 0;
        if (ms_b64url_encode(raw, n, enc, size + 2) ||
            memcmp(enc, data, size) != 0)
            abort();
        free(enc);
    }
    return 0;
}

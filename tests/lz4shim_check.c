/* Checks of the LZ4 shim (sim/lz4shim), built and run by tests/test_fst_shim.py.
 * Prints one line per failure and exits non-zero if any check failed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lz4.h"

static int failures;

#define CHECK(cond, ...)                                      \
    do {                                                      \
        if (!(cond)) {                                        \
            printf("FAIL line %d: ", __LINE__);               \
            printf(__VA_ARGS__);                              \
            printf("\n");                                     \
            failures++;                                       \
        }                                                     \
    } while (0)

/* Compress n pseudo-random bytes and decode them back. */
static void round_trip(int n) {
    char *src = malloc(n + 1), *dst = malloc(n + 1);
    int bound = LZ4_compressBound(n);
    char *packed = malloc(bound);
    for (int i = 0; i < n; i++) src[i] = (char)(rand() % 256);
    int c = LZ4_compress_default(src, packed, n, bound);
    CHECK(c > 0 && c <= bound, "n=%d: compressed size %d, bound %d", n, c, bound);
    CHECK(LZ4_compress_default(src, packed, n, c - 1) == 0, "n=%d: fits in %d bytes", n, c - 1);
    int d = LZ4_decompress_safe(packed, dst, c, n);
    CHECK(d == n && memcmp(src, dst, n) == 0, "n=%d: decoded %d bytes, differ", n, d);
    if (n > 0) CHECK(LZ4_decompress_safe(packed, dst, c, n - 1) < 0, "n=%d: fits in n-1 bytes", n);
    free(src);
    free(dst);
    free(packed);
}

/* Decode a hand-built block; expect `want` (NULL: expect a negative return). */
static void decode(const char *what, const unsigned char *block, int size, const char *want, int want_len) {
    char out[256];
    int d = LZ4_decompress_safe((const char *)block, out, size, sizeof out);
    if (want == NULL)
        CHECK(d < 0, "%s: accepted (returned %d)", what, d);
    else
        CHECK(d == want_len && memcmp(out, want, want_len) == 0, "%s: returned %d", what, d);
}

int main(void) {
    static const int sizes[] = {0, 1, 14, 15, 16, 17, 254, 255, 269, 270, 271, 524, 525, 1000, 65536};
    srand(12345);
    for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) round_trip(sizes[i]);
    for (int i = 0; i < 200; i++) round_trip(rand() % 5000);
    CHECK(LZ4_compressBound(-1) == 0 && LZ4_compressBound(LZ4_MAX_INPUT_SIZE + 1) == 0, "bound of bad sizes");

    /* Literal "abc", match offset 3 length 9 (overlapping), final literal "x". */
    static const unsigned char overlap[] = {0x35, 'a', 'b', 'c', 3, 0, 0x10, 'x'};
    decode("overlapping match", overlap, sizeof overlap, "abcabcabcabcx", 13);
    /* Literal "a", match offset 1 length 20 (nibble 15 + 1 extra byte): a run of 21 'a'; empty last literals. */
    static const unsigned char run[] = {0x1F, 'a', 1, 0, 1, 0x00};
    decode("offset-1 run", run, sizeof run, "aaaaaaaaaaaaaaaaaaaaa", 21);
    /* Literal "hello ", match offset 6 length 5 ("hello"), literals "!". */
    static const unsigned char copy[] = {0x61, 'h', 'e', 'l', 'l', 'o', ' ', 6, 0, 0x10, '!'};
    decode("plain match", copy, sizeof copy, "hello hello!", 12);
    /* 15 + 0 literals: the length byte 0 after nibble 15. */
    static const unsigned char lit15[] = {0xF0, 0, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o'};
    decode("15 literals", lit15, sizeof lit15, "abcdefghijklmno", 15);

    static const unsigned char truncated_literals[] = {0x50, 'a', 'b'};
    decode("truncated literals", truncated_literals, sizeof truncated_literals, NULL, 0);
    static const unsigned char truncated_length[] = {0xF0, 255};
    decode("truncated length bytes", truncated_length, sizeof truncated_length, NULL, 0);
    static const unsigned char truncated_offset[] = {0x10, 'a', 1};
    decode("truncated offset", truncated_offset, sizeof truncated_offset, NULL, 0);
    static const unsigned char before_start[] = {0x10, 'a', 2, 0, 0x00};
    decode("offset beyond start", before_start, sizeof before_start, NULL, 0);
    static const unsigned char offset_zero[] = {0x10, 'a', 0, 0, 0x00};
    decode("offset 0", offset_zero, sizeof offset_zero, NULL, 0);
    static const unsigned char no_last_literals[] = {0x10, 'a', 1, 0};
    decode("ends after a match", no_last_literals, sizeof no_last_literals, NULL, 0);
    static const unsigned char too_long[] = {0x1F, 'a', 1, 0, 255, 255, 0x00};
    decode("match past the output", too_long, sizeof too_long, NULL, 0);
    char out[4];
    CHECK(LZ4_decompress_safe((const char *)overlap, out, 0, sizeof out) < 0, "empty block accepted");

    if (failures == 0) printf("ok\n");
    return failures != 0;
}

/* Minimal LZ4 block codec for Verilator's FST writer; see lz4.h for why it exists.
 *
 * LZ4 block format: a series of sequences, each
 *   token (1 byte: literal length in the high nibble, match length - 4 in the low),
 *   [extra literal length bytes if the high nibble is 15: each adds its value; 255 continues],
 *   the literals,
 *   offset (2 bytes little-endian, 1..65535: how far back the match starts),
 *   [extra match length bytes if the low nibble is 15, same scheme].
 * The last sequence stops after its literals (no offset, no match).
 */
#include "lz4.h"

#include <stddef.h>
#include <string.h>

#define MIN_MATCH 4 /* a match length nibble of 0 means 4 bytes */
#define RUN_MASK 15 /* nibble value that says "more length bytes follow" */

int LZ4_compressBound(int inputSize) {
    if (inputSize < 0 || inputSize > LZ4_MAX_INPUT_SIZE) return 0;
    /* token + literals + one extension byte per 255 literals (+1 for the final one). */
    return inputSize + inputSize / 255 + 2;
}

int LZ4_compress_default(const char *src, char *dst, int srcSize, int dstCapacity) {
    /* One literal-only sequence holding the whole input. */
    if (srcSize < 0 || srcSize > LZ4_MAX_INPUT_SIZE || (srcSize > 0 && src == NULL) || dst == NULL)
        return 0;
    unsigned char *op = (unsigned char *)dst;
    unsigned char *const oend = op + (dstCapacity > 0 ? dstCapacity : 0);
    size_t rest = (size_t)srcSize;
    size_t needed = 1 + (rest >= RUN_MASK ? (rest - RUN_MASK) / 255 + 1 : 0) + rest;
    if (needed > (size_t)(oend - op)) return 0;

    if (rest < RUN_MASK) {
        *op++ = (unsigned char)(rest << 4);
    } else {
        *op++ = (unsigned char)(RUN_MASK << 4);
        rest -= RUN_MASK;
        for (; rest >= 255; rest -= 255) *op++ = 255;
        *op++ = (unsigned char)rest; /* ends the length, even when 0 */
    }
    if (srcSize > 0) memcpy(op, src, (size_t)srcSize);
    op += srcSize;
    return (int)(op - (unsigned char *)dst);
}

/* Read the extension bytes of a length whose nibble was RUN_MASK and add them to *len.
 * Fails (returns 0) if the input ends first or the length would exceed limit. */
static int read_length(const unsigned char **ip, const unsigned char *iend, size_t *len, size_t limit) {
    unsigned char b;
    do {
        if (*ip >= iend) return 0;
        b = *(*ip)++;
        *len += b;
        if (*len > limit) return 0;
    } while (b == 255);
    return 1;
}

int LZ4_decompress_safe(const char *src, char *dst, int compressedSize, int dstCapacity) {
    if (src == NULL || compressedSize <= 0 || dstCapacity < 0 || (dstCapacity > 0 && dst == NULL))
        return -1;
    const unsigned char *ip = (const unsigned char *)src;
    const unsigned char *const iend = ip + compressedSize;
    unsigned char *const ostart = (unsigned char *)dst;
    unsigned char *op = ostart;
    unsigned char *const oend = ostart + dstCapacity;

    for (;;) {
        if (ip >= iend) return -1; /* a block must end with a literal-only sequence */
        unsigned token = *ip++;

        size_t lit = token >> 4;
        if (lit == RUN_MASK && !read_length(&ip, iend, &lit, (size_t)(iend - ip))) return -2;
        if (lit > (size_t)(iend - ip)) return -2; /* literals run past the input */
        if (lit > (size_t)(oend - op)) return -3; /* output too small */
        memcpy(op, ip, lit);
        ip += lit;
        op += lit;
        if (ip == iend) return (int)(op - ostart); /* last sequence: literals only */

        if (iend - ip < 2) return -4; /* truncated offset */
        size_t offset = (size_t)ip[0] | ((size_t)ip[1] << 8);
        ip += 2;
        if (offset == 0 || offset > (size_t)(op - ostart)) return -5; /* before the output start */

        size_t match = token & RUN_MASK;
        if (match == RUN_MASK && !read_length(&ip, iend, &match, (size_t)(oend - op))) return -6;
        match += MIN_MATCH;
        if (match > (size_t)(oend - op)) return -3;
        /* Byte by byte: the match may overlap the bytes it produces (offset < length
         * repeats the last `offset` bytes, e.g. offset 1 is a run of one byte). */
        const unsigned char *from = op - offset;
        while (match--) *op++ = *from++;
    }
}

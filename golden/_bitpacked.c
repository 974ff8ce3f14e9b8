/* Bit-packed XNOR-popcount CPU inference of one W1A1 BEBERT member (docs/arithmetic.md).
 *
 * Why hand-written C: no library does binary BERT inference. BLAS and the ML runtimes
 * (torch, onnxruntime) multiply floats or 8-bit integers; none has a 1-bit XNOR-popcount GEMM,
 * a binary attention (XNOR scores, AND-mode context) or the project's integer LayerNorm. NumPy
 * (the golden model) has the popcount but runs one small temporary array per word step.
 * This file runs the same integer network as golden/infer.py (GoldenModel, W1A1 backbone) on
 * 64-bit words with popcounts (AVX2 nibble look-up or __builtin_popcountll), threaded with
 * OpenMP; golden/bitpacked.py builds it with cffi, checks inputs, and runs the pooler,
 * classifier and ensemble combine with the golden functions. Every result is an exact integer
 * equal to the golden model's (tests/test_bitpacked.py).
 *
 * Data layout (prepared once by golden/bitpacked.py):
 *   activations  (Tpad, nw) uint64 rows, bit k of a vector = bit k%64 of word k/64, padding zero;
 *   weights      interleaved (Ppad/4, nw, 4) uint64: word w of rows 4r..4r+3 side by side, so one
 *                256-bit load holds one word of four rows; padding rows zero (Ppad multiple of 8);
 *   codes        int64 (scales, biases, tables), thresholds int32, polarities uint8.
 * Tpad = T rounded up to a multiple of 4 (rows past T are computed and ignored).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __AVX2__
#include <immintrin.h>
#endif

/* BEGIN CDEF: the interface; golden/bitpacked.py hands this block to cffi's cdef (no preprocessor lines). */
typedef struct {
    int64_t hidden, heads, head_dim, ffn, layers, max_len;
    int64_t nw_h, nw_f, p_qkv, p_h, p_f; /* words per H / F vector; padded rows of each weight */
    int64_t score_thr;                  /* attention bit: score >= score_thr */
    /* align_add shifts: terms are shifted left by l*, the sum right by r, then clamped */
    int64_t emb_l_word, emb_l_tab, emb_r;
    int64_t dense_l_dot, dense_l_bias, dense_r;
    int64_t add_l_y, add_l_x, add_r;
    int64_t res_lo, res_hi;
    int64_t vec_ok; /* the AVX2 LayerNorm / residual path is exact for these formats (32-bit operands) */
    /* LayerNorm (section 6) */
    int64_t ln_mant, ln_pfrac, ln_rbits, ln_norm, ln_eps;
    int64_t ln_l_n, ln_l_b, ln_r, ln_lo, ln_hi;
} bb_config;

typedef struct {
    const uint64_t *qkv_w; const int64_t *qkv_thr; const uint8_t *qkv_pol; /* pol: one byte per 8 rows */
    const uint64_t *o_w; const int64_t *o_scale; const int64_t *o_bias;
    const int64_t *ln1_g; const int64_t *ln1_b;
    const uint64_t *f1_w; const int64_t *f1_thr; const uint8_t *f1_pol;
    const uint64_t *f2_w; const int64_t *f2_scale; const int64_t *f2_bias;
    const int64_t *ln2_g; const int64_t *ln2_b;
} bb_layer;

typedef struct {
    const uint64_t *word_bits; const int64_t *word_scale;
    const int64_t *position; const int64_t *token_type;
    const int64_t *emb_ln_g; const int64_t *emb_ln_b;
    const bb_layer *layers;
} bb_member;

int bb_has_avx2(void);
int bb_max_threads(void);
int bb_member_forward(const bb_config *c, const bb_member *mem, int64_t T, const int32_t *ids, const int32_t *pos,
                      const int32_t *types, int64_t nseq, const int64_t *seq_start, int64_t *x_out, int nthreads,
                      int kernel);
int bb_forward(const bb_config *c, const bb_member *mems, int64_t nmem, int64_t T, const int32_t *ids,
               const int32_t *pos, const int32_t *types, int64_t nseq, const int64_t *seq_start, int64_t *x_out,
               int nthreads, int kernel);
int bb_xnor_gemm(const uint64_t *a, int64_t tpad, int64_t nw, const uint64_t *wi, int64_t ppad, int64_t k,
                 int32_t *acc, int nthreads, int kernel);
/* END CDEF */

enum { BB_OK = 0, BB_LN_OVERFLOW = 1, BB_NOMEM = 2, BB_BAD_ARG = 3 };

int bb_has_avx2(void) {
#ifdef __AVX2__
    return 1;
#else
    return 0;
#endif
}

int bb_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static inline int64_t lsh(int64_t x, int64_t s) { return (int64_t)((uint64_t)x << s); } /* exact: no overflow */
static inline int64_t clamp(int64_t x, int64_t lo, int64_t hi) { return x < lo ? lo : (x > hi ? hi : x); }

/* ------------------------------------------------------------------------------------ GEMM */
/* cnt[t][p] = popcount(a[t] ^ w[p]) over nw words for a 4-token x 8-row tile (the caller
 * turns disagreements into the XNOR count K - cnt). */
static void tile_scalar(const uint64_t *a, int64_t nw, const uint64_t *wi, int64_t rb, int64_t cnt[4][8]) {
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 8; j++) cnt[i][j] = 0;
    const uint64_t *w0 = wi + rb * nw * 4, *w1 = wi + (rb + 1) * nw * 4;
    for (int64_t w = 0; w < nw; w++) {
        uint64_t wr[8] = {w0[4 * w], w0[4 * w + 1], w0[4 * w + 2], w0[4 * w + 3],
                          w1[4 * w], w1[4 * w + 1], w1[4 * w + 2], w1[4 * w + 3]};
        for (int i = 0; i < 4; i++) {
            uint64_t x = a[i * nw + w];
            for (int j = 0; j < 8; j++) cnt[i][j] += __builtin_popcountll(x ^ wr[j]);
        }
    }
}

#ifdef __AVX2__
static inline __m256i pop8(__m256i x, __m256i lut, __m256i low) {
    __m256i lo = _mm256_and_si256(x, low), hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low);
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

/* The AVX2 tile with its epilogue: y = K - popcount for 4 tokens x 8 rows; either the int32
 * counts into acc (rows of ldo ints, already offset to the tile), or the thresholded bits, one
 * byte per token (bits, rows of ldb bytes), bit = (thr > y) ^ pol. */
static inline __attribute__((always_inline)) void tile_avx2(const uint64_t *a, int64_t nw, const uint64_t *wi,
                                                            int64_t rb, int64_t k, int32_t *acc, int64_t ldo,
                                                            const int64_t *thr, unsigned polb, uint8_t *bits,
                                                            int64_t ldb) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
    const uint64_t *w0 = wi + rb * nw * 4, *w1 = wi + (rb + 1) * nw * 4;
    __m256i s[4][2];
    for (int i = 0; i < 4; i++) s[i][0] = s[i][1] = zero;
    for (int64_t w0i = 0; w0i < nw; w0i += 31) { /* byte counts hold 31 words (31 * 8 < 256) */
        int64_t we = w0i + 31 < nw ? w0i + 31 : nw;
        __m256i c00 = zero, c01 = zero, c10 = zero, c11 = zero, c20 = zero, c21 = zero, c30 = zero, c31 = zero;
        for (int64_t w = w0i; w < we; w++) {
            __m256i r0 = _mm256_loadu_si256((const __m256i *)(w0 + 4 * w));
            __m256i r1 = _mm256_loadu_si256((const __m256i *)(w1 + 4 * w));
            __m256i x0 = _mm256_set1_epi64x((long long)a[w]);
            __m256i x1 = _mm256_set1_epi64x((long long)a[nw + w]);
            __m256i x2 = _mm256_set1_epi64x((long long)a[2 * nw + w]);
            __m256i x3 = _mm256_set1_epi64x((long long)a[3 * nw + w]);
            c00 = _mm256_add_epi8(c00, pop8(_mm256_xor_si256(x0, r0), lut, low));
            c01 = _mm256_add_epi8(c01, pop8(_mm256_xor_si256(x0, r1), lut, low));
            c10 = _mm256_add_epi8(c10, pop8(_mm256_xor_si256(x1, r0), lut, low));
            c11 = _mm256_add_epi8(c11, pop8(_mm256_xor_si256(x1, r1), lut, low));
            c20 = _mm256_add_epi8(c20, pop8(_mm256_xor_si256(x2, r0), lut, low));
            c21 = _mm256_add_epi8(c21, pop8(_mm256_xor_si256(x2, r1), lut, low));
            c30 = _mm256_add_epi8(c30, pop8(_mm256_xor_si256(x3, r0), lut, low));
            c31 = _mm256_add_epi8(c31, pop8(_mm256_xor_si256(x3, r1), lut, low));
        }
        /* sum the 8 byte counts of each 64-bit lane: one count per row */
        s[0][0] = _mm256_add_epi64(s[0][0], _mm256_sad_epu8(c00, zero));
        s[0][1] = _mm256_add_epi64(s[0][1], _mm256_sad_epu8(c01, zero));
        s[1][0] = _mm256_add_epi64(s[1][0], _mm256_sad_epu8(c10, zero));
        s[1][1] = _mm256_add_epi64(s[1][1], _mm256_sad_epu8(c11, zero));
        s[2][0] = _mm256_add_epi64(s[2][0], _mm256_sad_epu8(c20, zero));
        s[2][1] = _mm256_add_epi64(s[2][1], _mm256_sad_epu8(c21, zero));
        s[3][0] = _mm256_add_epi64(s[3][0], _mm256_sad_epu8(c30, zero));
        s[3][1] = _mm256_add_epi64(s[3][1], _mm256_sad_epu8(c31, zero));
    }
    const __m256i kv = _mm256_set1_epi64x((long long)k);
    if (thr) {
        const __m256i t0 = _mm256_loadu_si256((const __m256i *)thr), t1 = _mm256_loadu_si256((const __m256i *)(thr + 4));
        for (int i = 0; i < 4; i++) {
            unsigned m = (unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(t0, _mm256_sub_epi64(kv, s[i][0]))))
                | ((unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(t1, _mm256_sub_epi64(kv, s[i][1]))))
                   << 4);
            bits[i * ldb] = (uint8_t)(m ^ polb);
        }
    } else {
        const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
        for (int i = 0; i < 4; i++) {
            __m256i lo = _mm256_permutevar8x32_epi32(_mm256_sub_epi64(kv, s[i][0]), even);
            __m256i hi = _mm256_permutevar8x32_epi32(_mm256_sub_epi64(kv, s[i][1]), even);
            _mm256_storeu_si256((__m256i *)(acc + i * ldo), _mm256_permute2x128_si256(lo, hi, 0x20));
        }
    }
}
#endif

/* Inside a parallel region (orphaned worksharing): XNOR counts y = K - popcount(a ^ w) of a
 * (tpad x nw) against the interleaved weights (ppad rows). With thr == NULL, acc[t * ppad + p] = y
 * (int32); otherwise packed output bits, bit p of row t of `bits` (ldb bytes per row) =
 * (y >= thr[p]) if pol[p] else (y < thr[p]), written a byte (one 8-row tile) at a time:
 * with gt = (thr > y), bit = gt ^ pol. */
static void xnor_gemm(const uint64_t *a, int64_t tpad, int64_t nw, const uint64_t *wi, int64_t ppad, int64_t k,
                      int32_t *acc, const int64_t *thr, const uint8_t *polbyte, uint8_t *bits, int64_t ldb,
                      int kernel) {
    (void)kernel;
    int64_t ntile = tpad / 4, nrt = ppad / 8;
#pragma omp for collapse(2) schedule(static)
    for (int64_t rt = 0; rt < nrt; rt++)
        for (int64_t tt = 0; tt < ntile; tt++) {
#ifdef __AVX2__
            if (kernel == 1) {
                tile_avx2(a + tt * 4 * nw, nw, wi, 2 * rt, k, acc ? acc + tt * 4 * ppad + rt * 8 : NULL, ppad,
                          thr ? thr + rt * 8 : NULL, thr ? polbyte[rt] : 0, bits ? bits + tt * 4 * ldb + rt : NULL, ldb);
                continue;
            }
#endif
            int64_t cnt[4][8];
            tile_scalar(a + tt * 4 * nw, nw, wi, 2 * rt, cnt);
            if (thr) {
                const int64_t *tr = thr + rt * 8;
                for (int i = 0; i < 4; i++) {
                    unsigned gt = 0;
                    for (int j = 0; j < 8; j++) gt |= (unsigned)(tr[j] > k - cnt[i][j]) << j;
                    bits[(tt * 4 + i) * ldb + rt] = (uint8_t)(gt ^ polbyte[rt]);
                }
            } else {
                for (int i = 0; i < 4; i++)
                    for (int j = 0; j < 8; j++) acc[(tt * 4 + i) * ppad + rt * 8 + j] = (int32_t)(k - cnt[i][j]);
            }
        }
}

/* Pack 0/1 bytes into nw little-endian words (bytes up to nw * 64 are read: padding must be zero). */
static void pack_bytes(const uint8_t *b, int64_t nw, uint64_t *out, int vec) {
    (void)vec;
    for (int64_t w = 0; w < nw; w++) {
        const uint8_t *p = b + 64 * w;
#ifdef __AVX2__
        if (vec) {
            __m256i zero = _mm256_setzero_si256();
            uint32_t lo = (uint32_t)_mm256_movemask_epi8(_mm256_cmpgt_epi8(_mm256_loadu_si256((const __m256i *)p), zero));
            uint32_t hi = (uint32_t)_mm256_movemask_epi8(
                _mm256_cmpgt_epi8(_mm256_loadu_si256((const __m256i *)(p + 32)), zero));
            out[w] = (uint64_t)lo | ((uint64_t)hi << 32);
            continue;
        }
#endif
        uint64_t v = 0;
        for (int i = 0; i < 64; i++) v |= (uint64_t)(p[i] & 1) << i;
        out[w] = v;
    }
}

/* Bits off .. off+len-1 (len <= 64) of a packed row, as the low bits of a word. */
static inline uint64_t get_bits(const uint64_t *row, int64_t off, int64_t len) {
    int64_t w = off >> 6, sh = off & 63;
    uint64_t v = row[w] >> sh;
    if (sh && sh + len > 64) v |= row[w + 1] << (64 - sh);
    return len == 64 ? v : v & ((UINT64_C(1) << len) - 1);
}

/* ------------------------------------------------------------------------------- LayerNorm */
#ifdef __AVX2__
/* Arithmetic right shift of int64 lanes (floor), which AVX2 lacks: ((x ^ m) >>> s) ^ m, m = x < 0. */
static inline __m256i sra64(__m256i x, __m128i cnt) {
    __m256i m = _mm256_cmpgt_epi64(_mm256_setzero_si256(), x);
    return _mm256_xor_si256(_mm256_srl_epi64(_mm256_xor_si256(x, m), cnt), m);
}
static inline __m256i clamp64(__m256i x, __m256i lo, __m256i hi) {
    x = _mm256_blendv_epi8(x, lo, _mm256_cmpgt_epi64(lo, x));
    return _mm256_blendv_epi8(x, hi, _mm256_cmpgt_epi64(x, hi));
}
#endif

/* golden.intops.layernorm on one token: s (H residual codes) -> x (layernorm codes) and the
 * packed sign bits (x >= 0) of x. Returns 1 when M reaches 2^62 (the golden model raises).
 * vec: the AVX2 path (32 x 32 -> 64-bit multiplies; the loader checks the operands fit). */
static int layernorm(const bb_config *c, const int64_t *restrict s, const int64_t *restrict g,
                     const int64_t *restrict b, int64_t *restrict x, uint64_t *restrict xb, int vec) {
    const int64_t h = c->hidden, nwh = c->nw_h, mant = c->ln_mant, pfrac = c->ln_pfrac, rbits = c->ln_rbits;
    const int64_t norm = c->ln_norm, eps = c->ln_eps, l_n = c->ln_l_n, l_b = c->ln_l_b, r_sh = c->ln_r;
    const int64_t lo = c->ln_lo, hi = c->ln_hi;
    int64_t sum = 0, sq = 0, i0 = 0;
    (void)vec;
#ifdef __AVX2__
    if (vec) {
        __m256i vs = _mm256_setzero_si256(), vq = vs;
        for (; i0 + 4 <= h; i0 += 4) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(s + i0));
            vs = _mm256_add_epi64(vs, v);
            vq = _mm256_add_epi64(vq, _mm256_mul_epi32(v, v));
        }
        int64_t t[4], u[4];
        _mm256_storeu_si256((__m256i *)t, vs);
        _mm256_storeu_si256((__m256i *)u, vq);
        sum = t[0] + t[1] + t[2] + t[3];
        sq = u[0] + u[1] + u[2] + u[3];
    }
#endif
    for (int64_t i = i0; i < h; i++) {
        sum += s[i];
        sq += s[i] * s[i];
    }
    int64_t v = h * sq - sum * sum, mm = v + eps;
    if (mm >= ((int64_t)1 << 62)) return 1;
    int64_t bl = mm > 0 ? 64 - __builtin_clzll((uint64_t)mm) : 0;
    int64_t sh = bl - mant;
    sh += sh & 1;
    int64_t m = sh >= 0 ? mm >> sh : lsh(mm, -sh);
    int64_t target = (int64_t)1 << (2 * pfrac), r = 0;
    for (int64_t bit = rbits - 1; bit >= 0; bit--) {
        int64_t t = r | ((int64_t)1 << bit);
        if (t * t * m <= target) r = t;
    }
    const int64_t nsh = pfrac + sh / 2 - norm; /* >= 0 (checked by the loader) */
    i0 = 0;
#ifdef __AVX2__
    if (vec) {
        const __m256i vh = _mm256_set1_epi64x(h), vsum = _mm256_set1_epi64x(sum), vr = _mm256_set1_epi64x(r);
        const __m256i vlo = _mm256_set1_epi64x(lo), vhi = _mm256_set1_epi64x(hi);
        const __m128i cn = _mm_cvtsi64_si128(nsh), cln = _mm_cvtsi64_si128(l_n), clb = _mm_cvtsi64_si128(l_b),
                      cr = _mm_cvtsi64_si128(r_sh);
        for (; i0 + 4 <= h; i0 += 4) {
            __m256i d = _mm256_sub_epi64(_mm256_mul_epi32(vh, _mm256_loadu_si256((const __m256i *)(s + i0))), vsum);
            __m256i n = sra64(_mm256_mul_epi32(d, vr), cn);
            __m256i y = _mm256_add_epi64(_mm256_sll_epi64(_mm256_mul_epi32(n, _mm256_loadu_si256((const __m256i *)(g + i0))), cln),
                                         _mm256_sll_epi64(_mm256_loadu_si256((const __m256i *)(b + i0)), clb));
            _mm256_storeu_si256((__m256i *)(x + i0), clamp64(sra64(y, cr), vlo, vhi));
        }
    }
#endif
    for (int64_t i = i0; i < h; i++) {
        int64_t n = ((h * s[i] - sum) * r) >> nsh;
        x[i] = clamp((lsh(n * g[i], l_n) + lsh(b[i], l_b)) >> r_sh, lo, hi);
    }
    for (int64_t w = 0; w < nwh; w++) {
        uint64_t word = 0;
        int64_t e = h - 64 * w < 64 ? h - 64 * w : 64;
        for (int64_t i = 0; i < e; i++) word |= (uint64_t)(x[64 * w + i] >= 0) << i;
        xb[w] = word;
    }
    return 0;
}

/* y = alpha * (2 acc - K) + bias, plus the residual x, then LayerNorm, for one token. */
static int dense_add_ln(const bb_config *c, const int32_t *restrict acc, int64_t k, const int64_t *restrict scale,
                        const int64_t *restrict bias, const int64_t *g, const int64_t *b, int64_t *restrict x,
                        uint64_t *xb, int64_t *restrict tmp, int vec) {
    const int64_t h = c->hidden, ld = c->dense_l_dot, lb = c->dense_l_bias, dr = c->dense_r;
    const int64_t ly = c->add_l_y, lx = c->add_l_x, ar = c->add_r, lo = c->res_lo, hi = c->res_hi;
    int64_t i0 = 0;
#ifdef __AVX2__
    if (vec) {
        const __m256i vk = _mm256_set1_epi64x(k), vlo = _mm256_set1_epi64x(lo), vhi = _mm256_set1_epi64x(hi);
        const __m128i cld = _mm_cvtsi64_si128(ld), clb = _mm_cvtsi64_si128(lb), cdr = _mm_cvtsi64_si128(dr),
                      cly = _mm_cvtsi64_si128(ly), clx = _mm_cvtsi64_si128(lx), car = _mm_cvtsi64_si128(ar);
        for (; i0 + 4 <= h; i0 += 4) {
            __m256i a2 = _mm256_slli_epi64(_mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)(acc + i0))), 1);
            __m256i dot = _mm256_mul_epi32(_mm256_loadu_si256((const __m256i *)(scale + i0)), _mm256_sub_epi64(a2, vk));
            __m256i y = _mm256_add_epi64(_mm256_sll_epi64(dot, cld),
                                         _mm256_sll_epi64(_mm256_loadu_si256((const __m256i *)(bias + i0)), clb));
            y = clamp64(sra64(y, cdr), vlo, vhi);
            __m256i z = _mm256_add_epi64(_mm256_sll_epi64(y, cly),
                                         _mm256_sll_epi64(_mm256_loadu_si256((const __m256i *)(x + i0)), clx));
            _mm256_storeu_si256((__m256i *)(tmp + i0), clamp64(sra64(z, car), vlo, vhi));
        }
    }
#endif
    for (int64_t i = i0; i < h; i++) {
        int64_t dot = scale[i] * (2 * (int64_t)acc[i] - k);
        int64_t y = clamp((lsh(dot, ld) + lsh(bias[i], lb)) >> dr, lo, hi);
        tmp[i] = clamp((lsh(y, ly) + lsh(x[i], lx)) >> ar, lo, hi);
    }
    return layernorm(c, tmp, g, b, x, xb, vec);
}

/* Inside a parallel region: dense_add_ln for tokens 0..T-1 (acc rows of p_h counts, x and xb rows of
 * the token); a LayerNorm overflow sets *err. */
static void dense_add_ln_rows(const bb_config *c, int64_t T, const int32_t *acc, int64_t k, const int64_t *scale,
                              const int64_t *bias, const int64_t *g, const int64_t *b, int64_t *x, uint64_t *xb,
                              int64_t *tmp, int vec, int *err) {
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; t++)
        if (dense_add_ln(c, acc + t * c->p_h, k, scale, bias, g, b, x + t * c->hidden, xb + t * c->nw_h, tmp, vec)) {
#pragma omp atomic write
            *err = BB_LN_OVERFLOW;
        }
}

/* ------------------------------------------------------------------------------- attention */
typedef struct { uint64_t *q, *k, *vt, *row; } attn_scratch;

/* One sequence (tokens t0 .. t0+n-1, all real), one head: Bi-Attention (section 8) from the
 * packed Q/K/V bits (rows of ldq words: Q, K, V of all heads side by side) into the context
 * bits (bytes, row stride ldc). Scratch: q, k (n4 x wd words, n4 = n rounded up to 4), vt
 * (wn x d4 words: word w of the value-bit column of each channel, d4 = d rounded up to 4), row
 * (wn words: the attention row A_i). vec: AVX2 (4 keys, 4 channels per step). */
static void attention_head(const bb_config *c, const uint64_t *qkv, int64_t ldq, int64_t t0, int64_t n,
                           int64_t head, uint8_t *ctx, int64_t ldc, attn_scratch *sc, int vec) {
    const int64_t d = c->head_dim, wd = (d + 63) / 64, wn = (n + 63) / 64, h = c->hidden, d4 = (d + 3) / 4 * 4;
    const int64_t lim = d - c->score_thr; /* attention bit iff disagreements <= lim */
    const int64_t n4 = (n + 3) / 4 * 4;
    (void)vec;
    uint64_t *q = sc->q, *k = sc->k, *vt = sc->vt, *row = sc->row;
    memset(vt, 0, sizeof(uint64_t) * d4 * wn);
    for (int64_t i = 0; i < n; i++) {
        const uint64_t *r = qkv + (t0 + i) * ldq;
        for (int64_t w = 0; w < wd; w++) {
            int64_t len = d - 64 * w < 64 ? d - 64 * w : 64;
            q[i * wd + w] = get_bits(r, head * d + 64 * w, len);
            k[i * wd + w] = get_bits(r, h + head * d + 64 * w, len);
            uint64_t v = get_bits(r, 2 * h + head * d + 64 * w, len);
            uint64_t *col = vt + (i >> 6) * d4 + 64 * w, bit = UINT64_C(1) << (i & 63);
            for (int64_t j = 0; j < len; j++)
                if ((v >> j) & 1) col[j] |= bit;
        }
    }
    for (int64_t i = n * wd; i < n4 * wd; i++) k[i] = 0;
    for (int64_t i = 0; i < n; i++) {
        const uint64_t *qi = q + i * wd;
        uint8_t *out = ctx + (t0 + i) * ldc + head * d;
#ifdef __AVX2__
        if (vec && wd == 1) {
            const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                                 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
            const __m256i low = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
            const __m256i qv = _mm256_set1_epi64x((long long)qi[0]), lv = _mm256_set1_epi64x(lim + 1);
            int64_t ones = 0;
            for (int64_t w = 0; w < wn; w++) { /* 64 keys per word, four per step */
                uint64_t word = 0;
                int64_t je = n4 - 64 * w < 64 ? n4 - 64 * w : 64;
                for (int64_t j = 0; j < je; j += 4) {
                    __m256i kv = _mm256_loadu_si256((const __m256i *)(k + 64 * w + j));
                    __m256i dis = _mm256_sad_epu8(pop8(_mm256_xor_si256(qv, kv), lut, low), zero);
                    word |= (uint64_t)_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(lv, dis))) << j;
                }
                if (n - 64 * w < 64) word &= (UINT64_C(1) << (n - 64 * w)) - 1; /* keys past n */
                row[w] = word;
                ones += __builtin_popcountll(word);
            }
            const __m256i lim2 = _mm256_set1_epi64x(ones - 1); /* bit iff 2 * both >= ones */
            for (int64_t j = 0; j < d; j += 4) {
                __m256i cnt = zero;
                for (int64_t w0 = 0; w0 < wn; w0 += 31) {
                    int64_t we = w0 + 31 < wn ? w0 + 31 : wn;
                    __m256i c8 = zero;
                    for (int64_t w = w0; w < we; w++)
                        c8 = _mm256_add_epi8(c8, pop8(_mm256_and_si256(_mm256_set1_epi64x((long long)row[w]),
                                                                       _mm256_loadu_si256((const __m256i *)(vt + w * d4 + j))),
                                                      lut, low));
                    cnt = _mm256_add_epi64(cnt, _mm256_sad_epu8(c8, zero));
                }
                unsigned m = (unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(
                    _mm256_cmpgt_epi64(_mm256_add_epi64(cnt, cnt), lim2)));
                for (int64_t e = 0; e < 4 && j + e < d; e++) out[j + e] = (uint8_t)((m >> e) & 1);
            }
            continue;
        }
#endif
        for (int64_t w = 0; w < wn; w++) row[w] = 0;
        for (int64_t j = 0; j < n; j++) {
            const uint64_t *kj = k + j * wd;
            int64_t dis = 0;
            for (int64_t w = 0; w < wd; w++) dis += __builtin_popcountll(qi[w] ^ kj[w]);
            row[j >> 6] |= (uint64_t)(dis <= lim) << (j & 63);
        }
        int64_t ones = 0;
        for (int64_t w = 0; w < wn; w++) ones += __builtin_popcountll(row[w]);
        for (int64_t j = 0; j < d; j++) {
            int64_t both = 0;
            for (int64_t w = 0; w < wn; w++) both += __builtin_popcountll(row[w] & vt[w * d4 + j]);
            out[j] = (uint8_t)(2 * both - ones >= 0);
        }
    }
}

/* ---------------------------------------------------------------------------------- member */
/* One member on T real tokens of nseq sequences (sequence s = tokens seq_start[s] ..
 * seq_start[s+1]-1, in order; pos = position index, types = token type). Writes the last
 * layer's LayerNorm output, (T, H) int64, to x_out. kernel: 1 = AVX2, 0 = scalar popcount. */
int bb_member_forward(const bb_config *c, const bb_member *mem, int64_t T, const int32_t *ids, const int32_t *pos,
                      const int32_t *types, int64_t nseq, const int64_t *seq_start, int64_t *x_out, int nthreads,
                      int kernel) {
    if (T < 1 || nseq < 1 || nthreads < 1) return BB_BAD_ARG;
#ifndef __AVX2__
    kernel = 0;
#endif
    int64_t h = c->hidden, f = c->ffn, nwh = c->nw_h, nwf = c->nw_f, tpad = (T + 3) / 4 * 4;
    int64_t nwq = (3 * h + 63) / 64, ld_ctx = nwh * 64;
    int64_t maxn = 0;
    for (int64_t s = 0; s < nseq; s++) {
        int64_t n = seq_start[s + 1] - seq_start[s];
        if (n < 1) return BB_BAD_ARG;
        if (n > maxn) maxn = n;
    }
    /* buffers; rows past T stay zero */
    uint64_t *xb = calloc((size_t)(tpad * nwh), 8), *cw = calloc((size_t)(tpad * nwh), 8),
             *fw = calloc((size_t)(tpad * nwf), 8), *qkv = calloc((size_t)(tpad * nwq), 8);
    int32_t *acc = calloc((size_t)(tpad * c->p_h), 4);
    uint8_t *cb = calloc((size_t)(tpad * ld_ctx), 1);
    int64_t *x = x_out;
    const int vec = kernel == 1 && c->vec_ok;
    int err = BB_OK;
    if (!xb || !cw || !fw || !acc || !qkv || !cb) err = BB_NOMEM;
    if (err == BB_OK) {
#pragma omp parallel num_threads(nthreads)
        {
            int64_t *tmp = malloc(sizeof(int64_t) * h);
            int64_t d = c->head_dim, wd = (d + 63) / 64, wn = (maxn + 63) / 64;
            int64_t np4 = (maxn + 3) / 4 * 4, d4 = (d + 3) / 4 * 4;
            attn_scratch sc = {malloc(8 * np4 * wd), malloc(8 * np4 * wd), malloc(8 * d4 * wn), malloc(8 * wn)};
            int mine = (!tmp || !sc.q || !sc.k || !sc.vt || !sc.row) ? BB_NOMEM : BB_OK;
            if (mine) {
#pragma omp atomic write
                err = mine;
            }
#pragma omp barrier
            int ok;
#pragma omp atomic read
            ok = err;
            ok = ok == BB_OK;
            /* embeddings + LayerNorm */
#pragma omp for schedule(static)
            for (int64_t t = 0; t < T; t++) {
                if (!ok) continue;
                const uint64_t *wb = mem->word_bits + (int64_t)ids[t] * nwh;
                int64_t a = mem->word_scale[ids[t]];
                const int64_t *pr = mem->position + (int64_t)pos[t] * h, *tr = mem->token_type + (int64_t)types[t] * h;
                for (int64_t i = 0; i < h; i++) {
                    int64_t word = ((wb[i >> 6] >> (i & 63)) & 1) ? a : -a;
                    tmp[i] = clamp((lsh(word, c->emb_l_word) + lsh(pr[i], c->emb_l_tab) + lsh(tr[i], c->emb_l_tab))
                                   >> c->emb_r, c->res_lo, c->res_hi);
                }
                if (layernorm(c, tmp, mem->emb_ln_g, mem->emb_ln_b, x + t * h, xb + t * nwh, vec)) {
#pragma omp atomic write
                    err = BB_LN_OVERFLOW;
                }
            }
            for (int64_t li = 0; li < c->layers && ok; li++) {
                const bb_layer *L = mem->layers + li;
                int e;
#pragma omp atomic read
                e = err;
                if (e != BB_OK) break; /* every thread reads err after the same barrier */
                xnor_gemm(xb, tpad, nwh, L->qkv_w, c->p_qkv, h, NULL, L->qkv_thr, L->qkv_pol, (uint8_t *)qkv, 8 * nwq,
                          kernel);
#pragma omp for collapse(2) schedule(dynamic, 1)
                for (int64_t s = 0; s < nseq; s++)
                    for (int64_t hd = 0; hd < c->heads; hd++)
                        attention_head(c, qkv, nwq, seq_start[s], seq_start[s + 1] - seq_start[s], hd, cb, ld_ctx,
                                       &sc, vec);
#pragma omp for schedule(static)
                for (int64_t t = 0; t < T; t++) pack_bytes(cb + t * ld_ctx, nwh, cw + t * nwh, kernel == 1);
                xnor_gemm(cw, tpad, nwh, L->o_w, c->p_h, h, acc, NULL, NULL, NULL, 0, kernel);
                dense_add_ln_rows(c, T, acc, h, L->o_scale, L->o_bias, L->ln1_g, L->ln1_b, x, xb, tmp, vec, &err);
                xnor_gemm(xb, tpad, nwh, L->f1_w, c->p_f, h, NULL, L->f1_thr, L->f1_pol, (uint8_t *)fw, 8 * nwf, kernel);
                xnor_gemm(fw, tpad, nwf, L->f2_w, c->p_h, f, acc, NULL, NULL, NULL, 0, kernel);
                dense_add_ln_rows(c, T, acc, f, L->f2_scale, L->f2_bias, L->ln2_g, L->ln2_b, x, xb, tmp, vec, &err);
            }
            free(tmp);
            free(sc.q);
            free(sc.k);
            free(sc.vt);
            free(sc.row);
        }
    }
    free(xb);
    free(cw);
    free(fw);
    free(acc);
    free(qkv);
    free(cb);
    return err;
}

static int64_t gcd(int64_t a, int64_t b) {
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* The members of an ensemble (mems[m], x_out + m * T * H). Threads go to members first
 * (g = gcd(M, nthreads) members at once, barrier-free: one member per thread for the shipped
 * 2-member ensemble on 2 threads), the rest of the threads split each member's ops. */
int bb_forward(const bb_config *c, const bb_member *mems, int64_t nmem, int64_t T, const int32_t *ids,
               const int32_t *pos, const int32_t *types, int64_t nseq, const int64_t *seq_start, int64_t *x_out,
               int nthreads, int kernel) {
    if (nmem < 1 || nthreads < 1) return BB_BAD_ARG;
    int64_t outer = gcd(nmem, nthreads), inner = nthreads / outer;
    int err = BB_OK;
    if (outer == 1) {
        for (int64_t m = 0; m < nmem && err == BB_OK; m++)
            err = bb_member_forward(c, mems + m, T, ids, pos, types, nseq, seq_start, x_out + m * T * c->hidden,
                                    (int)inner, kernel);
        return err;
    }
#ifdef _OPENMP
    if (inner > 1 && omp_get_max_active_levels() < 2) omp_set_max_active_levels(2);
#endif
#pragma omp parallel for num_threads((int)outer) schedule(static)
    for (int64_t m = 0; m < nmem; m++) {
        int e = bb_member_forward(c, mems + m, T, ids, pos, types, nseq, seq_start, x_out + m * T * c->hidden,
                                  (int)inner, kernel);
        if (e) {
#pragma omp atomic write
            err = e;
        }
    }
    return err;
}

/* The GEMM alone (for tests): acc (tpad x ppad) int32 XNOR counts over k bits. */
int bb_xnor_gemm(const uint64_t *a, int64_t tpad, int64_t nw, const uint64_t *wi, int64_t ppad, int64_t k,
                 int32_t *acc, int nthreads, int kernel) {
    if (tpad % 4 || ppad % 8 || nthreads < 1) return BB_BAD_ARG;
#ifndef __AVX2__
    kernel = 0;
#endif
#pragma omp parallel num_threads(nthreads)
    xnor_gemm(a, tpad, nw, wi, ppad, k, acc, NULL, NULL, NULL, 0, kernel);
    return BB_OK;
}

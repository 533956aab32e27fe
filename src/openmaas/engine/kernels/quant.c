/* Quantised weights times a few rows of activations on AVX2 CPUs: y[m, n] = x[m, k] . dequant(W)[n, k]^T
 * (+ b), m <= 4, fp32 activations and outputs, for the two formats of engine/quant.py:
 *
 *  - int8: W's values int8 [n, k]; int4: uint8 [n, k / 2], each run of 32 values in 16 bytes (byte j:
 *    value j in the low nibble, value j + 16 in the high one, stored + 8), as llama.cpp's Q4_0;
 *  - scales fp16 [n, k / group], group a multiple of 32 dividing k.
 *
 * Two ways to compute a block of 32 products, both here so they can be measured against each other
 * (`omaas_qmatmul`'s `variant`):
 *
 *  - Q8 (variant 0): each activation row is first quantised to int8 per run of 32 values (scale
 *    amax / 127, kept in fp32), and a block's 32 products are integer: |w| . sign(x, w) with
 *    _mm256_maddubs_epi16, pairs summed with _mm256_madd_epi16, then one int->float conversion and one
 *    FMA per block and row. This is llama.cpp's way on AVX2; it costs the activation rounding
 *    (relative error ~ 1/254 per run).
 *  - F32 (variant 1): the weights are widened to fp32 in registers (4 conversions per block) and
 *    multiplied into fp32 activations with 4 FMAs per block and row: exact products, about 3x the
 *    instructions per weight.
 *
 * As in gemv.c, each thread takes a contiguous range of output rows and reads its weight rows strictly
 * in order (one sequential stream per core); OpenMP's threads are PyTorch's own (libgomp).
 *
 * Built at run time by openmaas.engine.kernels.quant with -mavx2 -mfma -mf16c; without a compiler or
 * AVX2 the engine dequantises slices and multiplies with PyTorch.
 */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>

#define MAX_ROWS 4
#define RUN 32
#define FMT_INT8 0
#define FMT_INT4 1
#define INLINE static inline __attribute__((always_inline))

/* The 32 values of block b of a weight row, as int8 (int4: nibble - 8). */
INLINE __m256i load_block(const int fmt, const uint8_t *row, int64_t b) {
    if (fmt == FMT_INT8) return _mm256_loadu_si256((const __m256i *)(row + b * RUN));
    const __m128i packed = _mm_loadu_si128((const __m128i *)(row + b * (RUN / 2)));
    const __m256i both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
    return _mm256_sub_epi8(_mm256_and_si256(both, _mm256_set1_epi8(0x0f)), _mm256_set1_epi8(8));
}

INLINE float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

INLINE int64_t row_bytes(const int fmt, int64_t k) { return fmt == FMT_INT8 ? k : k / 2; }

/* ---- Q8: integer products against int8-quantised activations ---- */

/* x [m, k] -> xq int8 [m, k] and xd fp32 [m, k / 32]: per run of 32, scale amax / 127, values rounded
 * to nearest (ties to even, as _mm256_round_ps does). */
static void quantize_activations(const float *x, int8_t *xq, float *xd, int64_t m, int64_t k) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < m * (k / RUN); i++) {
        const float *src = x + i * RUN;
        __m256 v[4], amax = _mm256_setzero_ps();
        for (int j = 0; j < 4; j++) {
            v[j] = _mm256_loadu_ps(src + 8 * j);
            amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[j]));
        }
        __m128 a = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
        a = _mm_max_ps(a, _mm_movehl_ps(a, a));
        a = _mm_max_ss(a, _mm_movehdup_ps(a));
        const float d = _mm_cvtss_f32(a) / 127.0f;
        xd[i] = d;
        const __m256 inv = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
        __m256i q[4];
        for (int j = 0; j < 4; j++)
            q[j] = _mm256_cvtps_epi32(
                _mm256_round_ps(_mm256_mul_ps(v[j], inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        /* int32 -> int16 -> int8 packs interleave 128-bit lanes; the permute puts them back in order. */
        const __m256i lo = _mm256_packs_epi32(q[0], q[1]), hi = _mm256_packs_epi32(q[2], q[3]);
        const __m256i packed = _mm256_packs_epi16(lo, hi);
        const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        _mm256_storeu_si256((__m256i *)(xq + i * RUN), _mm256_permutevar8x32_epi32(packed, order));
    }
}

INLINE void rows_q8(const int fmt, const int M, const int8_t *xq, const float *xd, const uint8_t *w,
                    const uint16_t *scales, const float *bias, float *y, int64_t n, int64_t k, int64_t group,
                    int64_t r0, int64_t r1) {
    const int64_t nb = k / RUN, per_group = group / RUN, groups = k / group, stride = row_bytes(fmt, k);
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *wr = w + r * stride;
        const uint16_t *sr = scales + r * groups;
        __m256 acc[MAX_ROWS];
        for (int i = 0; i < M; i++) acc[i] = _mm256_setzero_ps();
        for (int64_t g = 0; g < groups; g++) {
            const float dw = _cvtsh_ss(sr[g]);
            for (int64_t b = g * per_group; b < (g + 1) * per_group; b++) {
                const __m256i v = load_block(fmt, wr, b);
                const __m256i magnitude = _mm256_sign_epi8(v, v);
                for (int i = 0; i < M; i++) {
                    const __m256i xi = _mm256_loadu_si256((const __m256i *)(xq + i * k + b * RUN));
                    const __m256i pairs = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(xi, v));
                    const __m256 sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
                    acc[i] = _mm256_fmadd_ps(sums, _mm256_set1_ps(dw * xd[i * nb + b]), acc[i]);
                }
            }
        }
        for (int i = 0; i < M; i++) y[i * n + r] = hsum(acc[i]) + (bias ? bias[r] : 0.0f);
    }
}

/* ---- F32: weights widened to fp32 in registers ---- */

INLINE void widen(__m256i v, __m256 out[4]) {
    const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
    out[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
    out[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
    out[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
    out[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
}

INLINE void rows_f32(const int fmt, const int M, const float *x, const uint8_t *w, const uint16_t *scales,
                     const float *bias, float *y, int64_t n, int64_t k, int64_t group, int64_t r0, int64_t r1) {
    const int64_t per_group = group / RUN, groups = k / group, stride = row_bytes(fmt, k);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *wr = w + r * stride;
        const uint16_t *sr = scales + r * groups;
        __m256 acc[MAX_ROWS];
        for (int i = 0; i < M; i++) acc[i] = _mm256_setzero_ps();
        for (int64_t g = 0; g < groups; g++) {
            /* Two chains per row: even and odd quarters of each block. */
            __m256 even[MAX_ROWS], odd[MAX_ROWS];
            for (int i = 0; i < M; i++) even[i] = odd[i] = _mm256_setzero_ps();
            for (int64_t b = g * per_group; b < (g + 1) * per_group; b++) {
                __m256 wf[4];
                widen(load_block(fmt, wr, b), wf);
                for (int i = 0; i < M; i++) {
                    const float *xi = x + i * k + b * RUN;
                    even[i] = _mm256_fmadd_ps(wf[0], _mm256_loadu_ps(xi), even[i]);
                    odd[i] = _mm256_fmadd_ps(wf[1], _mm256_loadu_ps(xi + 8), odd[i]);
                    even[i] = _mm256_fmadd_ps(wf[2], _mm256_loadu_ps(xi + 16), even[i]);
                    odd[i] = _mm256_fmadd_ps(wf[3], _mm256_loadu_ps(xi + 24), odd[i]);
                }
            }
            const __m256 dw = _mm256_set1_ps(_cvtsh_ss(sr[g]));
            for (int i = 0; i < M; i++) acc[i] = _mm256_fmadd_ps(_mm256_add_ps(even[i], odd[i]), dw, acc[i]);
        }
        for (int i = 0; i < M; i++) y[i * n + r] = hsum(acc[i]) + (bias ? bias[r] : 0.0f);
    }
}

/* One thread's rows, with the format and the row count as constants so each loop is fully unrolled and
 * its accumulators stay in registers. */
#define DISPATCH_M(CALL)                                                                                 \
    switch (m) {                                                                                         \
    case 1: CALL(1); break;                                                                              \
    case 2: CALL(2); break;                                                                              \
    case 3: CALL(3); break;                                                                              \
    default: CALL(4); break;                                                                             \
    }

static void thread_q8(int fmt, const int8_t *xq, const float *xd, const uint8_t *w, const uint16_t *s,
                      const float *bias, float *y, int64_t m, int64_t n, int64_t k, int64_t group, int64_t r0,
                      int64_t r1) {
#define Q8_INT8(M) rows_q8(FMT_INT8, M, xq, xd, w, s, bias, y, n, k, group, r0, r1)
#define Q8_INT4(M) rows_q8(FMT_INT4, M, xq, xd, w, s, bias, y, n, k, group, r0, r1)
    if (fmt == FMT_INT8) {
        DISPATCH_M(Q8_INT8)
    } else {
        DISPATCH_M(Q8_INT4)
    }
}

static void thread_f32(int fmt, const float *x, const uint8_t *w, const uint16_t *s, const float *bias,
                       float *y, int64_t m, int64_t n, int64_t k, int64_t group, int64_t r0, int64_t r1) {
#define F32_INT8(M) rows_f32(FMT_INT8, M, x, w, s, bias, y, n, k, group, r0, r1)
#define F32_INT4(M) rows_f32(FMT_INT4, M, x, w, s, bias, y, n, k, group, r0, r1)
    if (fmt == FMT_INT8) {
        DISPATCH_M(F32_INT8)
    } else {
        DISPATCH_M(F32_INT4)
    }
}

static int bad_shape(int fmt, int64_t m, int64_t n, int64_t k, int64_t group) {
    return (fmt != FMT_INT8 && fmt != FMT_INT4) || m < 1 || m > MAX_ROWS || n < 1 || k < RUN || group < RUN ||
           group % RUN || k % group;
}

/* x [m, k] fp32 contiguous, w / scales as above, bias fp32 [n] or NULL, y fp32 [m, n]. variant 0: Q8
 * activations, 1: fp32 activations. Returns 0, -1 on bad sizes, -2 when out of memory. */
int omaas_qmatmul(int fmt, int variant, const float *x, const uint8_t *w, const uint16_t *scales,
                  const float *bias, float *y, int64_t m, int64_t n, int64_t k, int64_t group, int threads) {
    if (bad_shape(fmt, m, n, k, group)) return -1;
    if (threads < 1) threads = 1;
    if (threads > n) threads = (int)n;
    int8_t *xq = NULL;
    float *xd = NULL;
    if (variant == 0) {
        xq = malloc((size_t)(m * k));
        xd = malloc(sizeof(float) * (size_t)(m * (k / RUN)));
        if (!xq || !xd) {
            free(xq);
            free(xd);
            return -2;
        }
        quantize_activations(x, xq, xd, m, k);
    }
#pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int64_t r0 = n * t / nt, r1 = n * (t + 1) / nt;
        if (variant == 0)
            thread_q8(fmt, xq, xd, w, scales, bias, y, m, n, k, group, r0, r1);
        else
            thread_f32(fmt, x, w, scales, bias, y, m, n, k, group, r0, r1);
    }
    free(xq);
    free(xd);
    return 0;
}

/* 8 fp32 -> 8 bf16 (in the low 16 bits of each int32 lane), rounded to nearest, ties to even, as
 * PyTorch's vectorised fp32 -> bf16 conversion (the one `copy_` takes) rounds: bits + 0x7fff + the
 * lowest kept bit, then the high half; a NaN becomes 0xffff, as there. */
INLINE __m256i to_bf16_bits(__m256 v) {
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    const __m256i bias = _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff));
    const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(bits, bias), 16);
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    return _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0xffff), nan);
}

/* The float weight of `rows` rows (w and scales pointing at the first) into out [rows, k]: fp32, or
 * (to_bf16) bf16, each value the fp32 one rounded as PyTorch rounds it. Inlined into the two entry
 * points with to_bf16 a constant, so each has one store path. */
INLINE int dequant_rows(const int to_bf16, int fmt, const uint8_t *w, const uint16_t *scales, void *out,
                        int64_t rows, int64_t k, int64_t group, int threads) {
    if (bad_shape(fmt, 1, rows, k, group)) return -1;
    if (threads < 1) threads = 1;
    const int64_t per_group = group / RUN, groups = k / group, stride = row_bytes(fmt, k);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t g = 0; g < groups; g++) {
            const __m256 dw = _mm256_set1_ps(_cvtsh_ss(scales[r * groups + g]));
            for (int64_t b = g * per_group; b < (g + 1) * per_group; b++) {
                __m256 wf[4];
                widen(fmt == FMT_INT8 ? load_block(FMT_INT8, w + r * stride, b)
                                      : load_block(FMT_INT4, w + r * stride, b),
                      wf);
                for (int j = 0; j < 4; j++) wf[j] = _mm256_mul_ps(wf[j], dw);
                if (!to_bf16) {
                    float *o = (float *)out + r * k + b * RUN;
                    for (int j = 0; j < 4; j++) _mm256_storeu_ps(o + 8 * j, wf[j]);
                    continue;
                }
                uint16_t *o = (uint16_t *)out + r * k + b * RUN;
                for (int j = 0; j < 4; j += 2) {
                    /* packus works per 128-bit lane: the permute puts the 16 values back in order. */
                    const __m256i packed = _mm256_packus_epi32(to_bf16_bits(wf[j]), to_bf16_bits(wf[j + 1]));
                    _mm256_storeu_si256((__m256i *)(o + 8 * j), _mm256_permute4x64_epi64(packed, 0xd8));
                }
            }
        }
    }
    return 0;
}

/* out fp32 [rows, k]. */
int omaas_qdequant(int fmt, const uint8_t *w, const uint16_t *scales, float *out, int64_t rows, int64_t k,
                   int64_t group, int threads) {
    return dequant_rows(0, fmt, w, scales, out, rows, k, group, threads);
}

/* out bf16 [rows, k], without an fp32 copy of the slice (the engine's bf16 matmuls of prefill read it). */
int omaas_qdequant_bf16(int fmt, const uint8_t *w, const uint16_t *scales, uint16_t *out, int64_t rows,
                        int64_t k, int64_t group, int threads) {
    return dequant_rows(1, fmt, w, scales, out, rows, k, group, threads);
}

int omaas_qmatmul_max_rows(void) { return MAX_ROWS; }

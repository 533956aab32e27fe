/* Quantised weights times a few rows of activations on AVX-512 VNNI CPUs: y[m, n] = x[m, k] .
 * dequant(W)[n, k]^T (+ b), m <= 16, activations and outputs in the model's dtype (bf16 or fp32), for the
 * two formats of engine/quant.py:
 *
 *  - int8: W's values int8 [n, k]; int4: uint8 [n, k / 2], each run of 32 values in 16 bytes (byte j:
 *    value j in the low nibble, value j + 16 in the high one, stored + 8), as llama.cpp's Q4_0;
 *  - scales fp16 [n, k / group], group a multiple of 32 dividing k.
 *
 * As llama.cpp does (and quant.c's variant 0 on AVX2), each activation row is first quantised to int8
 * per run of 32 values (scale amax / 127 in fp32, values rounded to nearest even), so a run's 32
 * products are integer and exact: vpdpbusd (_mm512_dpbusd_epi32) multiplies unsigned by signed bytes and
 * sums each four into an int32 lane.
 *
 *  - int8: 64 weight bytes (two runs) per vector; the weight's magnitude is the unsigned operand and its
 *    sign moves onto the activation (a masked negate), as _mm256_sign_epi8 does on AVX2.
 *  - int4: 64 packed bytes (four runs) per vector, split into the low and high nibbles (0..15, the value
 *    + 8) as two unsigned operands; the activations are laid out to match (per four runs: the first
 *    sixteen values of each run, then the last sixteen), and the + 8 is taken back exactly in integer
 *    by starting each run's sum at -8 x (the sum of its quantised activations).
 *
 * Each run's int32 sum becomes fp32 once and is multiplied by its two scales (weight and activation)
 * into one fp32 accumulator per row; the bias is added in fp32 and a bf16 output rounded to nearest
 * even, as gemv.c does. As in gemv.c, each thread takes a contiguous range of output rows and reads its
 * weight rows strictly in order: one sequential stream per core. One pass over the weights takes up to
 * four activation rows (the accumulators stay in registers); a call of 5-16 rows (a decode step of that
 * many sequences) takes each thread's weight rows in blocks small enough to stay in L1/L2 and runs the
 * rows over each block in tiles of four, so the weights still stream from memory once per call. Each
 * output is summed in the same order whatever m and the tiling: a row of an m-row call equals the same
 * row computed alone, bit for bit.
 *
 * The quantised activations of a matmul are one record per row (omaas_qact_row_bytes): the int8 values
 * in the format's order, then each run's activation scale spread over its lanes, then (int4) each run's
 * starting sum. They are made in units of 128 values, which threads can split (layer.c does).
 *
 * Compiled into the AVX-512 library (openmaas.engine.kernels) with -mavx512vnni where the CPU has it;
 * elsewhere quant.c's AVX2 kernel (or dequantise-and-matmul) runs instead.
 */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>

#include "kernels.h"

#define MAX_ROWS 4       /* activation rows one pass over the weights takes (and layer.c's limit) */
#define MAX_CALL_ROWS 16 /* activation rows omaas_qgemv takes: tiles of MAX_ROWS over cached weights */
#ifndef BLOCK_BYTES
#define BLOCK_BYTES (32 << 10)
#endif
#define RUN 32
#define UNIT 128 /* activation values per quantisation unit: four runs, one int4 weight vector */
#define FMT_INT8 0
#define FMT_INT4 1
#define INLINE static inline __attribute__((always_inline))

static inline int64_t padded(int64_t k) { return (k + UNIT - 1) / UNIT * UNIT; }

/* One row's record: kp int8 values, kp / 4 fp32 scales (16 lanes per 64 int8 values, int8; per 128
 * values, int4), kp / 8 int32 starting sums (int4). */
int64_t omaas_qact_row_bytes(int64_t k) { return padded(k) / 2 * 5; }
int64_t omaas_qact_units(int64_t k) { return padded(k) / UNIT; }

static inline __m512 load32_as_f32(const bf16_t *p, int half) {
    return _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p + 16 * half))), 16));
}
static inline __m512 load32_as_f32_f(const f32_t *p, int half) { return _mm512_loadu_ps(p + 16 * half); }

/* Quantise units [u0, u1) of x [m, k] (unit u: row u / units, values (u % units) * 128 ...) into the
 * records at qa. Values past k are zero. */
#define DEFINE_QUANTIZE(T, LOAD)                                                                            \
    void omaas_qquantize_##T(int fmt, const T##_t *x, uint8_t *qa, int64_t k, int64_t u0, int64_t u1) {    \
        const int64_t units = omaas_qact_units(k), kp = padded(k), rec = omaas_qact_row_bytes(k);           \
        for (int64_t u = u0; u < u1; u++) {                                                                 \
            const int64_t r = u / units, j = u % units;                                                     \
            int8_t *q = (int8_t *)(qa + r * rec);                                                           \
            float *dxv = (float *)(qa + r * rec + kp);                                                      \
            int32_t *init = (int32_t *)(qa + r * rec + kp + kp);                                            \
            float d[4];                                                                                     \
            int32_t s[4];                                                                                   \
            for (int b = 0; b < 4; b++) {                                                                   \
                const int64_t c = j * UNIT + b * RUN;                                                       \
                __m128i lo = _mm_setzero_si128(), hi = lo;                                                  \
                d[b] = 0.0f;                                                                                \
                s[b] = 0;                                                                                   \
                if (c < k) {                                                                                \
                    const __m512 v0 = LOAD(x + r * k + c, 0), v1 = LOAD(x + r * k + c, 1);                  \
                    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1))); \
                    d[b] = amax / 127.0f;                                                                   \
                    const __m512 inv = _mm512_set1_ps(d[b] != 0.0f ? 1.0f / d[b] : 0.0f);                   \
                    const __m512i q0 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v0, inv),                     \
                                                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); \
                    const __m512i q1 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v1, inv),                     \
                                                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); \
                    s[b] = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));                               \
                    lo = _mm512_cvtsepi32_epi8(q0);                                                         \
                    hi = _mm512_cvtsepi32_epi8(q1);                                                         \
                }                                                                                           \
                if (fmt == FMT_INT8) {                                                                      \
                    _mm_storeu_si128((__m128i *)(q + c), lo);                                               \
                    _mm_storeu_si128((__m128i *)(q + c + 16), hi);                                          \
                } else {                                                                                    \
                    _mm_storeu_si128((__m128i *)(q + j * UNIT + b * 16), lo);                               \
                    _mm_storeu_si128((__m128i *)(q + j * UNIT + 64 + b * 16), hi);                          \
                }                                                                                           \
            }                                                                                               \
            if (fmt == FMT_INT8) {                                                                          \
                const __m512 pair0 = _mm512_set_ps(d[1], d[1], d[1], d[1], d[1], d[1], d[1], d[1], d[0], d[0], \
                                                   d[0], d[0], d[0], d[0], d[0], d[0]);                     \
                const __m512 pair1 = _mm512_set_ps(d[3], d[3], d[3], d[3], d[3], d[3], d[3], d[3], d[2], d[2], \
                                                   d[2], d[2], d[2], d[2], d[2], d[2]);                     \
                _mm512_storeu_ps(dxv + j * 32, pair0);                                                      \
                _mm512_storeu_ps(dxv + j * 32 + 16, pair1);                                                 \
            } else {                                                                                        \
                _mm512_storeu_ps(dxv + j * 16, _mm512_set_ps(d[3], d[3], d[3], d[3], d[2], d[2], d[2], d[2], \
                                                             d[1], d[1], d[1], d[1], d[0], d[0], d[0], d[0])); \
                _mm512_storeu_si512(init + j * 16, _mm512_set_epi32(0, 0, 0, -8 * s[3], 0, 0, 0, -8 * s[2], \
                                                                    0, 0, 0, -8 * s[1], 0, 0, 0, -8 * s[0])); \
            }                                                                                               \
        }                                                                                                   \
    }

DEFINE_QUANTIZE(bf16, load32_as_f32)
DEFINE_QUANTIZE(f32, load32_as_f32_f)

/* One weight row's scales as fp32, one per run, zero past the row (ws holds padded(k) / 32 + 16). */
INLINE void run_scales(const uint16_t *sr, float *ws, int64_t k, int64_t group) {
    const int64_t runs = k / RUN, slots = padded(k) / RUN;
    if (group == RUN) {
        for (int64_t b = 0; b < slots; b += 16) {
            const int64_t left = runs - b;
            const __mmask16 m = left >= 16 ? (__mmask16)0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
            _mm512_storeu_ps(ws + b, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, sr + b)));
        }
    } else {
        for (int64_t b = 0; b < runs; b++) ws[b] = _cvtsh_ss(sr[b * RUN / group]);
        for (int64_t b = runs; b < slots; b++) ws[b] = 0.0f;
    }
}

INLINE void store_out_bf16(bf16_t *y, float s, const bf16_t *b) { *y = to_bf16(s + (b ? from_bf16(*b) : 0.0f)); }
INLINE void store_out_f32(f32_t *y, float s, const f32_t *b) { *y = s + (b ? *b : 0.0f); }

/* Weight rows [r0, r1) against M quantised activation rows; the format and M are constants at each
 * call so the loops unroll and the accumulators stay in registers. */
#define DEFINE_QROWS(T)                                                                                     \
    INLINE void qrows_##T(const int fmt, const int M, const uint8_t *qa, const uint8_t *w,                 \
                          const uint16_t *scales, const T##_t *bias, T##_t *y, int64_t n, int64_t k,        \
                          int64_t group, int64_t r0, int64_t r1) {                                          \
        const int64_t runs = k / RUN, groups = k / group, stride = fmt == FMT_INT8 ? k : k / 2;             \
        const int64_t kp = padded(k), rec = omaas_qact_row_bytes(k);                                        \
        float ws[kp / RUN + 16];                                                                            \
        const __m512i idx2 = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);              \
        const __m512i idx4 = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);              \
        const __m512i zero = _mm512_setzero_si512(), nibble = _mm512_set1_epi8(0x0f);                       \
        for (int64_t r = r0; r < r1; r++) {                                                                 \
            const uint8_t *wr = w + r * stride;                                                             \
            run_scales(scales + r * groups, ws, k, group);                                                  \
            __m512 acc[MAX_ROWS];                                                                           \
            for (int i = 0; i < M; i++) acc[i] = _mm512_setzero_ps();                                       \
            if (fmt == FMT_INT8) {                                                                          \
                for (int64_t v = 0; 2 * v < runs; v++) {                                                    \
                    const __m512i wv = 2 * v + 1 < runs                                                     \
                                           ? _mm512_loadu_si512(wr + v * 64)                                \
                                           : _mm512_maskz_loadu_epi8(0xffffffffull, wr + v * 64);           \
                    const __m512i magnitude = _mm512_abs_epi8(wv);                                          \
                    const __mmask64 negative = _mm512_movepi8_mask(wv);                                     \
                    const __m512 dw =                                                                       \
                        _mm512_permutexvar_ps(idx2, _mm512_castps128_ps512(_mm_loadu_ps(ws + 2 * v)));      \
                    for (int i = 0; i < M; i++) {                                                           \
                        const uint8_t *qi = qa + i * rec;                                                   \
                        __m512i xv = _mm512_loadu_si512(qi + v * 64);                                       \
                        xv = _mm512_mask_sub_epi8(xv, negative, zero, xv);                                  \
                        const __m512 sums = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(zero, magnitude, xv));   \
                        const __m512 dx = _mm512_loadu_ps((const float *)(qi + kp) + v * 16);               \
                        acc[i] = _mm512_fmadd_ps(_mm512_mul_ps(sums, dx), dw, acc[i]);                      \
                    }                                                                                       \
                }                                                                                           \
            } else {                                                                                        \
                for (int64_t u = 0; 4 * u < runs; u++) {                                                    \
                    const int64_t left = runs - 4 * u;                                                      \
                    const __m512i wv = left >= 4 ? _mm512_loadu_si512(wr + u * 64)                          \
                                                 : _mm512_maskz_loadu_epi8((1ull << (16 * left)) - 1, wr + u * 64); \
                    const __m512i lo = _mm512_and_si512(wv, nibble);                                        \
                    const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(wv, 4), nibble);                  \
                    const __m512 dw =                                                                       \
                        _mm512_permutexvar_ps(idx4, _mm512_castps128_ps512(_mm_loadu_ps(ws + 4 * u)));      \
                    for (int i = 0; i < M; i++) {                                                           \
                        const uint8_t *qi = qa + i * rec;                                                   \
                        __m512i s = _mm512_loadu_si512((const int32_t *)(qi + 2 * kp) + u * 16);            \
                        s = _mm512_dpbusd_epi32(s, lo, _mm512_loadu_si512(qi + u * UNIT));                  \
                        s = _mm512_dpbusd_epi32(s, hi, _mm512_loadu_si512(qi + u * UNIT + 64));             \
                        const __m512 dx = _mm512_loadu_ps((const float *)(qi + kp) + u * 16);               \
                        acc[i] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(s), dx), dw, acc[i]);     \
                    }                                                                                       \
                }                                                                                           \
            }                                                                                               \
            for (int i = 0; i < M; i++)                                                                     \
                store_out_##T(y + i * n + r, _mm512_reduce_add_ps(acc[i]), bias ? bias + r : 0);           \
        }                                                                                                   \
    }

DEFINE_QROWS(bf16)
DEFINE_QROWS(f32)

#define QCASE(T, F, M)                                                                                      \
    case M: qrows_##T(F, M, qa, w, scales, bias, y, n, k, group, r0, r1); break;

/* Weight rows per block of a 5-16 row call: each block (about BLOCK_BYTES of weights, at least one row)
 * is read from memory once and stays in L1/L2 while each tile of up to four activation rows takes it. */
static inline int64_t weight_block_rows(int fmt, int64_t k) {
    const int64_t row = fmt == FMT_INT8 ? k : k / 2, rows = BLOCK_BYTES / row;
    return rows > 0 ? rows : 1;
}

/* y rows [r0, r1) of x . dequant(W)^T (+ bias) from x's quantised records qa (m <= 4 rows). */
#define DEFINE_QGEMV(T)                                                                                     \
    void omaas_qgemv_rows_##T(int fmt, const uint8_t *qa, const uint8_t *w, const uint16_t *scales,         \
                              const T##_t *bias, T##_t *y, int64_t m, int64_t n, int64_t k, int64_t group,  \
                              int64_t r0, int64_t r1) {                                                     \
        if (fmt == FMT_INT8) {                                                                              \
            switch (m) { QCASE(T, FMT_INT8, 1) QCASE(T, FMT_INT8, 2) QCASE(T, FMT_INT8, 3) default: QCASE(T, FMT_INT8, 4) } \
        } else {                                                                                            \
            switch (m) { QCASE(T, FMT_INT4, 1) QCASE(T, FMT_INT4, 2) QCASE(T, FMT_INT4, 3) default: QCASE(T, FMT_INT4, 4) } \
        }                                                                                                   \
    }                                                                                                       \
    /* x [m, k] contiguous, w / scales as above, bias [n] or NULL, y [m, n]; returns 0, -1 on bad sizes,   \
     * -2 when out of memory. */                                                                            \
    int omaas_qgemv_##T(int fmt, const T##_t *x, const uint8_t *w, const uint16_t *scales, const T##_t *bias, \
                        T##_t *y, int64_t m, int64_t n, int64_t k, int64_t group, int threads) {            \
        if (omaas_qbad_shape(fmt, m, n, k, group)) return -1;                                               \
        if (threads < 1) threads = 1;                                                                       \
        if (threads > n) threads = (int)n;                                                                  \
        uint8_t *qa = aligned_alloc(64, (size_t)(m * omaas_qact_row_bytes(k)));                             \
        if (!qa) return -2;                                                                                 \
        const int64_t units = m * omaas_qact_units(k), rec = omaas_qact_row_bytes(k);                       \
        const int64_t block = weight_block_rows(fmt, k);                                                    \
        _Pragma("omp parallel num_threads(threads)") {                                                      \
            const int t = omp_get_thread_num(), nt = omp_get_num_threads();                                \
            const int64_t r0 = n * t / nt, r1 = n * (t + 1) / nt;                                           \
            omaas_qquantize_##T(fmt, x, qa, k, units * t / nt, units * (t + 1) / nt);                       \
            _Pragma("omp barrier")                                                                          \
            if (m <= MAX_ROWS) {                                                                            \
                omaas_qgemv_rows_##T(fmt, qa, w, scales, bias, y, m, n, k, group, r0, r1);                  \
            } else {                                                                                        \
                for (int64_t b = r0; b < r1; b += block) {                                                  \
                    const int64_t e = b + block < r1 ? b + block : r1;                                      \
                    for (int64_t i = 0; i < m; i += MAX_ROWS)                                               \
                        omaas_qgemv_rows_##T(fmt, qa + i * rec, w, scales, bias, y + i * n,                 \
                                             m - i < MAX_ROWS ? m - i : MAX_ROWS, n, k, group, b, e);       \
                }                                                                                           \
            }                                                                                               \
        }                                                                                                   \
        free(qa);                                                                                           \
        return 0;                                                                                           \
    }

int omaas_qbad_shape(int fmt, int64_t m, int64_t n, int64_t k, int64_t group) {
    return (fmt != FMT_INT8 && fmt != FMT_INT4) || m < 1 || m > MAX_CALL_ROWS || n < 1 || k < RUN || group < RUN ||
           group % RUN || k % group;
}

DEFINE_QGEMV(bf16)
DEFINE_QGEMV(f32)

int omaas_qgemv_max_rows(void) { return MAX_CALL_ROWS; }

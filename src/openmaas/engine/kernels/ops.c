/* The small per-layer operations of a decode step, each one call instead of several PyTorch ops.
 *
 * At batch 1 a Qwen2.5-0.5B decode step spent about a third of its time outside the matmuls, in ~800
 * small PyTorch ops (RMSNorm alone is eight ops, each a few microseconds of dispatch for 896 values).
 * These functions do the same arithmetic in one pass each and round where PyTorch rounds, so outputs
 * agree with PyTorch's eager ops to rounding (RoPE bit for bit; RMSNorm up to the order of its fp32 sum of
 * squares; attention to fp32 rounding, with its own exp):
 *
 *  - omaas_add_rmsnorm: h += delta (rounded to the model's dtype), then out = w * dtype(h * rsqrt(mean(h^2)
 *    + eps)), with the sum of squares and the scaling in fp32, as transformers' RMSNorm does.
 *  - omaas_rope: in-place rotate-half RoPE of q and k heads: x * cos + swap(x) * sin_signed with both
 *    tables cast to the model's dtype first and each product rounded, as `rotate_` in llama.py does.
 *  - omaas_silu_mul: the MLP's SiLU gate, F.silu(gate) * up; omaas_argmax: the greedy pick over a
 *    vocabulary-wide row, split over the threads (PyTorch's max(dim) runs on one).
 *  - omaas_decode_attention: one query token per sequence against its context in the paged KV cache,
 *    read in place through the slot table (no gather copy); the query heads sharing a KV head are done
 *    together so each key and value is read once; an online softmax over blocks of positions, in fp32.
 *
 * Compiled with -ffp-contract=off so that no a * b + c is fused where PyTorch rounds the product.
 */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"

/* Load / store 16 values as fp32 lanes, masked. */
static inline __m512 load16_bf16(const bf16_t *p, __mmask16 m) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}
static inline __m512 load16_f32(const f32_t *p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
/* Round-to-nearest-even of 16 fp32 lanes to bf16 (NaN quieted), as to_bf16 does per value. */
static inline __m512 round16_bf16(__m512 v) {
    __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x400000));
    return _mm512_castsi512_ps(_mm512_and_si512(r, _mm512_set1_epi32((int)0xffff0000u)));
}
static inline __m512 round16_f32(__m512 v) { return v; }
static inline void store16_bf16(bf16_t *p, __mmask16 m, __m512 v) {
    _mm256_mask_storeu_epi16(p, m, _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(round16_bf16(v)), 16)));
}
static inline void store16_f32(f32_t *p, __mmask16 m, __m512 v) { _mm512_mask_storeu_ps(p, m, v); }

#define MASK16(left) ((left) >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (left)) - 1))

/* ---- add + RMSNorm ---- */

#define DEFINE_ADD_RMSNORM(T)                                                                               \
    void omaas_add_rmsnorm_row_##T(T##_t *h, const T##_t *delta, const T##_t *w, T##_t *out, int64_t n,    \
                                   float eps) {                                                             \
        __m512 ss = _mm512_setzero_ps();                                                                    \
        for (int64_t c = 0; c < n; c += 16) {                                                               \
            const __mmask16 m = MASK16(n - c);                                                              \
            __m512 v = load16_##T(h + c, m);                                                                \
            if (delta) {                                                                                    \
                v = round16_##T(_mm512_add_ps(v, load16_##T(delta + c, m)));                                \
                store16_##T(h + c, m, v);                                                                   \
            }                                                                                               \
            ss = _mm512_add_ps(ss, _mm512_mul_ps(v, v));                                                    \
        }                                                                                                   \
        const float inv = 1.0f / sqrtf(_mm512_reduce_add_ps(ss) / (float)n + eps);                          \
        const __m512 scale = _mm512_set1_ps(inv);                                                           \
        for (int64_t c = 0; c < n; c += 16) {                                                               \
            const __mmask16 m = MASK16(n - c);                                                              \
            const __m512 normed = round16_##T(_mm512_mul_ps(load16_##T(h + c, m), scale));                  \
            store16_##T(out + c, m, _mm512_mul_ps(load16_##T(w + c, m), normed));                           \
        }                                                                                                   \
    }                                                                                                       \
    void omaas_add_rmsnorm_##T(T##_t *h, const T##_t *delta, const T##_t *w, T##_t *out, int64_t rows,     \
                               int64_t n, float eps, int threads) {                                         \
        if (rows < 2 * threads) threads = 1;                                                                \
        _Pragma("omp parallel for num_threads(threads) schedule(static)")                                   \
        for (int64_t r = 0; r < rows; r++)                                                                  \
            omaas_add_rmsnorm_row_##T(h + r * n, delta ? delta + r * n : 0, w, out + r * n, n, eps);        \
    }

DEFINE_ADD_RMSNORM(bf16)
DEFINE_ADD_RMSNORM(f32)

/* ---- RoPE ----
 * x: [tokens, heads, d] with token stride `stride` (elements) and head stride d; cos / sin_signed: fp32
 * tables [positions, d]; x[i] = x[i] * cos[i] + x[(i + d/2) % d] * sin_signed[i], tables and both
 * products rounded to T. */
#define DEFINE_ROPE(T)                                                                                      \
    void omaas_rope_token_##T(T##_t *x, int64_t pos, const float *cos_table, const float *sin_table,       \
                              int64_t heads, int64_t d) {                                                   \
        const int64_t half = d / 2;                                                                         \
        const float *cs = cos_table + pos * d, *sn = sin_table + pos * d;                                   \
        for (int64_t hd = 0; hd < heads; hd++) {                                                            \
            T##_t *v = x + hd * d;                                                                          \
            for (int64_t c = 0; c < half; c += 16) {                                                        \
                const __mmask16 m = MASK16(half - c);                                                       \
                const __m512 lo = load16_##T(v + c, m), hi = load16_##T(v + half + c, m);                   \
                const __m512 c0 = round16_##T(_mm512_maskz_loadu_ps(m, cs + c));                            \
                const __m512 c1 = round16_##T(_mm512_maskz_loadu_ps(m, cs + half + c));                     \
                const __m512 s0 = round16_##T(_mm512_maskz_loadu_ps(m, sn + c));                            \
                const __m512 s1 = round16_##T(_mm512_maskz_loadu_ps(m, sn + half + c));                     \
                const __m512 new_lo = round16_##T(_mm512_add_ps(round16_##T(_mm512_mul_ps(lo, c0)),         \
                                                                round16_##T(_mm512_mul_ps(hi, s0))));       \
                const __m512 new_hi = round16_##T(_mm512_add_ps(round16_##T(_mm512_mul_ps(hi, c1)),         \
                                                                round16_##T(_mm512_mul_ps(lo, s1))));       \
                store16_##T(v + c, m, new_lo);                                                              \
                store16_##T(v + half + c, m, new_hi);                                                       \
            }                                                                                               \
        }                                                                                                   \
    }                                                                                                       \
    void omaas_rope_##T(T##_t *x, const int64_t *positions, const float *cos_table, const float *sin_table, \
                        int64_t tokens, int64_t heads, int64_t d, int64_t stride, int threads) {            \
        if (tokens < 2 * threads) threads = 1;                                                              \
        _Pragma("omp parallel for num_threads(threads) schedule(static)")                                   \
        for (int64_t t = 0; t < tokens; t++)                                                                \
            omaas_rope_token_##T(x + t * stride, positions[t], cos_table, sin_table, heads, d);            \
    }

DEFINE_ROPE(bf16)
DEFINE_ROPE(f32)

/* e^x for 16 lanes (Cephes' expf polynomial on x - n ln2, scaled by 2^n; ~1 ulp), clamped to fp32's
 * range. */
static inline __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.3f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

static inline float get_bf16(const bf16_t *p) { return from_bf16(*p); }
static inline float get_f32(const f32_t *p) { return *p; }

/* ---- decode attention ----
 * q: [seqs, heads, d] with token stride q_stride; cache: [slots, 2, kv_heads, d] (keys at 0, values at
 * 1); slots: [seqs, max_ctx] int64 (valid up to lengths[s]); out: [seqs, heads, d] contiguous.
 * Work items are (sequence, kv head); each does its `group` query heads over the context in blocks of
 * BLOCK positions with an online softmax:
 *  - the block's keys and values are converted to fp32 once, into scratch that stays in L1;
 *  - scores: per query head, sixteen positions at a time, one accumulator each, summed across lanes
 *    together by a transpose-add tree (reduce16) instead of sixteen separate reductions;
 *  - values: per 16-wide slice of d, the query heads' output slices stay in registers (eight at a
 *    time) while every position's value slice is added in, scaled by its probability.
 * Scratch is on the stack (VLAs, at most ~90 KiB). Returns -1 unless d <= MAX_D and
 * group <= MAX_GROUP (the Python side checks a model against these before using it). */
#define BLOCK 32
#define MAX_D 256
#define MAX_GROUP 32

int omaas_attention_max_d(void) { return MAX_D; }
int omaas_attention_max_group(void) { return MAX_GROUP; }

static inline __attribute__((always_inline)) __m512 add_lo_hi(__m512 a, __m512 b) {
    return _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
}
static inline __attribute__((always_inline)) __m512 add_lo_hi_pd(__m512 a, __m512 b) {
    const __m512d x = _mm512_castps_pd(a), y = _mm512_castps_pd(b);
    return _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
}
static inline __attribute__((always_inline)) __m512 add_halves(__m512 a, __m512 b) {
    return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xdd));
}
/* Lane i of the result is the horizontal sum of a<i>. */
static inline __attribute__((always_inline)) __m512 reduce16(__m512 a0, __m512 a1, __m512 a2, __m512 a3,
                                                             __m512 a4, __m512 a5, __m512 a6, __m512 a7,
                                                             __m512 a8, __m512 a9, __m512 a10, __m512 a11,
                                                             __m512 a12, __m512 a13, __m512 a14, __m512 a15) {
    const __m512 t0 = add_lo_hi_pd(add_lo_hi(a0, a1), add_lo_hi(a2, a3));
    const __m512 t1 = add_lo_hi_pd(add_lo_hi(a4, a5), add_lo_hi(a6, a7));
    const __m512 t2 = add_lo_hi_pd(add_lo_hi(a8, a9), add_lo_hi(a10, a11));
    const __m512 t3 = add_lo_hi_pd(add_lo_hi(a12, a13), add_lo_hi(a14, a15));
    /* t<q> holds, per 128-bit lane, partial sums of a<4q..4q+3> in order; fold the lanes. */
    return add_halves(add_halves(t0, t1), add_halves(t2, t3));
}

#define X16(OP) OP(0) OP(1) OP(2) OP(3) OP(4) OP(5) OP(6) OP(7) OP(8) OP(9) OP(10) OP(11) OP(12) OP(13) OP(14) OP(15)
#define X8(OP) OP(0) OP(1) OP(2) OP(3) OP(4) OP(5) OP(6) OP(7)

/* Sixteen scores q . k[j] (j < count of the 16 rows of kf, row stride d). */
static inline __m512 scores16(const float *qf, const float *kf, int64_t count, int64_t d) {
#define S_DECL(i) __m512 s##i = _mm512_setzero_ps();
#define S_STEP(i) \
    if ((i) < count) s##i = _mm512_fmadd_ps(q, _mm512_maskz_loadu_ps(m, kf + (i) * d + c), s##i);
    X16(S_DECL)
    for (int64_t c = 0; c < d; c += 16) {
        const __mmask16 m = MASK16(d - c);
        const __m512 q = _mm512_maskz_loadu_ps(m, qf + c);
        X16(S_STEP)
    }
    return reduce16(s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15);
#undef S_DECL
#undef S_STEP
}

/* acc[g][c..c+16) += sum_j p[g][j] * vf[j][c..c+16) for heads g0..g0+gn (gn <= 8), j < count. */
static inline void add_values8(float *acc, const float *p, const float *vf, int64_t g0, int64_t gn, int64_t count,
                               int64_t c, int64_t d, __mmask16 m) {
#define A_LOAD(i) __m512 a##i = (i) < gn ? _mm512_maskz_loadu_ps(m, acc + (g0 + (i)) * d + c) : _mm512_setzero_ps();
#define A_STEP(i) \
    if ((i) < gn) a##i = _mm512_fmadd_ps(_mm512_set1_ps(p[(g0 + (i)) * BLOCK + j]), v, a##i);
#define A_STORE(i) \
    if ((i) < gn) _mm512_mask_storeu_ps(acc + (g0 + (i)) * d + c, m, a##i);
    X8(A_LOAD)
    for (int64_t j = 0; j < count; j++) {
        const __m512 v = _mm512_maskz_loadu_ps(m, vf + j * d + c);
        X8(A_STEP)
    }
    X8(A_STORE)
#undef A_LOAD
#undef A_STEP
#undef A_STORE
}

#define DEFINE_ATTENTION(T)                                                                                 \
    void omaas_attend_##T(const T##_t *q, const T##_t *cache, const int64_t *slots, int64_t length,        \
                          T##_t *out, int64_t group, int64_t kv_heads, int64_t kvh, int64_t d, float scale) {  \
        float qf[group * d], acc[group * d], mx[group], sum[group], p[group * BLOCK];                       \
        float kf[BLOCK * d], vf[BLOCK * d];                                                                 \
        for (int64_t g = 0; g < group; g++) {                                                               \
            for (int64_t c = 0; c < d; c++) {                                                               \
                qf[g * d + c] = get_##T(q + g * d + c) * scale;                                             \
                acc[g * d + c] = 0.0f;                                                                      \
            }                                                                                               \
            mx[g] = -INFINITY;                                                                              \
            sum[g] = 0.0f;                                                                                  \
        }                                                                                                   \
        const int64_t row = 2 * kv_heads * d; /* one slot */                                               \
        for (int64_t b0 = 0; b0 < length; b0 += BLOCK) {                                                    \
            const int64_t bn = length - b0 < BLOCK ? length - b0 : BLOCK;                                   \
            for (int64_t j = 0; j < bn; j++) {                                                              \
                const T##_t *k = cache + slots[b0 + j] * row + kvh * d, *v = k + kv_heads * d;              \
                for (int64_t c = 0; c < d; c += 16) {                                                       \
                    const __mmask16 m = MASK16(d - c);                                                      \
                    _mm512_mask_storeu_ps(kf + j * d + c, m, load16_##T(k + c, m));                         \
                    _mm512_mask_storeu_ps(vf + j * d + c, m, load16_##T(v + c, m));                         \
                }                                                                                           \
            }                                                                                               \
            for (int64_t g = 0; g < group; g++) {                                                           \
                float *pg = p + g * BLOCK;                                                                  \
                for (int64_t j = 0; j < bn; j += 16)                                                        \
                    _mm512_mask_storeu_ps(pg + j, MASK16(bn - j), scores16(qf + g * d, kf + j * d, bn - j, d)); \
                __m512 vmax = _mm512_set1_ps(mx[g]);                                                        \
                for (int64_t j = 0; j < bn; j += 16)                                                        \
                    vmax = _mm512_mask_max_ps(vmax, MASK16(bn - j), vmax, _mm512_maskz_loadu_ps(MASK16(bn - j), pg + j)); \
                const float bmax = _mm512_reduce_max_ps(vmax);                                              \
                const float rescale = expf(mx[g] - bmax); /* 0 on the first block (exp(-inf)) */           \
                if (rescale != 1.0f)                                                                        \
                    for (int64_t c = 0; c < d; c++) acc[g * d + c] *= rescale;                              \
                __m512 vsum = _mm512_setzero_ps();                                                          \
                for (int64_t j = 0; j < bn; j += 16) {                                                      \
                    const __mmask16 m = MASK16(bn - j);                                                     \
                    const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, pg + j), _mm512_set1_ps(bmax))); \
                    _mm512_mask_storeu_ps(pg + j, m, e);                                                    \
                    vsum = _mm512_mask_add_ps(vsum, m, vsum, e);                                            \
                }                                                                                           \
                sum[g] = sum[g] * rescale + _mm512_reduce_add_ps(vsum);                                     \
                mx[g] = bmax;                                                                               \
            }                                                                                               \
            for (int64_t c = 0; c < d; c += 16)                                                             \
                for (int64_t g0 = 0; g0 < group; g0 += 8)                                                   \
                    add_values8(acc, p, vf, g0, group - g0 < 8 ? group - g0 : 8, bn, c, d, MASK16(d - c));  \
        }                                                                                                   \
        for (int64_t g = 0; g < group; g++) {                                                               \
            const __m512 inv = _mm512_set1_ps(1.0f / sum[g]);                                               \
            for (int64_t c = 0; c < d; c += 16) {                                                           \
                const __mmask16 m = MASK16(d - c);                                                          \
                store16_##T(out + g * d + c, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, acc + g * d + c), inv)); \
            }                                                                                               \
        }                                                                                                   \
    }                                                                                                       \
    int omaas_decode_attention_##T(const T##_t *q, int64_t q_stride, const T##_t *cache, const int64_t *slots, \
                                   int64_t max_ctx, const int64_t *lengths, T##_t *out, int64_t seqs,       \
                                   int64_t heads, int64_t kv_heads, int64_t d, float scale, int threads) {  \
        const int64_t group = heads / kv_heads;                                                             \
        if (d > MAX_D || group > MAX_GROUP || group * kv_heads != heads) return -1;                         \
        const int64_t items = seqs * kv_heads;                                                              \
        if (items < threads) threads = (int)items;                                                          \
        _Pragma("omp parallel for num_threads(threads) schedule(dynamic, 1)")                               \
        for (int64_t it = 0; it < items; it++) {                                                            \
            const int64_t s = it / kv_heads, kvh = it % kv_heads;                                          \
            omaas_attend_##T(q + s * q_stride + kvh * group * d, cache, slots + s * max_ctx, lengths[s],    \
                             out + (s * heads + kvh * group) * d, group, kv_heads, kvh, d, scale);         \
        }                                                                                                   \
        return 0;                                                                                           \
    }

DEFINE_ATTENTION(bf16)
DEFINE_ATTENTION(f32)

/* ---- SiLU gate ----
 * gate_up: [rows, 2 * n] (gate, then up); out[r, i] = T(T(silu(gate)) * up): the SiLU in fp32 as
 * x / (1 + e^-x) and rounded to T, then the product rounded, as F.silu(gate) * up rounds. */
#define DEFINE_SILU_MUL(T)                                                                                  \
    void omaas_silu_mul_chunks_##T(const T##_t *gate_up, T##_t *out, int64_t n, int64_t c0, int64_t c1) {   \
        const int64_t chunks = (n + 15) / 16;                                                               \
        for (int64_t it = c0; it < c1; it++) {                                                              \
            const int64_t r = it / chunks, c = (it % chunks) * 16;                                          \
            const __mmask16 m = MASK16(n - c);                                                              \
            const __m512 g = load16_##T(gate_up + r * 2 * n + c, m);                                        \
            const __m512 u = load16_##T(gate_up + r * 2 * n + n + c, m);                                    \
            const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));                                  \
            const __m512 silu = round16_##T(_mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), e)));      \
            store16_##T(out + r * n + c, m, _mm512_mul_ps(silu, u));                                        \
        }                                                                                                   \
    }                                                                                                       \
    void omaas_silu_mul_##T(const T##_t *gate_up, T##_t *out, int64_t rows, int64_t n, int threads) {       \
        if (rows * n < 4096) threads = 1;                                                                   \
        const int64_t total = rows * ((n + 15) / 16);                                                       \
        _Pragma("omp parallel num_threads(threads)") {                                                      \
            const int t = omp_get_thread_num(), nt = omp_get_num_threads();                                 \
            omaas_silu_mul_chunks_##T(gate_up, out, n, total * t / nt, total * (t + 1) / nt);               \
        }                                                                                                   \
    }

DEFINE_SILU_MUL(bf16)
DEFINE_SILU_MUL(f32)

/* ---- greedy pick ----
 * out[r] = the first index of row r's largest value (NaN counts as largest, as torch.max does). A row
 * is split over the threads when there are fewer rows than threads. */
#define DEFINE_ARGMAX(T)                                                                                    \
    static void argmax_range_##T(const T##_t *x, int64_t a, int64_t b, float *best, int64_t *index) {       \
        __m512 vmax = _mm512_set1_ps(-INFINITY);                                                            \
        __m512i vidx = _mm512_set1_epi32(-1);                                                               \
        __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);             \
        __mmask16 nan = 0;                                                                                  \
        for (int64_t c = a; c < b; c += 16) {                                                               \
            const __mmask16 m = MASK16(b - c);                                                              \
            const __m512 v = load16_##T(x + c, m);                                                          \
            nan |= _mm512_mask_cmp_ps_mask(m, v, v, _CMP_UNORD_Q);                                          \
            const __mmask16 gt = _mm512_mask_cmp_ps_mask(m, v, vmax, _CMP_GT_OQ) |                          \
                                 (_mm512_cmpeq_epi32_mask(vidx, _mm512_set1_epi32(-1)) & m);                \
            vmax = _mm512_mask_mov_ps(vmax, gt, v);                                                         \
            vidx = _mm512_mask_mov_epi32(vidx, gt, _mm512_add_epi32(lane, _mm512_set1_epi32((int)(c - a)))); \
        }                                                                                                   \
        if (nan) { /* rare: the first NaN wins */                                                           \
            for (int64_t c = a; c < b; c++) {                                                               \
                const float v = get_##T(x + c);                                                             \
                if (v != v) {                                                                               \
                    *best = v;                                                                              \
                    *index = c;                                                                             \
                    return;                                                                                 \
                }                                                                                           \
            }                                                                                               \
        }                                                                                                   \
        const float top = _mm512_reduce_max_ps(vmax);                                                       \
        const __mmask16 at = _mm512_cmpeq_ps_mask(vmax, _mm512_set1_ps(top));                              \
        int32_t idx[16];                                                                                    \
        _mm512_storeu_si512(idx, vidx);                                                                     \
        int64_t first = INT64_MAX;                                                                          \
        for (int i = 0; i < 16; i++)                                                                        \
            if (((at >> i) & 1) && idx[i] >= 0 && idx[i] < first) first = idx[i];                          \
        *best = top;                                                                                        \
        *index = first == INT64_MAX ? -1 : a + first;                                                       \
    }                                                                                                       \
    void omaas_argmax_##T(const T##_t *x, int64_t *out, int64_t rows, int64_t n, int threads) {             \
        if (rows >= threads || n < 8192) {                                                                  \
            _Pragma("omp parallel for num_threads(rows >= threads ? threads : 1) schedule(static)")         \
            for (int64_t r = 0; r < rows; r++) {                                                            \
                float best;                                                                                 \
                argmax_range_##T(x + r * n, 0, n, &best, out + r);                                          \
            }                                                                                               \
            return;                                                                                         \
        }                                                                                                   \
        for (int64_t r = 0; r < rows; r++) {                                                                \
            float best[64];                                                                                 \
            int64_t index[64];                                                                              \
            const int nt = threads > 64 ? 64 : threads;                                                     \
            _Pragma("omp parallel num_threads(nt)")                                                         \
            {                                                                                               \
                const int t = omp_get_thread_num(), tn = omp_get_num_threads();                             \
                const int64_t a = n * t / tn / 16 * 16, b = t == tn - 1 ? n : n * (t + 1) / tn / 16 * 16;   \
                argmax_range_##T(x + r * n, a, b, &best[t], &index[t]);                                     \
                if (t == 0)                                                                                 \
                    for (int i = tn; i < nt; i++) index[i] = -1;                                            \
            }                                                                                               \
            int64_t pick = index[0];                                                                        \
            float top = best[0];                                                                            \
            for (int i = 1; i < nt; i++) {                                                                  \
                if (index[i] < 0 || top != top) continue;                                                   \
                if (best[i] > top || best[i] != best[i]) {                                                  \
                    top = best[i];                                                                          \
                    pick = index[i];                                                                        \
                }                                                                                           \
            }                                                                                               \
            out[r] = pick;                                                                                  \
        }                                                                                                   \
    }

DEFINE_ARGMAX(bf16)
DEFINE_ARGMAX(f32)

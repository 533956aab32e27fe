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

typedef uint16_t bf16_t;
typedef float f32_t;

static inline float bf16_to_f32(bf16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline bf16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

/* Load / store 16 values as fp32 lanes, masked. */
static inline __m512 load16_bf16(const bf16_t *p, __mmask16 m) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}
static inline __m512 load16_f32(const f32_t *p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
/* Round-to-nearest-even of 16 fp32 lanes to bf16 (NaN quieted), as f32_to_bf16 does per value. */
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
    static void add_rmsnorm_row_##T(T##_t *h, const T##_t *delta, const T##_t *w, T##_t *out, int64_t n,   \
                                    float eps) {                                                            \
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
            add_rmsnorm_row_##T(h + r * n, delta ? delta + r * n : 0, w, out + r * n, n, eps);              \
    }

DEFINE_ADD_RMSNORM(bf16)
DEFINE_ADD_RMSNORM(f32)

/* ---- RoPE ----
 * x: [tokens, heads, d] with token stride `stride` (elements) and head stride d; cos / sin_signed: fp32
 * tables [positions, d]; x[i] = x[i] * cos[i] + x[(i + d/2) % d] * sin_signed[i], tables and both
 * products rounded to T. */
#define DEFINE_ROPE(T)                                                                                      \
    void omaas_rope_##T(T##_t *x, const int64_t *positions, const float *cos_table, const float *sin_table, \
                        int64_t tokens, int64_t heads, int64_t d, int64_t stride, int threads) {            \
        const int64_t half = d / 2;                                                                         \
        if (tokens < 2 * threads) threads = 1;                                                              \
        _Pragma("omp parallel for num_threads(threads) schedule(static)")                                   \
        for (int64_t t = 0; t < tokens; t++) {                                                              \
            const float *cs = cos_table + positions[t] * d, *sn = sin_table + positions[t] * d;             \
            for (int64_t hd = 0; hd < heads; hd++) {                                                        \
                T##_t *v = x + t * stride + hd * d;                                                         \
                for (int64_t c = 0; c < half; c += 16) {                                                    \
                    const __mmask16 m = MASK16(half - c);                                                   \
                    const __m512 lo = load16_##T(v + c, m), hi = load16_##T(v + half + c, m);               \
                    const __m512 c0 = round16_##T(_mm512_maskz_loadu_ps(m, cs + c));                        \
                    const __m512 c1 = round16_##T(_mm512_maskz_loadu_ps(m, cs + half + c));                 \
                    const __m512 s0 = round16_##T(_mm512_maskz_loadu_ps(m, sn + c));                        \
                    const __m512 s1 = round16_##T(_mm512_maskz_loadu_ps(m, sn + half + c));                 \
                    const __m512 new_lo = round16_##T(_mm512_add_ps(round16_##T(_mm512_mul_ps(lo, c0)),     \
                                                                    round16_##T(_mm512_mul_ps(hi, s0))));   \
                    const __m512 new_hi = round16_##T(_mm512_add_ps(round16_##T(_mm512_mul_ps(hi, c1)),     \
                                                                    round16_##T(_mm512_mul_ps(lo, s1))));   \
                    store16_##T(v + c, m, new_lo);                                                          \
                    store16_##T(v + half + c, m, new_hi);                                                   \
                }                                                                                           \
            }                                                                                               \
        }                                                                                                   \
    }

DEFINE_ROPE(bf16)
DEFINE_ROPE(f32)

/* ---- decode attention ----
 * q: [seqs, heads, d] with token stride q_stride; cache: [slots, 2, kv_heads, d] (keys at 0, values at
 * 1); slots: [seqs, max_ctx] int64 (valid up to lengths[s]); out: [seqs, heads, d] contiguous.
 * Work items are (sequence, kv head); each does its `group` query heads over the context in blocks
 * of BLOCK positions with an online softmax, its scratch on the stack (VLAs). Returns -1 unless
 * d <= MAX_D and group <= MAX_GROUP (the Python side checks a model against these before using it). */
#define BLOCK 64
#define MAX_D 256
#define MAX_GROUP 32

int omaas_attention_max_d(void) { return MAX_D; }
int omaas_attention_max_group(void) { return MAX_GROUP; }

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

static inline float get_bf16(const bf16_t *p) { return bf16_to_f32(*p); }
static inline float get_f32(const f32_t *p) { return *p; }

#define DEFINE_ATTENTION(T)                                                                                 \
    static void attend_##T(const T##_t *q, const T##_t *cache, const int64_t *slots, int64_t length,       \
                           T##_t *out, int64_t group, int64_t kv_heads, int64_t kvh, int64_t d, float scale) { \
        float qf[group][d], acc[group][d], mx[group], sum[group], p[group][BLOCK]; /* <= 72 KiB */          \
        for (int64_t g = 0; g < group; g++) {                                                               \
            for (int64_t c = 0; c < d; c++) {                                                               \
                qf[g][c] = get_##T(q + g * d + c) * scale;                                                  \
                acc[g][c] = 0.0f;                                                                           \
            }                                                                                               \
            mx[g] = -INFINITY;                                                                              \
            sum[g] = 0.0f;                                                                                  \
        }                                                                                                   \
        const int64_t row = 2 * kv_heads * d; /* one slot */                                               \
        for (int64_t b0 = 0; b0 < length; b0 += BLOCK) {                                                    \
            const int64_t bn = length - b0 < BLOCK ? length - b0 : BLOCK;                                   \
            for (int64_t j = 0; j < bn; j++) {                                                              \
                const T##_t *k = cache + slots[b0 + j] * row + kvh * d;                                     \
                for (int64_t g = 0; g < group; g++) {                                                       \
                    __m512 s = _mm512_setzero_ps();                                                         \
                    for (int64_t c = 0; c < d; c += 16) {                                                   \
                        const __mmask16 m = MASK16(d - c);                                                  \
                        s = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, qf[g] + c), load16_##T(k + c, m), s);  \
                    }                                                                                       \
                    p[g][j] = _mm512_reduce_add_ps(s);                                                      \
                }                                                                                           \
            }                                                                                               \
            for (int64_t g = 0; g < group; g++) {                                                           \
                __m512 vmax = _mm512_set1_ps(mx[g]);                                                        \
                for (int64_t j = 0; j < bn; j += 16)                                                        \
                    vmax = _mm512_mask_max_ps(vmax, MASK16(bn - j), vmax, _mm512_maskz_loadu_ps(MASK16(bn - j), p[g] + j)); \
                const float bmax = _mm512_reduce_max_ps(vmax);                                              \
                const float rescale = expf(mx[g] - bmax); /* 0 on the first block (exp(-inf)) */           \
                for (int64_t c = 0; c < d; c++) acc[g][c] *= rescale;                                       \
                __m512 vsum = _mm512_setzero_ps();                                                          \
                for (int64_t j = 0; j < bn; j += 16) {                                                      \
                    const __mmask16 m = MASK16(bn - j);                                                     \
                    const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, p[g] + j), _mm512_set1_ps(bmax))); \
                    _mm512_mask_storeu_ps(p[g] + j, m, e);                                                  \
                    vsum = _mm512_mask_add_ps(vsum, m, vsum, e);                                            \
                }                                                                                           \
                sum[g] = sum[g] * rescale + _mm512_reduce_add_ps(vsum);                                     \
                mx[g] = bmax;                                                                               \
            }                                                                                               \
            for (int64_t j = 0; j < bn; j++) {                                                              \
                const T##_t *v = cache + slots[b0 + j] * row + (kv_heads + kvh) * d;                        \
                for (int64_t c = 0; c < d; c += 16) {                                                       \
                    const __mmask16 m = MASK16(d - c);                                                      \
                    const __m512 vv = load16_##T(v + c, m);                                                 \
                    for (int64_t g = 0; g < group; g++) {                                                   \
                        const __m512 a = _mm512_maskz_loadu_ps(m, acc[g] + c);                              \
                        _mm512_mask_storeu_ps(acc[g] + c, m, _mm512_fmadd_ps(_mm512_set1_ps(p[g][j]), vv, a)); \
                    }                                                                                       \
                }                                                                                           \
            }                                                                                               \
        }                                                                                                   \
        for (int64_t g = 0; g < group; g++) {                                                               \
            const __m512 inv = _mm512_set1_ps(1.0f / sum[g]);                                               \
            for (int64_t c = 0; c < d; c += 16) {                                                           \
                const __mmask16 m = MASK16(d - c);                                                          \
                store16_##T(out + g * d + c, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, acc[g] + c), inv));  \
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
            attend_##T(q + s * q_stride + kvh * group * d, cache, slots + s * max_ctx, lengths[s],          \
                       out + (s * heads + kvh * group) * d, group, kv_heads, kvh, d, scale);               \
        }                                                                                                   \
        return 0;                                                                                           \
    }

DEFINE_ATTENTION(bf16)
DEFINE_ATTENTION(f32)

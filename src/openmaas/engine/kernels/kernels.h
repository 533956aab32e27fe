/* What gemv.c and ops.c share with layer.c: the per-thread pieces of each kernel (no threading of their
 * own), so a decode layer can run them all inside one parallel region. bf16_t / f32_t are the element
 * types; every function comes in both. */
#ifndef OMAAS_KERNELS_H
#define OMAAS_KERNELS_H
#include <stdint.h>
#include <string.h>

typedef uint16_t bf16_t;
typedef float f32_t;

/* fp32 -> bf16, rounded to nearest even as PyTorch rounds (NaN stays a quiet NaN). */
static inline bf16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

static inline float from_bf16(bf16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

#define OMAAS_DECLARE(T)                                                                                    \
    /* y rows r0..r1 of x[m, k] . w[n, k]^T (+ bias), m <= 4 */                                            \
    void omaas_gemv_rows_##T(const T##_t *x, const T##_t *w, const T##_t *bias, T##_t *y, int64_t m,       \
                             int64_t n, int64_t k, int64_t r0, int64_t r1);                                \
    /* h += delta (if given); out = rmsnorm(h) * w, one row of n */                                        \
    void omaas_add_rmsnorm_row_##T(T##_t *h, const T##_t *delta, const T##_t *w, T##_t *out, int64_t n,    \
                                   float eps);                                                              \
    /* rotate one token's heads [heads, d] (contiguous) in place at position pos */                        \
    void omaas_rope_token_##T(T##_t *x, int64_t pos, const float *cos_table, const float *sin_table,       \
                              int64_t heads, int64_t d);                                                    \
    /* out = silu(gate) * up for chunks [c0, c1) of 16 values across rows of gate_up [rows, 2n] */        \
    void omaas_silu_mul_chunks_##T(const T##_t *gate_up, T##_t *out, int64_t n, int64_t c0, int64_t c1);   \
    /* one sequence's query heads of one KV head against its paged context */                              \
    void omaas_attend_##T(const T##_t *q, const T##_t *cache, const int64_t *slots, int64_t length,        \
                          T##_t *out, int64_t group, int64_t kv_heads, int64_t kvh, int64_t d, float scale);

OMAAS_DECLARE(bf16)
OMAAS_DECLARE(f32)

/* quant512.c (in the library only where the CPU has AVX-512 VNNI): quantised weights' matmul pieces. */
int64_t omaas_qact_row_bytes(int64_t k);
int64_t omaas_qact_units(int64_t k);
int omaas_qbad_shape(int fmt, int64_t m, int64_t n, int64_t k, int64_t group);
#define OMAAS_DECLARE_Q(T)                                                                                  \
    /* x's rows quantised per run of 32 into records qa, units [u0, u1) of 128 values */                   \
    void omaas_qquantize_##T(int fmt, const T##_t *x, uint8_t *qa, int64_t k, int64_t u0, int64_t u1);     \
    /* y rows r0..r1 of x[m, k] . dequant(w)[n, k]^T (+ bias) from x's records qa, m <= 4 */                \
    void omaas_qgemv_rows_##T(int fmt, const uint8_t *qa, const uint8_t *w, const uint16_t *scales,        \
                              const T##_t *bias, T##_t *y, int64_t m, int64_t n, int64_t k, int64_t group, \
                              int64_t r0, int64_t r1);

OMAAS_DECLARE_Q(bf16)
OMAAS_DECLARE_Q(f32)

#endif

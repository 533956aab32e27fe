/* One whole decoder layer of a decode step (1-4 sequences, one new token each) in one call.
 *
 * Run op by op from Python, a layer is ten kernel calls, each opening its own parallel region, plus
 * PyTorch's glue (views, the KV write, empty outputs, module calls): about 2 ms of a 23-30 ms bf16
 * Qwen2.5-0.5B step. Here the same pieces (kernels.h) run inside one parallel region, separated by
 * barriers:
 *
 *   x = rmsnorm(h += delta)            one thread (a few rows of `hidden` values)
 *   qkv = x . Wqkv^T + b               weight rows split over the threads
 *   rope(q, k); cache[slot] = k, v     one thread
 *   o = attention(q, cache)            (sequence, KV head) items over the threads
 *   a = o . Wo^T (+ b)                 split
 *   x = rmsnorm(h += a)                one thread
 *   gu = x . Wgu^T (+ b)               split
 *   act = silu(gate) * up              split
 *   delta_out = act . Wdown^T (+ b)    split
 *
 * Every value is computed by the same function, in the same order, as the op-by-op path, so the two
 * agree bit for bit (tested), and the op-by-op path stays the reference.
 *
 * Where the library is built with AVX-512 VNNI, omaas_decode_qlayer is the same body for a layer whose
 * four projections are quantised (int8 / int4, quant512.c): before each matmul the input rows are
 * quantised to int8 per run of 32 (units of 128 values split over the threads) and a barrier passes,
 * as omaas_qgemv does op by op, so it too agrees with the op-by-op path bit for bit.
 */
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"

/* A layer's parameters (biases may be NULL). */
typedef struct {
    const void *input_norm, *qkv_w, *qkv_b, *o_w, *o_b, *post_norm, *gate_up_w, *gate_up_b, *down_w, *down_b;
} omaas_layer;

/* The layer's sizes and the step's attention inputs. */
typedef struct {
    int64_t hidden, heads, kv_heads, head_dim, intermediate;
    float eps, scale;
} omaas_layer_shape;

/* One quantised projection: its values, fp16 scales, bias (may be NULL), format (0 int8, 1 int4) and
 * group size (quant512.c). */
typedef struct {
    const void *w, *scales, *bias;
    int64_t format, group;
} omaas_qproj;

/* A layer whose four projections are quantised. */
typedef struct {
    const void *input_norm, *post_norm;
    omaas_qproj qkv, o, gate_up, down;
} omaas_qlayer;

#define SPLIT(n) ((n) * t / nt), ((n) * (t + 1) / nt)

/* The layer's body, with STEP(T, proj, in, out, n, k) doing one projection's matmul (out rows SPLIT over
 * the threads, after a barrier that made `in` complete). */
#define DEFINE_LAYER_BODY(T, NAME, LAYER_T, EXTRA, STEP)                                                   \
    int NAME##_##T(const LAYER_T *L, const omaas_layer_shape *S, T##_t *h, const T##_t *delta,              \
                   T##_t *delta_out, T##_t *scratch, EXTRA T##_t *cache, const int64_t *slot_mapping,        \
                   const int64_t *ctx_slots, int64_t max_ctx, const int64_t *lengths, const int64_t *positions, \
                   const float *cos_table, const float *sin_table, int64_t m, int threads) {                \
        const int64_t H = S->hidden, heads = S->heads, kvh = S->kv_heads, d = S->head_dim;                  \
        const int64_t I = S->intermediate, group = heads / kvh, qkv_n = (heads + 2 * kvh) * d;              \
        if (m < 1 || m > 4 || group * kvh != heads) return -1;                                              \
        T##_t *x = scratch, *qkv = x + m * H, *o = qkv + m * qkv_n, *a = o + m * heads * d;                 \
        T##_t *gu = a + m * H, *act = gu + m * 2 * I;                                                       \
        const int64_t slot_row = 2 * kvh * d;                                                               \
        const int64_t chunks = m * ((I + 15) / 16);                                                         \
        _Pragma("omp parallel num_threads(threads)") {                                                      \
            const int t = omp_get_thread_num(), nt = omp_get_num_threads();                                 \
            if (t == 0)                                                                                     \
                for (int64_t r = 0; r < m; r++)                                                             \
                    omaas_add_rmsnorm_row_##T(h + r * H, delta ? delta + r * H : 0, L->input_norm,          \
                                              x + r * H, H, S->eps);                                        \
            _Pragma("omp barrier")                                                                          \
            STEP(T, qkv, x, qkv, qkv_n, H)                                                                  \
            _Pragma("omp barrier")                                                                          \
            if (t == 0)                                                                                     \
                for (int64_t r = 0; r < m; r++) {                                                           \
                    omaas_rope_token_##T(qkv + r * qkv_n, positions[r], cos_table, sin_table, heads + kvh, d); \
                    memcpy(cache + slot_mapping[r] * slot_row, qkv + r * qkv_n + heads * d,                 \
                           slot_row * sizeof(T##_t));                                                       \
                }                                                                                           \
            _Pragma("omp barrier")                                                                          \
            _Pragma("omp for schedule(dynamic, 1)")                                                         \
            for (int64_t it = 0; it < m * kvh; it++) {                                                      \
                const int64_t s = it / kvh, k = it % kvh;                                                   \
                omaas_attend_##T(qkv + s * qkv_n + k * group * d, cache, ctx_slots + s * max_ctx, lengths[s], \
                                 o + (s * heads + k * group) * d, group, kvh, k, d, S->scale);              \
            }                                                                                               \
            STEP(T, o, o, a, H, heads * d)                                                                  \
            _Pragma("omp barrier")                                                                          \
            if (t == 0)                                                                                     \
                for (int64_t r = 0; r < m; r++)                                                             \
                    omaas_add_rmsnorm_row_##T(h + r * H, a + r * H, L->post_norm, x + r * H, H, S->eps);    \
            _Pragma("omp barrier")                                                                          \
            STEP(T, gate_up, x, gu, 2 * I, H)                                                               \
            _Pragma("omp barrier")                                                                          \
            omaas_silu_mul_chunks_##T(gu, act, I, SPLIT(chunks));                                           \
            _Pragma("omp barrier")                                                                          \
            STEP(T, down, act, delta_out, H, I)                                                             \
        }                                                                                                   \
        return 0;                                                                                           \
    }

/* Float weights: gemv.c's rows. */
#define FLOAT_STEP(T, P, IN, OUT, N, K) omaas_gemv_rows_##T(IN, L->P##_w, L->P##_b, OUT, m, N, K, SPLIT(N));
#define NO_EXTRA
DEFINE_LAYER_BODY(bf16, omaas_decode_layer, omaas_layer, NO_EXTRA, FLOAT_STEP)
DEFINE_LAYER_BODY(f32, omaas_decode_layer, omaas_layer, NO_EXTRA, FLOAT_STEP)

#ifdef __AVX512VNNI__
/* Quantised weights: the input's rows quantised (units split over the threads) into qa, a barrier, then
 * quant512.c's rows; qa holds m records of the widest input (omaas_qact_row_bytes). */
#define QUANT_STEP(T, P, IN, OUT, N, K)                                                                     \
    omaas_qquantize_##T((int)L->P.format, IN, qa, K, SPLIT(m * omaas_qact_units(K)));                       \
    _Pragma("omp barrier")                                                                                  \
    omaas_qgemv_rows_##T((int)L->P.format, qa, L->P.w, L->P.scales, L->P.bias, OUT, m, N, K, L->P.group, SPLIT(N));
#define QA_PARAM uint8_t *qa,
DEFINE_LAYER_BODY(bf16, omaas_decode_qlayer, omaas_qlayer, QA_PARAM, QUANT_STEP)
DEFINE_LAYER_BODY(f32, omaas_decode_qlayer, omaas_qlayer, QA_PARAM, QUANT_STEP)
#endif

/* Scratch elements omaas_decode_layer needs for m rows. */
int64_t omaas_decode_layer_scratch(const omaas_layer_shape *S, int64_t m) {
    const int64_t qkv_n = (S->heads + 2 * S->kv_heads) * S->head_dim;
    return m * (2 * S->hidden + qkv_n + S->heads * S->head_dim + 3 * S->intermediate);
}

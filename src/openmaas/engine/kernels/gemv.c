/* Weights times a few rows of activations on AVX-512 CPUs: y[m, n] = x[m, k] . W[n, k]^T (+ b), m <= 4,
 * in bf16 (AVX512-BF16's vdpbf16ps, fp32 sums) and in fp32 (FMA).
 *
 * A decode step multiplies one or a few activation rows by every weight matrix, so it is bound by how
 * fast the weights stream from memory, and this kernel's whole job is to read them at the memory's
 * speed:
 *
 *  - Weights stay in their plain row-major layout (the tensor PyTorch's own matmul uses for prefill) and
 *    each thread reads its range of rows strictly in order, one row after the other: one sequential
 *    stream per core, which the hardware prefetchers follow best. Interleaving four rows (four streams)
 *    measured 30% slower on a 896-wide row, and a blocked layout (16 outputs per vector, broadcast
 *    activations) no faster.
 *  - One activation row keeps two accumulators (two dependency chains); with two to four rows each row
 *    has its own, and a weight chunk is loaded once for all of them.
 *  - Each output is summed in fp32, the bias is added in fp32, and a bf16 output is rounded to nearest
 *    even, as PyTorch rounds.
 *
 * Threads come from OpenMP. The library links libgomp by its soname, which PyTorch has already loaded,
 * so our parallel regions run on PyTorch's own intra-op threads (whose spin-wait between regions makes
 * waking them cheap) and no second thread pool competes for the cores.
 *
 * Built at run time by openmaas.engine.kernels; without a compiler or AVX-512 the engine keeps oneDNN.
 */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"

#define MAX_ROWS 4

/* ---- bf16: 32 values per vector ---- */

#define BF16_STEP 32
#define BF16_MASK(left) ((left) >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1ull << (left)) - 1))
#define BF16_LOAD(p, mask) ((__m512bh)_mm512_maskz_loadu_epi16((mask), (p)))
#define BF16_FMA(acc, w, x) _mm512_dpbf16_ps((acc), (w), (x))
#define BF16_STORE(y, s, b) (*(y) = to_bf16((s) + ((b) ? from_bf16(*(b)) : 0.0f)))
typedef __m512bh bf16_vec;
typedef __mmask32 bf16_mask;

/* ---- fp32: 16 values per vector ---- */

#define F32_STEP 16
#define F32_MASK(left) ((left) >= 16 ? (__mmask16)0xffffu : (__mmask16)((1u << (left)) - 1))
#define F32_LOAD(p, mask) _mm512_maskz_loadu_ps((mask), (p))
#define F32_FMA(acc, w, x) _mm512_fmadd_ps((w), (x), (acc))
#define F32_STORE(y, s, b) (*(y) = (s) + ((b) ? *(b) : 0.0f))
typedef __m512 f32_vec;
typedef __mmask16 f32_mask;

/* One activation row against weight rows [r0, r1): two accumulators over alternate chunks. The
 * accumulators are named variables, never an array: GCC keeps an array in memory and stores it on
 * every iteration, which made an earlier version store-bound. */
#define DEFINE_ONE(T, P)                                                                                  \
    static void rows1_##T(const T##_t *x, const T##_t *w, const T##_t *bias, T##_t *y, int64_t k,        \
                          int64_t r0, int64_t r1) {                                                      \
        for (int64_t r = r0; r < r1; r++) {                                                              \
            const T##_t *wr = w + r * k;                                                                 \
            __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();                                     \
            int64_t c = 0;                                                                               \
            for (; c + 2 * P##_STEP <= k; c += 2 * P##_STEP) {                                           \
                a = P##_FMA(a, P##_LOAD(wr + c, P##_MASK(P##_STEP)), P##_LOAD(x + c, P##_MASK(P##_STEP))); \
                b = P##_FMA(b, P##_LOAD(wr + c + P##_STEP, P##_MASK(P##_STEP)),                         \
                            P##_LOAD(x + c + P##_STEP, P##_MASK(P##_STEP)));                             \
            }                                                                                            \
            for (; c < k; c += P##_STEP) {                                                               \
                const T##_mask mask = P##_MASK(k - c);                                                   \
                a = P##_FMA(a, P##_LOAD(wr + c, mask), P##_LOAD(x + c, mask));                           \
            }                                                                                            \
            P##_STORE(y + r, _mm512_reduce_add_ps(_mm512_add_ps(a, b)), bias ? bias + r : 0);            \
        }                                                                                                \
    }

/* Two to four activation rows (row stride k) against weight rows [r0, r1); y rows have stride n. */
#define ROW_STEP(i)                                                                                      \
    if ((i) < m) acc##i = FMA(acc##i, wv, LOAD(x + (i) * k + c, mask));
#define ROW_STORE(i)                                                                                     \
    if ((i) < m) STORE(y + (i) * n + r, _mm512_reduce_add_ps(acc##i), bias ? bias + r : 0);
#define DEFINE_FEW(T, P)                                                                                 \
    static void rows_few_##T(const T##_t *x, const T##_t *w, const T##_t *bias, T##_t *y, int64_t m,    \
                             int64_t n, int64_t k, int64_t r0, int64_t r1) {                             \
        for (int64_t r = r0; r < r1; r++) {                                                              \
            const T##_t *wr = w + r * k;                                                                 \
            __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;                    \
            for (int64_t c = 0; c < k; c += P##_STEP) {                                                  \
                const T##_mask mask = P##_MASK(k - c);                                                   \
                const T##_vec wv = P##_LOAD(wr + c, mask);                                               \
                ROW_STEP(0) ROW_STEP(1) ROW_STEP(2) ROW_STEP(3)                                          \
            }                                                                                            \
            ROW_STORE(0) ROW_STORE(1) ROW_STORE(2) ROW_STORE(3)                                          \
        }                                                                                                \
    }

#define FMA BF16_FMA
#define LOAD BF16_LOAD
#define STORE BF16_STORE
DEFINE_ONE(bf16, BF16)
DEFINE_FEW(bf16, BF16)
#undef FMA
#undef LOAD
#undef STORE
#define FMA F32_FMA
#define LOAD F32_LOAD
#define STORE F32_STORE
DEFINE_ONE(f32, F32)
DEFINE_FEW(f32, F32)

#define DEFINE_ROWS(T)                                                                                   \
    void omaas_gemv_rows_##T(const T##_t *x, const T##_t *w, const T##_t *bias, T##_t *y, int64_t m,    \
                             int64_t n, int64_t k, int64_t r0, int64_t r1) {                             \
        if (m == 1)                                                                                      \
            rows1_##T(x, w, bias, y, k, r0, r1);                                                         \
        else                                                                                             \
            rows_few_##T(x, w, bias, y, m, n, k, r0, r1);                                                \
    }

DEFINE_ROWS(bf16)
DEFINE_ROWS(f32)

/* x: [m, k] contiguous, w: [n, k] contiguous, bias: [n] or NULL, y: [m, n]; all bf16 (or all fp32).
 * Output rows are split over `threads` threads in contiguous ranges. Returns 0, or -1 on bad sizes. */
#define DEFINE_ENTRY(T)                                                                                  \
    int omaas_gemv_##T(const T##_t *x, const T##_t *w, const T##_t *bias, T##_t *y, int64_t m, int64_t n, \
                       int64_t k, int threads) {                                                         \
        if (m < 1 || m > MAX_ROWS || n < 1 || k < 1) return -1;                                          \
        if (threads < 1) threads = 1;                                                                    \
        if (threads > n) threads = (int)n;                                                               \
        _Pragma("omp parallel num_threads(threads)") {                                                   \
            const int t = omp_get_thread_num(), nt = omp_get_num_threads();                              \
            omaas_gemv_rows_##T(x, w, bias, y, m, n, k, n * t / nt, n * (t + 1) / nt);                   \
        }                                                                                                \
        return 0;                                                                                        \
    }

DEFINE_ENTRY(bf16)
DEFINE_ENTRY(f32)

int omaas_gemv_max_rows(void) { return MAX_ROWS; }

/* Direct convolution for small-channel layers (algorithm="direct"): no im2col matrix.
 *
 * Included by fastconv/kernels/direct.pxi (every build of fastconv/kernels/_im2col.pyx); the loops of
 * fastconv/kernels/direct_body.h are compiled once for float (suffix f32) and once for double
 * (f64). fastconv/engine/direct.py owns the policy: it packs the weights, computes the tap
 * offsets and sizes the buffers these loops read.
 *
 * One image at a time, each input plane is copied into a zero-padded buffer ("packed")
 * that stays in L1/L2: logical pixel (r, q) of plane c at
 *     c*Hb*S*Wq + r*S*Wq + (q % S)*Wq + q / S
 * (S = the stride along W: the columns of each phase are contiguous, so every kernel tap
 * reads a contiguous run of the packed row for a row of outputs). Output pixel (oh, ow)
 * reads tap t of its window at  base(oh, ow) + off[t],  base = oh*row_step + ow, with
 * off[t] the same for every output: so a tap's loads for a register vector of outputs are
 * one vector load. A register tile of FT filters x NR register vectors of outputs holds
 * the accumulators; each tap loads NR vectors and broadcasts FT weights.
 *
 * Each output's sum runs over the taps in the same order whatever the build and the tile.
 * dW's row segment is 64 bytes in every build (16 floats or 8 doubles: one zmm, two ymm or
 * four xmm registers), so its lane sums are reduced in the same order: every build gives
 * the same bits. Each step is an explicit fused multiply-add (one rounding) in every build: AVX-512F's or FMA3's instructions, and libm's correctly
 * rounded fmaf/fma lane by lane in the baseline build (slow, the same bits). On Intel
 * cores FMA runs the forward tile several times faster than a multiply then an add
 * (docs/performance.md, "Direct convolution and the rule of auto").
 */
#ifndef FASTCONV_DIRECT_H
#define FASTCONV_DIRECT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifndef PY_SSIZE_T_MAX /* compiled alone (gcc -S direct.h) to look at the code */
typedef ptrdiff_t Py_ssize_t;
#endif
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

/* The register vector of each build (FC_RBYTES: one zmm, ymm or xmm register); the loops
 * work on these, a 64-byte row segment being FC_K = 64 / FC_RBYTES of them. GCC lowers a
 * generic 64-byte vector wider than the registers poorly (the AVX2 build's tiles ran from
 * the stack, its pool several times slower than the convolution; the notes' "The AVX2
 * build's direct kernels"). A lane's sum is the same whichever register holds it: the
 * same bits. The _u types read at any address (packed rows are read at every offset). */
#if defined(__AVX512F__)
#define FC_RBYTES 64
#elif defined(__AVX2__) && defined(__FMA__)
#define FC_RBYTES 32
#else
#define FC_RBYTES 16
#endif
#define FC_K (64 / FC_RBYTES)
typedef float fc_rf __attribute__((vector_size(FC_RBYTES)));
typedef double fc_rd __attribute__((vector_size(FC_RBYTES)));
typedef int32_t fc_rfi __attribute__((vector_size(FC_RBYTES)));
typedef int64_t fc_rdi __attribute__((vector_size(FC_RBYTES)));
typedef float fc_rf_u __attribute__((vector_size(FC_RBYTES), aligned(4), may_alias));
typedef double fc_rd_u __attribute__((vector_size(FC_RBYTES), aligned(8), may_alias));

/* Register tiles, per build (only speed depends on them, never the bits: each output's
 * sum has the same order whatever the tile). Forward: FT filters x FC_NR<FT> register
 * vectors of output pixels, for FT = 8, 4, 3, 2 or 1 (FC_NR<FT> 0: a tile this build does
 * not have; fastconv/engine/direct.py picks the FT that wastes the fewest filter slots: dx
 * of a 3-channel layer runs 3 x 7 on AVX-512). dW: FC_WF_<T> filters x FC_WT_<T> taps of
 * one register vector per dtype (fc_dw_image_tiled makes FC_K passes). 32 zmm registers
 * hold 24 accumulators; AVX2's 16 ymm registers hold 12, with the tile's inputs and a
 * weight beside them; SSE2's 16 xmm fewer. */
#if defined(__AVX512F__)
#define FC_NR8 3
#define FC_NR4 6
#define FC_NR3 7
#define FC_NR2 10
#define FC_NR1 12
#define FC_WF_F32 4
#define FC_WT_F32 6
#define FC_WF_F64 4
#define FC_WT_F64 6
#elif defined(__AVX2__)
/* No 8-filter tile (0): its 16 accumulators leave no register for the inputs, and the
 * spills cost more than the 4-filter tile's extra loads (docs/performance-notes.md, "The
 * AVX2 build's direct kernels"). 4 filters x 3 vectors fill the 16 registers exactly (12
 * accumulators, 3 inputs, a weight): 7 loads per 12 FMAs, against 6 per 8 for 4 x 2
 * (docs/performance-notes.md, "A tile in register vectors"). The narrower tiles keep their
 * weights in registers (fc_fwd_tile), so they too hold 12 accumulators: 3 x 4 (3 weights,
 * an input), 2 x 6, 1 x 12; 3 x 3 left the FMA units waiting (dx of a 3-channel layer). */
#define FC_NR8 0
#define FC_NR4 3
#define FC_NR3 4
#define FC_NR2 6
#define FC_NR1 12
/* dW: 4 filters x 3 taps hold 12 accumulators, but its 4 dout vectors and the input make 17
 * registers, and GCC reloads one filter's dout at each FMA; 3 x 4 fits 16. In a C harness
 * (Zen 3, one thread) 3 x 4 ran float64's dW 18-24 % faster, float32's 0-8 % slower. */
#define FC_WF_F32 4
#define FC_WT_F32 3
#define FC_WF_F64 3
#define FC_WT_F64 4
#else
#define FC_NR8 4
#define FC_NR4 4
#define FC_NR3 4
#define FC_NR2 4
#define FC_NR1 8
#define FC_WF_F32 1
#define FC_WT_F32 2
#define FC_WF_F64 1
#define FC_WT_F64 2
#endif
/* *acc += *x * *w on register vectors, rounded once. */
static inline __attribute__((always_inline)) void fc_fma_f32(fc_rf *acc, const fc_rf *x, const fc_rf *w)
{
#if defined(__AVX512F__)
    *acc = (fc_rf)_mm512_fmadd_ps((__m512)*x, (__m512)*w, (__m512)*acc);
#elif defined(__AVX2__) && defined(__FMA__)
    *acc = (fc_rf)_mm256_fmadd_ps((__m256)*x, (__m256)*w, (__m256)*acc);
#else
    int l;
    for (l = 0; l < FC_RBYTES / 4; l++)
        (*acc)[l] = __builtin_fmaf((*x)[l], (*w)[l], (*acc)[l]);
#endif
}

static inline __attribute__((always_inline)) void fc_fma_f64(fc_rd *acc, const fc_rd *x, const fc_rd *w)
{
#if defined(__AVX512F__)
    *acc = (fc_rd)_mm512_fmadd_pd((__m512d)*x, (__m512d)*w, (__m512d)*acc);
#elif defined(__AVX2__) && defined(__FMA__)
    *acc = (fc_rd)_mm256_fmadd_pd((__m256d)*x, (__m256d)*w, (__m256d)*acc);
#else
    int l;
    for (l = 0; l < FC_RBYTES / 8; l++)
        (*acc)[l] = __builtin_fma((*x)[l], (*w)[l], (*acc)[l]);
#endif
}

/* The first n lanes of the register vector *v to dst (0 < n < its lanes), the rest of dst
 * untouched: the last, partial segment of an output row. AVX-512: one masked store (a lane
 * at a time, GCC spills the vector first: docs/performance-notes.md). AVX2: plain stores
 * of 4, 2 and 1 lanes as n's bits say (AMD cores run a 256-bit masked store slowly: the
 * fused pool spent most of its time after one, Zen 3). Nothing is written past n either
 * way. The tiles store from their registers (composing a 64-byte vector from them first
 * put the whole forward tile on the stack in the AVX2 build). */
static inline __attribute__((always_inline)) void fc_store_rpart_f32(float *dst, const fc_rf *v, int n)
{
#if defined(__AVX512F__)
    _mm512_mask_storeu_ps(dst, (__mmask16)((1u << n) - 1u), (__m512)*v);
#elif defined(__AVX2__) && defined(__FMA__)
    __m128 h = _mm256_castps256_ps128((__m256)*v);
    if (n & 4) {
        _mm_storeu_ps(dst, h);
        h = _mm256_extractf128_ps((__m256)*v, 1);
        dst += 4;
    }
    if (n & 2) {
        _mm_storel_epi64((__m128i *)dst, _mm_castps_si128(h));
        h = _mm_movehl_ps(h, h);
        dst += 2;
    }
    if (n & 1)
        _mm_store_ss(dst, h);
#else
    int l;
    for (l = 0; l < n; l++)
        dst[l] = (*v)[l];
#endif
}
static inline __attribute__((always_inline)) void fc_store_rpart_f64(double *dst, const fc_rd *v, int n)
{
#if defined(__AVX512F__)
    _mm512_mask_storeu_pd(dst, (__mmask8)((1u << n) - 1u), (__m512d)*v);
#elif defined(__AVX2__) && defined(__FMA__)
    __m128d h = _mm256_castpd256_pd128((__m256d)*v);
    if (n & 2) {
        _mm_storeu_pd(dst, h);
        h = _mm256_extractf128_pd((__m256d)*v, 1);
        dst += 2;
    }
    if (n & 1)
        _mm_store_sd(dst, h);
#else
    int l;
    for (l = 0; l < n; l++)
        dst[l] = (*v)[l];
#endif
}
/* The same for int32 lanes (the fused pool's argmaxes, float32 builds). */
static inline __attribute__((always_inline)) void fc_store_rpart_i32(int32_t *dst, const fc_rfi *v, int n)
{
#if defined(__AVX512F__)
    _mm512_mask_storeu_epi32(dst, (__mmask16)((1u << n) - 1u), (__m512i)*v);
#elif defined(__AVX2__) && defined(__FMA__)
    __m128i h = _mm256_castsi256_si128((__m256i)*v);
    if (n & 4) {
        _mm_storeu_si128((__m128i *)dst, h);
        h = _mm256_extracti128_si256((__m256i)*v, 1);
        dst += 4;
    }
    if (n & 2) {
        _mm_storel_epi64((__m128i *)dst, h);
        h = _mm_srli_si128(h, 8);
        dst += 2;
    }
    if (n & 1)
        *dst = _mm_cvtsi128_si32(h);
#else
    int l;
    for (l = 0; l < n; l++)
        dst[l] = (*v)[l];
#endif
}
/* Whether b replaces a as the running maximum of a pooling window (fastconv/kernels/pooling.pxi's
 * rule), on vectors: a lane mask, all ones where b > a, or b is NaN and a is not. A strict
 * order with NaN on top, so a window's winner is its first maximum in row-major order
 * whatever the order of the comparisons. */
#define FC_VBEATS(b, a) (((a) == (a)) & ~((b) <= (a)))

/* The packed rows that hold pixels, for a forward pass that may skip the others: its taps
 * are planes runs of kh*kw taps ((c, i, j) in order), output row oh reads packed row
 * oh*step + i*dil_h at tap row i, and only rows lo..hi may hold anything but zeros (rows
 * between them too, as for dx of a strided layer). A tile skips the tap rows that read
 * zero rows for all its outputs: each product skipped is +-0 (finite weights: the caller's
 * condition; a NaN or infinite weight times a padding zero is NaN in the naive loops), and
 * a sum that starts at +0 stays as it is when +-0 is added. The same bits. */
typedef struct {
    Py_ssize_t kh, kw, dil_h, step, lo, hi;
} fc_taprows;

/* The taps a tile runs: in each of planes runs of per taps, those from t0 to t1. */
typedef struct {
    Py_ssize_t planes, per, t0, t1;
} fc_tapruns;

/* The tap runs of a tile of output rows oh_a..oh_b (of a pass of taps taps): the tap rows
 * that read a row in lo..hi for some output of the tile. */
static inline fc_tapruns fc_tap_runs(const fc_taprows *rows, Py_ssize_t taps, Py_ssize_t oh_a, Py_ssize_t oh_b)
{
    Py_ssize_t per = rows->kh * rows->kw, below = rows->lo - oh_b * rows->step, above = rows->hi - oh_a * rows->step;
    Py_ssize_t i0 = below <= 0 ? 0 : (below + rows->dil_h - 1) / rows->dil_h;  /* first i: oh_b*step + i*dil_h >= lo */
    Py_ssize_t i1 = above < 0 ? 0 : above / rows->dil_h + 1;                   /* past the last: oh_a*step + i*dil_h <= hi */
    fc_tapruns runs;
    if (i1 > rows->kh)
        i1 = rows->kh;
    if (i0 > i1)
        i0 = i1;
    runs.planes = taps / per;
    runs.per = per;
    runs.t0 = i0 * rows->kw;
    runs.t1 = i1 * rows->kw;
    return runs;
}

#define FC_TILE_MAX 32
#define FC_NR_MAX 16

#define FC_CAT2(a, b) a##_##b
#define FC_CAT(a, b) FC_CAT2(a, b)

#define FC_T float
#define FC_V 16
#define FC_RL (FC_RBYTES / 4)
#define FC_SUF f32
#define FC_FMA fc_fma_f32
#define FC_RT fc_rf
#define FC_RTU fc_rf_u
#define FC_RI fc_rfi
#define FC_STORE_RPART fc_store_rpart_f32
#define FC_WF FC_WF_F32
#define FC_WT FC_WT_F32
#include "direct_body.h"
#undef FC_WF
#undef FC_WT
#undef FC_FMA
#undef FC_RT
#undef FC_RTU
#undef FC_RI
#undef FC_STORE_RPART
#undef FC_T
#undef FC_V
#undef FC_RL
#undef FC_SUF

#define FC_T double
#define FC_V 8
#define FC_RL (FC_RBYTES / 8)
#define FC_SUF f64
#define FC_FMA fc_fma_f64
#define FC_RT fc_rd
#define FC_RTU fc_rd_u
#define FC_RI fc_rdi
#define FC_STORE_RPART fc_store_rpart_f64
#define FC_WF FC_WF_F64
#define FC_WT FC_WT_F64
#include "direct_body.h"
#undef FC_WF
#undef FC_WT
#undef FC_FMA
#undef FC_RT
#undef FC_RTU
#undef FC_RI
#undef FC_STORE_RPART
#undef FC_T
#undef FC_V
#undef FC_RL
#undef FC_SUF

#endif

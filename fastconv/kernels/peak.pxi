# The roofline's peak (included in _im2col.pyx): a floating-point throughput kernel that
# fastconv/bench/roofline.py times on the suite's threads, one call per thread.
#
# PEAK_CHAINS independent chains of vectors as wide as the build allows (GCC vector
# extensions: 64 bytes in the AVX-512 build, so zmm registers whatever
# -mprefer-vector-width says; 32 with AVX; 16 else), each stepped ``iters`` times:
#
# * fused: every chain ``a = fma(a, m, c)``, an explicit FMA instruction (setup.py compiles
#   with -ffp-contract=off, so ``a * m + c`` would stay a multiply and an add). The
#   AVX-512 build has FMA; the AVX2 build is compiled without -mfma, so its kernel is a
#   function of its own compiled for FMA, run only when the CPU says it has FMA.
# * mul+add: even chains ``a = a * m``, odd ones ``a = a + c``: multiplies and adds that
#   do not depend on each other, what a kernel without FMA can reach at best. (A chain of
#   ``a * m + c`` ran 3-6x slower with 8 or more chains of zmm on a Sapphire Rapids VM:
#   docs/performance.md, "Roofline".)
#
# Enough chains to cover the latency of two FMA units (4-5 cycles x 2 = 8-10), few enough
# to stay in 16 registers with m and c. Every lane of a chain computes the same values
# from the same start, so lane 0 of each chain, summed in chain order, is the same in
# every build of the same kind (fused or not): the arithmetic is checked, not only timed.
cdef extern from *:
    """
    #define FC_PEAK_CHAINS 12
    #if defined(__GNUC__)
    #  if defined(__AVX512F__)
    #    define FC_PEAK_BYTES 64
    #  elif defined(__AVX__)
    #    define FC_PEAK_BYTES 32
    #  else
    #    define FC_PEAK_BYTES 16
    #  endif
    typedef float fc_peak_f32v __attribute__((vector_size(FC_PEAK_BYTES)));
    typedef double fc_peak_f64v __attribute__((vector_size(FC_PEAK_BYTES)));
    #  if defined(__x86_64__) || defined(__i386__)
    #    include <immintrin.h>
    #  endif
    /* FC_PEAK_FMA: 1 FMA compiled in, 2 compiled for FMA in a function of its own (to be
     * run only on a CPU with FMA), 0 none. */
    #  if defined(__AVX512F__)
    #    define FC_PEAK_FMA 1
    #    define FC_PEAK_FMA_TARGET
    #    define FC_PEAK_FMA_F32(a, m, c) ((fc_peak_f32v)_mm512_fmadd_ps((__m512)(a), (__m512)(m), (__m512)(c)))
    #    define FC_PEAK_FMA_F64(a, m, c) ((fc_peak_f64v)_mm512_fmadd_pd((__m512d)(a), (__m512d)(m), (__m512d)(c)))
    #  elif defined(__AVX__) && (defined(__x86_64__) || defined(__i386__))
    #    if defined(__FMA__)
    #      define FC_PEAK_FMA 1
    #      define FC_PEAK_FMA_TARGET
    #    else
    #      define FC_PEAK_FMA 2
    #      define FC_PEAK_FMA_TARGET __attribute__((target("fma")))
    #    endif
    #    define FC_PEAK_FMA_F32(a, m, c) ((fc_peak_f32v)_mm256_fmadd_ps((__m256)(a), (__m256)(m), (__m256)(c)))
    #    define FC_PEAK_FMA_F64(a, m, c) ((fc_peak_f64v)_mm256_fmadd_pd((__m256d)(a), (__m256d)(m), (__m256d)(c)))
    #  else
    #    define FC_PEAK_FMA 0
    #  endif
    #else  /* no vector extensions: one lane, no FMA */
    #  define FC_PEAK_FMA 0
    typedef float fc_peak_f32v;
    typedef double fc_peak_f64v;
    #endif

    #define FC_PEAK_LANES_F32 ((int)(sizeof(fc_peak_f32v) / sizeof(float)))
    #define FC_PEAK_LANES_F64 ((int)(sizeof(fc_peak_f64v) / sizeof(double)))

    #if defined(__GNUC__)
    #  define FC_PEAK_SPLAT(V, x) ((V){0} + (x))
    #  define FC_PEAK_LANE0(v) ((v)[0])
    #  define FC_PEAK_UNROLL _Pragma("GCC unroll 12")
    #else
    #  define FC_PEAK_SPLAT(V, x) ((V)(x))
    #  define FC_PEAK_LANE0(v) (v)
    #  define FC_PEAK_UNROLL
    #endif

    /* Chain k starts at x + k*step (distinct values: the compiler cannot merge chains). */
    #define FC_PEAK_SETUP(V, T)                                                   \
        V acc[FC_PEAK_CHAINS];                                                    \
        const V vm = FC_PEAK_SPLAT(V, m), vc = FC_PEAK_SPLAT(V, c);               \
        T total = 0;                                                              \
        for (int k = 0; k < FC_PEAK_CHAINS; k++)                                  \
            acc[k] = FC_PEAK_SPLAT(V, x + (T)k * step);
    #define FC_PEAK_TOTAL                                                         \
        for (int k = 0; k < FC_PEAK_CHAINS; k++)                                  \
            total += FC_PEAK_LANE0(acc[k]);                                       \
        return total;

    #define FC_PEAK_MULADD(name, V, T)                                            \
    static T name(T x, T step, T m, T c, Py_ssize_t iters) {                      \
        FC_PEAK_SETUP(V, T)                                                       \
        for (Py_ssize_t i = 0; i < iters; i++) {                                  \
            FC_PEAK_UNROLL                                                        \
            for (int k = 0; k < FC_PEAK_CHAINS; k += 2) {                         \
                acc[k] = acc[k] * vm;                                             \
                acc[k + 1] = acc[k + 1] + vc;                                     \
            }                                                                     \
        }                                                                         \
        FC_PEAK_TOTAL                                                             \
    }
    FC_PEAK_MULADD(fc_peak_muladd_f32, fc_peak_f32v, float)
    FC_PEAK_MULADD(fc_peak_muladd_f64, fc_peak_f64v, double)

    #if FC_PEAK_FMA
    #define FC_PEAK_FUSED(name, V, T, FMA)                                        \
    FC_PEAK_FMA_TARGET static T name(T x, T step, T m, T c, Py_ssize_t iters) {   \
        FC_PEAK_SETUP(V, T)                                                       \
        for (Py_ssize_t i = 0; i < iters; i++) {                                  \
            FC_PEAK_UNROLL                                                        \
            for (int k = 0; k < FC_PEAK_CHAINS; k++)                              \
                acc[k] = FMA(acc[k], vm, vc);                                     \
        }                                                                         \
        FC_PEAK_TOTAL                                                             \
    }
    FC_PEAK_FUSED(fc_peak_fused_f32, fc_peak_f32v, float, FC_PEAK_FMA_F32)
    FC_PEAK_FUSED(fc_peak_fused_f64, fc_peak_f64v, double, FC_PEAK_FMA_F64)
    #else
    static float fc_peak_fused_f32(float x, float s, float m, float c, Py_ssize_t n) { return 0; }
    static double fc_peak_fused_f64(double x, double s, double m, double c, Py_ssize_t n) { return 0; }
    #endif

    /* 1 when this build can run the fused kernel on this CPU. */
    static int fc_peak_fma_ready(void) {
    #if FC_PEAK_FMA == 2
        return fc_cpu_supports("fma") == 1;
    #else
        return FC_PEAK_FMA;
    #endif
    }
    """
    int FC_PEAK_CHAINS
    int FC_PEAK_LANES_F32
    int FC_PEAK_LANES_F64
    int FC_PEAK_FMA
    int fc_peak_fma_ready() noexcept nogil
    float fc_peak_muladd_f32(float x, float step, float m, float c, Py_ssize_t iters) noexcept nogil
    double fc_peak_muladd_f64(double x, double step, double m, double c, Py_ssize_t iters) noexcept nogil
    float fc_peak_fused_f32(float x, float step, float m, float c, Py_ssize_t iters) noexcept nogil
    double fc_peak_fused_f64(double x, double step, double m, double c, Py_ssize_t iters) noexcept nogil


def peak_info():
    """The peak kernel of this build: ``lanes`` per vector of each dtype, ``vector_bits``,
    ``chains``, ``fma`` ("compiled": FMA in the build's flags; "checked": compiled for FMA
    in a function of its own, run when the CPU has it; None: no FMA) and ``fma_ready``
    (whether ``peak_run(..., fused=True)`` can run on this CPU)."""
    return {"lanes": {"float32": FC_PEAK_LANES_F32, "float64": FC_PEAK_LANES_F64},
            "vector_bits": 32 * FC_PEAK_LANES_F32, "chains": FC_PEAK_CHAINS,
            "fma": {0: None, 1: "compiled", 2: "checked"}[FC_PEAK_FMA],
            "fma_ready": bool(fc_peak_fma_ready())}


def peak_run(floating[::1] out not None, double x, double step, double m, double c, Py_ssize_t iters,
             bint fused):
    """Step the peak kernel's chains ``iters`` times on the calling thread, without the GIL.

    Chain k starts at ``x + k*step`` (in out's dtype); fused: each step is one FMA,
    ``a*m + c`` rounded once; else even chains ``a*m``, odd ones ``a + c``.
    out (OUT, at least 1 element): out[0] = lane 0 of each chain, summed in chain order.
    Returns the floating-point operations done: chains x lanes x iters, twice that fused.
    ValueError for iters < 0, an empty out, or fused on a build or CPU without FMA."""
    cdef Py_ssize_t lanes = FC_PEAK_LANES_F32 if floating is float else FC_PEAK_LANES_F64
    cdef floating result
    if out.shape[0] < 1:
        raise ValueError("out must have at least one element")
    if iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")
    if fused and not fc_peak_fma_ready():
        raise ValueError("fused: this build of the kernels cannot run FMA on this CPU (peak_info())")
    with nogil:
        if floating is float:
            if fused:
                result = fc_peak_fused_f32(<float>x, <float>step, <float>m, <float>c, iters)
            else:
                result = fc_peak_muladd_f32(<float>x, <float>step, <float>m, <float>c, iters)
        else:
            if fused:
                result = fc_peak_fused_f64(x, step, m, c, iters)
            else:
                result = fc_peak_muladd_f64(x, step, m, c, iters)
    out[0] = result
    return FC_PEAK_CHAINS * lanes * iters * (2 if fused else 1)

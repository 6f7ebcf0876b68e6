/* What this CPU can run, and what this build of the kernels was compiled for.
 * Included by fastconv/_im2col.pyx (every build of it); fastconv/_isa.py names the
 * features each build uses. */
#ifndef FASTCONV_CPU_H
#define FASTCONV_CPU_H

#include <string.h>

/* setup.py sets FASTCONV_ISA to the build's name (fastconv/_isa.py). */
#ifndef FASTCONV_ISA
#define FASTCONV_ISA baseline
#endif
#define FC_STRINGIFY(x) #x
#define FC_STRING(x) FC_STRINGIFY(x)
static const char fc_isa[] = FC_STRING(FASTCONV_ISA);

/* 1 when the CPU has `feature` (GCC's name) and the OS saves its registers, 0 when not or
 * off GCC/Clang on x86, -1 for a name not in this list. __builtin_cpu_supports takes only
 * literal names, hence the list. The OS part: libgcc (gcc/common/config/i386/cpuinfo.h,
 * get_available_features) reads XCR0 with xgetbv and sets the AVX and AVX2 bits only
 * when the OS saves the SSE and YMM state, the AVX-512 bits only when it also saves the
 * opmask and all of the ZMM state; Clang's compiler-rt does the same. */
static int fc_cpu_supports(const char *feature) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
#define FC_FEATURE(name) if (strcmp(feature, name) == 0) return __builtin_cpu_supports(name) != 0;
    FC_FEATURE("sse3") FC_FEATURE("ssse3") FC_FEATURE("sse4.1") FC_FEATURE("sse4.2")
    FC_FEATURE("popcnt") FC_FEATURE("avx") FC_FEATURE("avx2") FC_FEATURE("fma")
    FC_FEATURE("f16c") FC_FEATURE("bmi") FC_FEATURE("bmi2") FC_FEATURE("avx512f")
    FC_FEATURE("avx512bw") FC_FEATURE("avx512vl") FC_FEATURE("avx512dq") FC_FEATURE("avx512cd")
#undef FC_FEATURE
    return -1;
#else
    (void)feature;
    return 0;
#endif
}

/* The SIMD features the compiler enabled for this build (its predefined macros), in
 * fc_cpu_supports's names, each followed by a space; the AVX-512 extensions past CD are
 * here so that a flag that turns one on shows. */
static const char fc_target_features[] = ""
#ifdef __SSE3__
    "sse3 "
#endif
#ifdef __SSSE3__
    "ssse3 "
#endif
#ifdef __SSE4_1__
    "sse4.1 "
#endif
#ifdef __SSE4_2__
    "sse4.2 "
#endif
#ifdef __POPCNT__
    "popcnt "
#endif
#ifdef __AVX__
    "avx "
#endif
#ifdef __AVX2__
    "avx2 "
#endif
#ifdef __FMA__
    "fma "
#endif
#ifdef __F16C__
    "f16c "
#endif
#ifdef __BMI__
    "bmi "
#endif
#ifdef __BMI2__
    "bmi2 "
#endif
#ifdef __AVX512F__
    "avx512f "
#endif
#ifdef __AVX512BW__
    "avx512bw "
#endif
#ifdef __AVX512VL__
    "avx512vl "
#endif
#ifdef __AVX512DQ__
    "avx512dq "
#endif
#ifdef __AVX512CD__
    "avx512cd "
#endif
#ifdef __AVX512VNNI__
    "avx512vnni "
#endif
#ifdef __AVX512BF16__
    "avx512bf16 "
#endif
#ifdef __AVX512VBMI__
    "avx512vbmi "
#endif
#ifdef __AVX512IFMA__
    "avx512ifma "
#endif
#ifdef __AVX512VPOPCNTDQ__
    "avx512vpopcntdq "
#endif
    ;

#endif

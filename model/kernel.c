/*
 * kernel.c - the one place that decides which convolution kernel the engine runs.
 *
 * Four paths, best first: the direct 3x3 convolution on AVX-512F ("avx512"), the same on AVX2
 * with FMA ("avx2"), the same in plain C that the compiler vectorises for the baseline ISA
 * ("generic"), and im2col + OpenBLAS sgemm for every shape ("im2col"). Every path keeps
 * im2col + sgemm for the shapes the direct convolution does not cover (not 3x3, stride > 2).
 * The choice is made once, on first use: the best path the CPU supports
 * (__builtin_cpu_supports), unless the environment variable NN_KERNEL_ENV names another one.
 * A named path the CPU cannot run is ignored (the best one runs instead) and the reason is kept
 * for nn_kernel_describe(); the library itself never logs (the programs print that line).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn_int.h"

static const char *const names[NN_KERNEL__COUNT] = {
    [NN_KERNEL_IM2COL] = "im2col",
    [NN_KERNEL_GENERIC] = "generic",
    [NN_KERNEL_AVX2] = "avx2",
    [NN_KERNEL_AVX512] = "avx512",
};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static atomic_int current = NN_KERNEL_IM2COL;
static char note[160]; /* why the environment's request was not followed; "" when it was */
static char request[32];

const char *nn_kernel_name_of(enum nn_kernel k)
{
    return (unsigned)k < NN_KERNEL__COUNT ? names[k] : NULL;
}

int nn_kernel_from_name(const char *name)
{
    for (int k = 0; k < NN_KERNEL__COUNT; k++)
        if (name && !strcmp(name, names[k]))
            return k;
    return -1;
}

bool nn_kernel_supported(enum nn_kernel k, const char **ret_reason)
{
    const char *why = NULL;
    __builtin_cpu_init();
    switch (k) {
    case NN_KERNEL_IM2COL:
    case NN_KERNEL_GENERIC:
        break;
    case NN_KERNEL_AVX2:
        if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
            why = "this CPU has no AVX2 with FMA";
        break;
    case NN_KERNEL_AVX512:
        if (!__builtin_cpu_supports("avx512f"))
            why = "this CPU has no AVX-512F";
        break;
    default:
        why = "no such kernel";
    }
    if (why && ret_reason)
        *ret_reason = why;
    return why == NULL;
}

static enum nn_kernel best(void)
{
    for (int k = NN_KERNEL__COUNT - 1; k > 0; k--)
        if (nn_kernel_supported((enum nn_kernel)k, NULL))
            return (enum nn_kernel)k;
    return NN_KERNEL_IM2COL;
}

static void select_once(void)
{
    const char *env = getenv(NN_KERNEL_ENV), *why = NULL;
    enum nn_kernel k = best();
    if (env && env[0]) {
        const int want = nn_kernel_from_name(env);
        (void)snprintf(request, sizeof(request), "%s", env);
        if (want < 0)
            (void)snprintf(note, sizeof(note),
                           "%s='%s' ignored: not one of avx512, avx2, generic, im2col",
                           NN_KERNEL_ENV, request);
        else if (!nn_kernel_supported((enum nn_kernel)want, &why))
            (void)snprintf(note, sizeof(note), "%s=%s ignored: %s", NN_KERNEL_ENV, request, why);
        else
            k = (enum nn_kernel)want;
    }
    atomic_store(&current, (int)k);
}

enum nn_kernel nn_kernel(void)
{
    (void)pthread_once(&once, select_once);
    return (enum nn_kernel)atomic_load_explicit(&current, memory_order_relaxed);
}

int nn_kernel_winograd(void)
{
    const enum nn_kernel k = nn_kernel();
    return k == NN_KERNEL_AVX2 || k == NN_KERNEL_GENERIC || k == NN_KERNEL_AVX512;
}

const char *nn_kernel_name(void)
{
    return names[nn_kernel()];
}

cxr_err nn_kernel_set(enum nn_kernel k)
{
    (void)nn_kernel();
    if (!nn_kernel_supported(k, NULL))
        return CXR_EINVAL;
    atomic_store(&current, (int)k);
    return CXR_OK;
}

size_t nn_kernel_describe(char *buf, size_t len)
{
    const enum nn_kernel k = nn_kernel();
    const char *how;
    int n;
    if (note[0])
        how = note;
    else if (request[0])
        how = "chosen by " NN_KERNEL_ENV;
    else
        how = "the best this CPU runs";
    __builtin_cpu_init();
    n = snprintf(buf, len, "%s (%s; CPU has%s%s%s%s; %s)", names[k], how, __builtin_cpu_supports("avx512f") ? " avx512f" : "",
                 __builtin_cpu_supports("avx2") ? " avx2" : "",
                 __builtin_cpu_supports("fma") ? " fma" : "",
                 !__builtin_cpu_supports("avx2") && !__builtin_cpu_supports("avx512f")
                     ? " neither avx2 nor avx512f"
                     : "",
                 k == NN_KERNEL_IM2COL ? "every convolution im2col + OpenBLAS"
                                       : "3x3 direct, other shapes im2col + OpenBLAS");
    return n > 0 ? (size_t)n : 0;
}

/* A raw system call in a leaf function that keeps a value in its red zone
 * (the 128 bytes below the stack pointer) across it. eremite must leave
 * this `syscall` in place (a `call` would overwrite the value) and serve
 * it on the trap path. With the argument "bench" it times that call (the
 * trap path's cost) in the benchmark harness's format. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <x86intrin.h>

__attribute__((noinline)) static long getpid_keeping(long *kept) {
    long pid, value;
    __asm__ volatile("movq $123, -8(%%rsp)\n\t"
                     "movl $39, %%eax\n\t"
                     "syscall\n\t"
                     "movq -8(%%rsp), %%rdx\n\t"
                     : "=a"(pid), "=d"(value)
                     :
                     : "rcx", "r11", "memory");
    *kept = value;
    return pid;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* 21 samples of `calls` trapped calls each: cycles per call. */
static int bench(void) {
    long long t0 = now_ns();
    unsigned long long c0 = __rdtsc();
    while (now_ns() - t0 < 20000000LL) {
    }
    unsigned long long khz = (__rdtsc() - c0) * 1000000ULL / (unsigned long long)(now_ns() - t0);
    printf("TSC khz=%llu\n", khz);
    enum { SAMPLES = 21, CALLS = 200 };
    double per_call[SAMPLES];
    long kept;
    for (int s = 0; s < SAMPLES; s++) {
        unsigned long long start = __rdtsc();
        for (int i = 0; i < CALLS; i++)
            getpid_keeping(&kept);
        per_call[s] = (double)(__rdtsc() - start) / CALLS;
    }
    qsort(per_call, SAMPLES, sizeof per_call[0], by_value);
    printf("BENCH name=getpid_trap unit=cycles median=%.2f p99=%.2f min=%.2f max=%.2f n=%d\n",
           per_call[SAMPLES / 2], per_call[SAMPLES - 1], per_call[0], per_call[SAMPLES - 1],
           SAMPLES);
    return kept == 123 ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "bench") == 0)
        return bench();
    long kept = 0;
    long pid = getpid_keeping(&kept);
    printf("pid %ld, red zone kept %ld\n", pid, kept);
    return kept == 123 ? 0 : 1;
}

/* OpenMP, as HermitCore offered it: a parallel loop (gcc -fopenmp, the
 * dynamic libgomp) over a numerical integration of 4 / (1 + x^2) from 0
 * to 1 (pi), timed with one thread and with all of them. It prints the
 * result, which must not depend on the thread count, and the speed-up. */
#include <omp.h>
#include <stdio.h>
#include <time.h>

static double integrate(long steps, int threads) {
    double step = 1.0 / (double)steps, sum = 0.0;
#pragma omp parallel for reduction(+ : sum) num_threads(threads) schedule(static)
    for (long i = 0; i < steps; i++) {
        double x = (i + 0.5) * step;
        sum += 4.0 / (1.0 + x * x);
    }
    return sum * step;
}

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(void) {
    const long steps = 200000000;
    int threads = omp_get_max_threads();
    integrate(1000, threads); /* start the thread pool */
    double t0 = seconds();
    double one = integrate(steps, 1);
    double t1 = seconds();
    double all = integrate(steps, threads);
    double t2 = seconds();
    printf("threads=%d\n", threads);
    printf("pi(1 thread)=%.10f\n", one);
    printf("pi(%d threads)=%.10f\n", threads, all);
    printf("speedup=%.2f\n", (t1 - t0) / (t2 - t1));
    return 0;
}

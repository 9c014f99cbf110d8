/* A program for scenario tests (`eremite scenario`): prints how many CPUs
 * and how much memory it sees, a value computed from its first argument
 * (the N-th Fibonacci number modulo 2^64), then `ready`. `probe N spin`
 * then spins for ever; `probe N sleep MS` sleeps MS milliseconds before
 * it ends. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10;
    struct sysinfo info;
    if (sysinfo(&info) != 0)
        return 1;
    printf("cpus: %ld\n", sysconf(_SC_NPROCESSORS_ONLN));
    printf("memory: %llu MiB\n", (unsigned long long)info.totalram * info.mem_unit >> 20);
    unsigned long long a = 0, b = 1;
    for (long i = 0; i < n; i++) {
        unsigned long long next = a + b;
        a = b;
        b = next;
    }
    printf("value: %llu\n", a);
    printf("ready\n");
    fflush(stdout);
    if (argc > 2 && strcmp(argv[2], "spin") == 0)
        for (volatile unsigned long spins = 0;; spins++)
            ;
    if (argc > 3 && strcmp(argv[2], "sleep") == 0) {
        long ms = atol(argv[3]);
        struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&pause, 0);
    }
    return 0;
}

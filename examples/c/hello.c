/* A C program built with musl (-static and -static-pie), run unmodified
 * through eremite's Linux ABI: its arguments, one environment variable,
 * and the exit code given as its first argument. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    printf("hello from musl, argc=%d\n", argc);
    for (int i = 1; i < argc; i++)
        printf("argv[%d]=%s\n", i, argv[i]);
    const char *greeting = getenv("GREETING");
    printf("GREETING=%s\n", greeting ? greeting : "(unset)");
    return argc > 1 ? atoi(argv[1]) : 0;
}

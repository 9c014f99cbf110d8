/* A C program built with musl (-static and -static-pie) and with glibc
 * (dynamically linked), run unmodified through eremite's Linux ABI: its arguments, one environment variable,
 * where /proc/self/exe points, the first line of the file GREETING_FILE
 * names (if set), and the exit code given as its first argument. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef __GLIBC__
#define LIBC "glibc"
#else
#define LIBC "musl"
#endif

int main(int argc, char **argv) {
    printf("hello from " LIBC ", argc=%d\n", argc);
    for (int i = 1; i < argc; i++)
        printf("argv[%d]=%s\n", i, argv[i]);
    const char *greeting = getenv("GREETING");
    printf("GREETING=%s\n", greeting ? greeting : "(unset)");
    const char *file = getenv("GREETING_FILE");
    if (file) {
        FILE *f = fopen(file, "r");
        char line[256] = "";
        if (!f || !fgets(line, sizeof line, f))
            printf("cannot read %s\n", file);
        else
            printf("%s says: %s", file, line);
        if (f)
            fclose(f);
    }
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = 0;
    printf("/proc/self/exe is argv[0]: %s\n", strcmp(exe, argv[0]) == 0 ? "yes" : "no");
    return argc > 1 ? atoi(argv[1]) : 0;
}

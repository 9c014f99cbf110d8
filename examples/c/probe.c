/* A program for scenario tests (`eremite scenario`): prints how many CPUs
 * and how much memory it sees, a value computed from its first argument
 * (the N-th Fibonacci number modulo 2^64), then `ready`. Then, as the
 * second argument says: `spin` for ever; `sleep MS`; `touch MIB`: write
 * to MIB MiB of fresh memory and print `touched MIB MiB`; `connect HOST
 * PORT`: send `ping` and `quit` lines to the echo server there (found by
 * name) and print `reply: ` and the first line that comes back. */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <sys/socket.h>
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
    if (argc > 3 && strcmp(argv[2], "touch") == 0) {
        size_t bytes = (size_t)atol(argv[3]) << 20;
        char *block = malloc(bytes);
        if (!block)
            return 3;
        memset(block, 1, bytes);
        printf("touched %s MiB\n", argv[3]);
    }
    if (argc > 4 && strcmp(argv[2], "connect") == 0) {
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *found;
        if (getaddrinfo(argv[3], argv[4], &hints, &found) != 0)
            return 4;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, found->ai_addr, found->ai_addrlen) != 0)
            return 5;
        const char lines[] = "ping\nquit\n";
        if (write(fd, lines, sizeof lines - 1) != (ssize_t)(sizeof lines - 1))
            return 6;
        char reply[64] = {0};
        size_t got = 0;
        while (got < sizeof reply - 1 && !memchr(reply, '\n', got)) {
            ssize_t n = read(fd, reply + got, sizeof reply - 1 - got);
            if (n <= 0)
                return 7;
            got += (size_t)n;
        }
        printf("reply: %.*s\n", (int)strcspn(reply, "\n"), reply);
        close(fd);
    }
    return 0;
}

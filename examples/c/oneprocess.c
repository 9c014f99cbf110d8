/* What a unikernel does not have: fork and execve fail with ENOSYS, as
 * does a call the kernel does not implement (io_uring_setup, asked
 * twice), and a call through a null function pointer faults (argument
 * "nullcall"). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "nullcall") == 0) {
        void (*volatile nothing)(void) = 0;
        nothing();
        return 0;
    }
    pid_t pid = fork();
    printf("fork: %d %s\n", (int)pid, pid < 0 ? strerror(errno) : "");
    char *args[] = {"/bin/true", 0};
    int r = execve("/bin/true", args, 0);
    printf("execve: %d %s\n", r, r < 0 ? strerror(errno) : "");
    for (int i = 0; i < 2; i++) {
        long u = syscall(SYS_io_uring_setup, 1, 0);
        printf("io_uring_setup: %ld %s\n", u, u < 0 ? strerror(errno) : "");
    }
    return 0;
}

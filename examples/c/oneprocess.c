/* What a unikernel does not have: fork and execve fail with ENOSYS, and a
 * call through a null function pointer faults (argument "nullcall"). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
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
    return 0;
}

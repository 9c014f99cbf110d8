/* Wild pointers in system calls through eremite's Linux ABI: every call
 * that takes a pointer, given one to memory the program does not have
 * (page 0, the kernel's image, beyond RAM, the top of the address space),
 * must fail with EFAULT and change nothing; none may crash the kernel or
 * the VMM. The raw system calls, so no C library checks first. Prints
 * "ok NAME" per call; the first failure prints "FAIL NAME: why" and exits
 * 1. It passes on Linux too. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "check.h"

/* Addresses a program does not own: page 0 (eremite's trampoline), the
 * kernel's image (eremite's Linux kernel at 2 MiB on eremite; kernel
 * space on Linux), past any RAM, and the last page of the address space. */
static const uintptr_t WILD[] = {
    0x10,
    0x200000,
    (uintptr_t)1 << 46,
    UINTPTR_MAX - 4095,
};

#define N_WILD (sizeof WILD / sizeof WILD[0])

static int epoll;

/* Each call with `wild` where it takes a pointer. */
static long call(int which, uintptr_t wild, int fds[2]) {
    switch (which) {
    case 0: return syscall(SYS_read, fds[0], wild, 16);
    case 1: return syscall(SYS_write, fds[1], wild, 16);
    case 2: return syscall(SYS_openat, AT_FDCWD, wild, O_RDONLY);
    case 3: return syscall(SYS_newfstatat, AT_FDCWD, "/", wild, 0);
    case 4: return syscall(SYS_fstat, 0, wild);
    case 5: return syscall(SYS_clock_gettime, 1, wild);
    case 6: return syscall(SYS_uname, wild);
    case 7: return syscall(SYS_pipe2, wild, 0);
    case 8: return syscall(SYS_poll, wild, 1, 0);
    case 9: return syscall(SYS_getrandom, wild, 16, 0);
    case 10: return syscall(SYS_readlinkat, AT_FDCWD, "/proc/self/exe", wild, 64);
    case 11: return syscall(SYS_rt_sigaction, 10, wild, 0, 8);
    case 12: return syscall(SYS_rt_sigprocmask, 0, wild, 0, 8);
    case 13: return syscall(SYS_nanosleep, wild, 0);
    case 14: return syscall(SYS_writev, fds[1], wild, 2);
    case 15: return syscall(SYS_getcwd, wild, 64);
    case 16: return syscall(SYS_sysinfo, wild);
    case 17: return syscall(SYS_epoll_ctl, epoll, 1 /* ADD */, fds[0], wild);
    case 18: return syscall(SYS_futex, wild, 0 /* WAIT */, 0, 0, 0, 0);
    case 19: return syscall(SYS_mkdirat, AT_FDCWD, wild, 0755);
    case 20: return syscall(SYS_sigaltstack, wild, 0);
    case 21: return syscall(SYS_prlimit64, 0, 7, 0, wild);
    default: return 0;
    }
}

static const char *NAMES[] = {
    "read into", "write from", "openat path", "newfstatat buffer", "fstat buffer",
    "clock_gettime", "uname", "pipe2", "poll", "getrandom", "readlinkat buffer",
    "rt_sigaction", "rt_sigprocmask", "nanosleep", "writev iovec", "getcwd", "sysinfo",
    "epoll_ctl event", "futex word", "mkdirat path", "sigaltstack", "prlimit64",
};

#define N_CALLS (sizeof NAMES / sizeof NAMES[0])

int main(void) {
    int fds[2];
    if (pipe(fds) != 0)
        return 2;
    epoll = (int)syscall(SYS_epoll_create1, 0);
    /* Something to read, so `read` does not wait. */
    write(fds[1], "0123456789abcdef0123456789abcdef", 32);
    for (unsigned which = 0; which < N_CALLS; which++) {
        int refused = 1;
        for (unsigned i = 0; i < N_WILD; i++) {
            errno = 0;
            long r = call((int)which, WILD[i], fds);
            refused &= r == -1 && errno == EFAULT;
        }
        check(refused, NAMES[which], "a wild pointer was not EFAULT");
    }
    /* The process is whole: the pipe still holds its 32 bytes. */
    char buf[64];
    check(read(fds[0], buf, sizeof buf) == 32, "nothing was consumed", "the pipe changed");
    printf("wildptr passed\n");
    return 0;
}

/* A raw system call in a leaf function that keeps a value in its red zone
 * (the 128 bytes below the stack pointer) across it. eremite must leave
 * this `syscall` in place (a `call` would overwrite the value) and serve
 * it on the trap path. */
#include <stdio.h>

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

int main(void) {
    long kept = 0;
    long pid = getpid_keeping(&kept);
    printf("pid %ld, red zone kept %ld\n", pid, kept);
    return kept == 123 ? 0 : 1;
}

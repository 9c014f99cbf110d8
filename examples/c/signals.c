/* Signals through eremite's Linux ABI: faults delivered to handlers
 * (SIGSEGV on an alternate stack, SIGFPE, a handler that repairs the
 * fault and returns, one that edits the saved registers), signals a
 * thread sends itself (raise, kill, blocked then unblocked, ignored),
 * one sent to another thread (pthread_kill: the handler runs there and
 * ends the read it was blocked in with EINTR), what a handler sees (its
 * mask, SA_RESETHAND), and a busy thread still preempted after all
 * those faults (the timer still reaches the CPU). Each check prints
 * "ok NAME"; the first failure prints "FAIL NAME: why" and exits 1. It
 * passes on Linux too. With the argument "overflow" it recurses until
 * the stack overflows and reports it from a handler on the alternate
 * stack, exit code 3. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include "check.h"

static sigjmp_buf back;
static volatile uintptr_t wild = 16;
static volatile sig_atomic_t seen_signal, seen_code, on_alt_stack, mask_had_it;
static volatile uintptr_t seen_addr;
static char alt_stack[64 * 1024];

static void catch_and_jump(int sig, siginfo_t *si, void *ctx) {
    (void)ctx;
    char here;
    seen_signal = sig;
    seen_code = si->si_code;
    seen_addr = (uintptr_t)si->si_addr;
    on_alt_stack = &here >= alt_stack && &here < alt_stack + sizeof alt_stack;
    sigset_t now;
    sigprocmask(SIG_BLOCK, 0, &now);
    mask_had_it = sigismember(&now, sig);
    siglongjmp(back, 1);
}

static void install(int sig, void (*handler)(int, siginfo_t *, void *), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO | flags;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, 0);
}

static void faults(void) {
    stack_t ss = {.ss_sp = alt_stack, .ss_size = sizeof alt_stack, .ss_flags = 0};
    check(sigaltstack(&ss, 0) == 0, "sigaltstack", "failed");
    install(SIGSEGV, catch_and_jump, SA_ONSTACK);
    if (sigsetjmp(back, 1) == 0) {
        *(volatile int *volatile)wild = 1;
        check(0, "SIGSEGV", "the write did not fault");
    }
    check(seen_signal == SIGSEGV && seen_code == SEGV_MAPERR && seen_addr == 16,
          "SIGSEGV with si_addr and SEGV_MAPERR", "wrong siginfo");
    check(on_alt_stack, "the handler ran on the alternate stack", "it did not");
    check(mask_had_it, "the signal is blocked in its handler", "it was not");
    sigset_t now;
    sigprocmask(SIG_BLOCK, 0, &now);
    check(!sigismember(&now, SIGSEGV), "siglongjmp restored the mask", "still blocked");

    install(SIGFPE, catch_and_jump, 0);
    volatile int zero = 0;
    if (sigsetjmp(back, 1) == 0) {
        volatile int x = 7 / zero;
        (void)x;
        check(0, "SIGFPE", "no fault");
    }
    check(seen_signal == SIGFPE && seen_code == FPE_INTDIV, "SIGFPE for a division by zero",
          "wrong siginfo");
    check(!on_alt_stack, "without SA_ONSTACK, the thread's own stack", "alternate stack");
}

static volatile char *page;

static void repair(int sig, siginfo_t *si, void *ctx) {
    (void)ctx;
    seen_signal = sig;
    seen_code = si->si_code;
    mprotect((void *)page, 4096, PROT_READ | PROT_WRITE);
}

static void repair_and_return(void) {
    page = mmap(0, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    install(SIGSEGV, repair, 0);
    page[100] = 42;
    check(seen_signal == SIGSEGV && seen_code == SEGV_ACCERR && page[100] == 42,
          "a handler repairs a write fault and returns", "wrong outcome");
}

static volatile uintptr_t resume_at;
static volatile int registers_ok;

static void edit_registers(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    greg_t *g = ((ucontext_t *)ctx)->uc_mcontext.gregs;
    registers_ok = g[REG_RBX] == 0x1111 && g[REG_R12] == 0x2222 && g[REG_R13] == 0x3333 &&
                   g[REG_R14] == 0x4444 && g[REG_R15] == 0x5555 && g[REG_RAX] == 0x10 &&
                   (uintptr_t)si->si_addr == 0x10 && g[REG_TRAPNO] == 14;
    g[REG_RAX] = 42;
    g[REG_RBX] = 0x6666;
    g[REG_RIP] = (greg_t)resume_at;
}

static void saved_context(void) {
    install(SIGSEGV, edit_registers, 0);
    uint64_t rbx, r12, r13, r14, r15, rax;
    __asm__ volatile("lea 1f(%%rip), %%rcx\n\t"
                     "mov %%rcx, %[resume]\n\t"
                     "mov $0x1111, %%rbx\n\t"
                     "mov $0x2222, %%r12\n\t"
                     "mov $0x3333, %%r13\n\t"
                     "mov $0x4444, %%r14\n\t"
                     "mov $0x5555, %%r15\n\t"
                     "mov $0x10, %%rax\n\t"
                     "movl $1, (%%rax)\n\t"
                     "1:\n\t"
                     "mov %%rbx, %[rbx]\n\t"
                     "mov %%r12, %[r12]\n\t"
                     "mov %%r13, %[r13]\n\t"
                     "mov %%r14, %[r14]\n\t"
                     "mov %%r15, %[r15]\n\t"
                     "mov %%rax, %[rax]\n\t"
                     : [rbx] "=m"(rbx), [r12] "=m"(r12), [r13] "=m"(r13), [r14] "=m"(r14),
                       [r15] "=m"(r15), [rax] "=m"(rax), [resume] "=m"(resume_at)
                     :
                     : "rax", "rbx", "rcx", "r12", "r13", "r14", "r15", "memory");
    check(registers_ok, "the handler sees every register of the fault", "wrong registers");
    check(rax == 42 && rbx == 0x6666 && r12 == 0x2222 && r13 == 0x3333 && r14 == 0x4444 &&
              r15 == 0x5555,
          "rt_sigreturn restores the registers the handler left", "wrong registers after");
}

static volatile sig_atomic_t usr1_count;

static void count_usr1(int sig) {
    (void)sig;
    usr1_count++;
}

static void sent_to_self(void) {
    signal(SIGUSR1, count_usr1);
    check(raise(SIGUSR1) == 0 && usr1_count == 1, "raise runs the handler", "it did not");
    check(kill(getpid(), SIGUSR1) == 0 && usr1_count == 2, "kill to itself runs the handler",
          "it did not");
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, &old);
    raise(SIGUSR1);
    check(usr1_count == 2, "a blocked signal waits", "it ran");
    sigprocmask(SIG_SETMASK, &old, 0);
    check(usr1_count == 3, "unblocking delivers it", "it did not run");

    signal(SIGUSR2, SIG_IGN);
    check(raise(SIGUSR2) == 0, "an ignored signal is nothing", "failed");
    check(kill(getpid(), 0) == 0, "kill with signal 0 checks the process", "failed");
    check(kill(12345, SIGUSR1) == -1 && errno == ESRCH, "kill to another pid is ESRCH",
          "did not fail so");

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = count_usr1;
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGUSR1, &sa, 0);
    raise(SIGUSR1);
    struct sigaction now;
    sigaction(SIGUSR1, 0, &now);
    check(usr1_count == 4 && now.sa_handler == SIG_DFL, "SA_RESETHAND", "still installed");
}

static volatile pid_t worker_tid, handler_tid;
static int wake_pipe[2];

static void note_thread(int sig) {
    (void)sig;
    handler_tid = gettid();
}

static void *blocked_reader(void *result) {
    worker_tid = gettid();
    char c;
    ssize_t n = read(wake_pipe[0], &c, 1);
    *(int *)result = n == -1 && errno == EINTR;
    return 0;
}

static void to_another_thread(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = note_thread; /* no SA_RESTART: the read fails */
    sigaction(SIGUSR1, &sa, 0);
    pipe(wake_pipe);
    int interrupted = 0;
    pthread_t worker;
    pthread_create(&worker, 0, blocked_reader, &interrupted);
    while (!worker_tid)
        usleep(1000);
    usleep(50000); /* it is in read() by now */
    check(pthread_kill(worker, SIGUSR1) == 0, "pthread_kill to another thread", "failed");
    pthread_join(worker, 0);
    check(handler_tid == worker_tid && handler_tid != gettid(),
          "the handler runs in that thread", "it ran elsewhere or not at all");
    check(interrupted, "its blocked read ends with EINTR", "it did not");
}

static volatile int stop_spinning;

static void *spin(void *unused) {
    (void)unused;
    while (!stop_spinning)
        ;
    return 0;
}

/* On one CPU, only a timer interrupt takes the CPU from a thread that
 * never calls the kernel: the sleeper below wakes only if interrupts
 * still reach the CPU after the faults above (a recovered fault once
 * left them off for good). */
static void preempted_after_faults(void) {
    pthread_t spinner;
    pthread_create(&spinner, 0, spin, 0);
    usleep(30000);
    stop_spinning = 1;
    pthread_join(spinner, 0);
    check(1, "a busy thread is preempted after the faults", "");
}

#pragma GCC diagnostic ignored "-Winfinite-recursion"
static void recurse(volatile char *previous) {
    volatile char frame[1024];
    frame[0] = previous ? previous[0] + 1 : 0;
    recurse(frame);
}

static void overflow_caught(int sig) {
    (void)sig;
    static const char message[] = "stack overflow caught on the alternate stack\n";
    write(1, message, sizeof message - 1);
    _exit(3);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "overflow") == 0) {
        stack_t ss = {.ss_sp = alt_stack, .ss_size = sizeof alt_stack, .ss_flags = 0};
        sigaltstack(&ss, 0);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = overflow_caught;
        sa.sa_flags = SA_ONSTACK;
        sigaction(SIGSEGV, &sa, 0);
        recurse(0);
        return 0;
    }
    faults();
    repair_and_return();
    saved_context();
    sent_to_self();
    to_another_thread();
    preempted_after_faults();
    printf("signals passed\n");
    return 0;
}

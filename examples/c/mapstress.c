/* 10,000 anonymous mappings, their rights changed and checked with real
 * loads and stores.
 *
 * Each mapping (1 to 4 pages) is written with a pattern. Then, three
 * times, both threads (on two CPUs under `--cpus 2`) use every page as
 * its rights allow, so that their TLBs hold those rights, and the main
 * thread gives whole mappings and single pages new protections (none,
 * read, read-write) and unmaps some pages. Afterwards both threads probe
 * every page of every mapping: a read must fault exactly when the page
 * is unmapped or PROT_NONE, and must otherwise return the page's
 * pattern; a write must fault exactly when the page is not read-write.
 * A change that skipped an invalidation, or batched one wrongly, shows
 * up as an access that should have faulted; a stale, narrower entry not
 * recovered, as a fault that should not have happened.
 *
 * Deterministic (a fixed seed): the output, counts included, is the same
 * on Linux and on eremite. Prints "ok ..." per check, exits 1 on the
 * first failure. */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "check.h"

#define MAPPINGS 10000
#define MAX_PAGES 4
#define PAGE 4096
#define ROUNDS 3

enum state { UNMAPPED, NONE, READ, READ_WRITE };

struct mapping {
    unsigned char *base;
    int pages;
    enum state state[MAX_PAGES];
};

static struct mapping maps[MAPPINGS];
static pthread_barrier_t barrier;
static uint64_t seed = 0x9e3779b97f4a7c15ull;

static uint64_t next_random(void) {
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    return seed;
}

static uint64_t pattern(int mapping, int page) {
    return 0x5a5a000000000000ull ^ ((uint64_t)mapping << 8) ^ (uint64_t)page;
}

static __thread sigjmp_buf probe_return;

static void on_fault(int sig, siginfo_t *info, void *context) {
    (void)sig;
    (void)info;
    (void)context;
    siglongjmp(probe_return, 1);
}

/* Read the first and last word of the page; 0 if it faulted. */
static int try_read(volatile uint64_t *page, uint64_t *first, uint64_t *last) {
    if (sigsetjmp(probe_return, 0) != 0) {
        return 0;
    }
    *first = page[0];
    *last = page[PAGE / 8 - 1];
    return 1;
}

/* Write `value` to the first and last word of the page; 0 if it faulted. */
static int try_write(volatile uint64_t *page, uint64_t value) {
    if (sigsetjmp(probe_return, 0) != 0) {
        return 0;
    }
    page[0] = value;
    page[PAGE / 8 - 1] = value;
    return 1;
}

struct tally {
    long pages, reads_denied, writes_denied;
};

/* Probe every page of every mapping; 0 and a message on the first
 * access that did what its state does not allow. */
static int probe_all(const char *who, struct tally *tally) {
    memset(tally, 0, sizeof *tally);
    for (int i = 0; i < MAPPINGS; i++) {
        for (int p = 0; p < maps[i].pages; p++) {
            volatile uint64_t *page = (volatile uint64_t *)(maps[i].base + p * PAGE);
            enum state state = maps[i].state[p];
            uint64_t first = 0, last = 0;
            int is_readable = try_read(page, &first, &last);
            if (is_readable != (state == READ || state == READ_WRITE)) {
                printf("FAIL %s: mapping %d page %d (state %d): read %s\n", who, i, p, state,
                       is_readable ? "succeeded" : "faulted");
                return 0;
            }
            if (is_readable && (first != pattern(i, p) || last != pattern(i, p))) {
                printf("FAIL %s: mapping %d page %d holds %llx %llx\n", who, i, p,
                       (unsigned long long)first, (unsigned long long)last);
                return 0;
            }
            int is_writable = try_write(page, pattern(i, p));
            if (is_writable != (state == READ_WRITE)) {
                printf("FAIL %s: mapping %d page %d (state %d): write %s\n", who, i, p, state,
                       is_writable ? "succeeded" : "faulted");
                return 0;
            }
            tally->pages += state != UNMAPPED;
            tally->reads_denied += !is_readable;
            tally->writes_denied += !is_writable;
        }
    }
    return 1;
}

/* Use every page as its state allows (no fault expected): a read of
 * each readable page, a write of each writable one, so that this CPU's
 * TLB holds their rights when the next round changes them. */
static void touch_all(void) {
    for (int i = 0; i < MAPPINGS; i++) {
        for (int p = 0; p < maps[i].pages; p++) {
            volatile uint64_t *page = (volatile uint64_t *)(maps[i].base + p * PAGE);
            if (maps[i].state[p] == READ_WRITE) {
                page[0] = pattern(i, p);
            } else if (maps[i].state[p] == READ) {
                (void)page[0];
            }
        }
    }
}

static int probe_ok[2];
static struct tally tallies[2];

static void *second_thread(void *unused) {
    (void)unused;
    for (int round = 0; round < ROUNDS; round++) {
        pthread_barrier_wait(&barrier); /* the main thread's changes are done */
        touch_all();
        pthread_barrier_wait(&barrier); /* both have used the pages */
    }
    pthread_barrier_wait(&barrier);
    probe_ok[1] = probe_all("second thread", &tallies[1]);
    pthread_barrier_wait(&barrier); /* both have probed */
    return 0;
}

static int prot_of(enum state state) {
    switch (state) {
    case NONE:
        return PROT_NONE;
    case READ:
        return PROT_READ;
    default:
        return PROT_READ | PROT_WRITE;
    }
}

/* One round of changes: whole mappings and single pages get new
 * protections, some pages are unmapped. The count of calls made. */
static long change(void) {
    long calls = 0;
    for (int i = 0; i < MAPPINGS; i++) {
        struct mapping *m = &maps[i];
        uint64_t r = next_random();
        int action = (int)(r % 10);
        int page = (int)((r >> 8) % (uint64_t)m->pages);
        enum state to = (enum state)(1 + (r >> 16) % 3);
        if (m->state[page] == UNMAPPED) {
            continue;
        }
        int is_whole = 1;
        for (int p = 0; p < m->pages; p++) {
            is_whole &= m->state[p] != UNMAPPED;
        }
        if (action < 4 && is_whole) {
            /* The whole mapping in one call. */
            if (mprotect(m->base, (size_t)m->pages * PAGE, prot_of(to)) != 0) {
                printf("FAIL mprotect of mapping %d\n", i);
                exit(1);
            }
            for (int p = 0; p < m->pages; p++) {
                m->state[p] = to;
            }
            calls++;
        } else if (action < 4) {
            /* The whole mapping, page by page where they are mapped. */
            for (int p = 0; p < m->pages; p++) {
                if (m->state[p] != UNMAPPED) {
                    if (mprotect(m->base + p * PAGE, PAGE, prot_of(to)) != 0) {
                        printf("FAIL mprotect of mapping %d page %d\n", i, p);
                        exit(1);
                    }
                    m->state[p] = to;
                    calls++;
                }
            }
        } else if (action < 8) {
            if (mprotect(m->base + page * PAGE, PAGE, prot_of(to)) != 0) {
                printf("FAIL mprotect of mapping %d page %d\n", i, page);
                exit(1);
            }
            m->state[page] = to;
            calls++;
        } else if (action == 8) {
            if (munmap(m->base + page * PAGE, PAGE) != 0) {
                printf("FAIL munmap of mapping %d page %d\n", i, page);
                exit(1);
            }
            m->state[page] = UNMAPPED;
            calls++;
        }
    }
    return calls;
}

int main(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    check(sigaction(SIGSEGV, &action, 0) == 0, "a SIGSEGV handler", "sigaction failed");
    /* The thread's stack is mapped before the test's mappings, and
     * nothing is mapped after them: an unmapped page stays unmapped. */
    pthread_barrier_init(&barrier, 0, 2);
    pthread_t thread;
    check(pthread_create(&thread, 0, second_thread, 0) == 0, "a second thread",
          "pthread_create failed");

    long pages = 0;
    for (int i = 0; i < MAPPINGS; i++) {
        maps[i].pages = 1 + (int)(next_random() % MAX_PAGES);
        maps[i].base = mmap(0, (size_t)maps[i].pages * PAGE, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (maps[i].base == MAP_FAILED) {
            printf("FAIL mmap number %d\n", i);
            return 1;
        }
        for (int p = 0; p < maps[i].pages; p++) {
            volatile uint64_t *page = (volatile uint64_t *)(maps[i].base + p * PAGE);
            page[0] = pattern(i, p);
            page[PAGE / 8 - 1] = pattern(i, p);
            maps[i].state[p] = READ_WRITE;
        }
        pages += maps[i].pages;
    }
    printf("ok %d mappings of %ld pages, written\n", MAPPINGS, pages);

    for (int round = 0; round < ROUNDS; round++) {
        pthread_barrier_wait(&barrier);
        touch_all();
        pthread_barrier_wait(&barrier);
        long calls = change();
        printf("ok round %d: %ld mprotect and munmap calls after both threads used the pages\n",
               round + 1, calls);
    }
    pthread_barrier_wait(&barrier);
    probe_ok[0] = probe_all("main thread", &tallies[0]);
    pthread_barrier_wait(&barrier);
    if (!probe_ok[0] || !probe_ok[1]) {
        return 1;
    }
    check(memcmp(&tallies[0], &tallies[1], sizeof tallies[0]) == 0,
          "both threads saw the same rights", "they differ");
    printf("ok %ld mapped pages probed by both threads: %ld reads and %ld writes denied\n",
           tallies[0].pages, tallies[0].reads_denied, tallies[0].writes_denied);
    pthread_join(thread, 0);
    puts("mapstress passed");
    return 0;
}

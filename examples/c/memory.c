/* Memory through eremite's Linux ABI: mmap with address hints, MAP_FIXED
 * over the program's own mapping, MAP_FIXED_NOREPLACE, mremap (shrink,
 * grow, move), MADV_DONTNEED, and munmap of a page in the middle (the
 * page faults after). Each check prints "ok NAME"; the first failure
 * prints "FAIL NAME: why" and exits 1. It passes on Linux too. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"

#define PAGE 4096

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

static sigjmp_buf back;

static void on_fault(int sig) {
    (void)sig;
    siglongjmp(back, 1);
}

/* Whether touching `addr` faults. */
static int faults(volatile char *addr) {
    signal(SIGSEGV, on_fault);
    if (sigsetjmp(back, 1) == 0) {
        (void)*addr;
        signal(SIGSEGV, SIG_DFL);
        return 0;
    }
    signal(SIGSEGV, SIG_DFL);
    return 1;
}

static char *map(void *hint, size_t len, int prot, int flags) {
    return mmap(hint, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
}

static int all(const char *p, size_t len, char value) {
    for (size_t i = 0; i < len; i++)
        if (p[i] != value)
            return 0;
    return 1;
}

int main(void) {
    char *p = map(0, 8 * PAGE, PROT_READ | PROT_WRITE, 0);
    check(p != MAP_FAILED && all(p, 8 * PAGE, 0), "mmap gives zeroed memory", "not zero");
    memset(p, 'a', 8 * PAGE);

    /* A hint where memory is free is taken. */
    check(munmap(p, 8 * PAGE) == 0, "munmap", "failed");
    char *q = map(p, 8 * PAGE, PROT_READ | PROT_WRITE, 0);
    check(q == p && all(q, 8 * PAGE, 0), "a free hint is honoured, zeroed", "elsewhere or dirty");
    memset(q, 'a', 8 * PAGE);

    /* MAP_FIXED replaces part of a mapping with fresh zeroed memory. */
    char *fixed = map(q + 2 * PAGE, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_FIXED);
    check(fixed == q + 2 * PAGE, "MAP_FIXED over the program's mapping", "wrong address");
    check(all(q, 2 * PAGE, 'a') && all(q + 2 * PAGE, 3 * PAGE, 0) && all(q + 5 * PAGE, 3 * PAGE, 'a'),
          "only the fixed pages were replaced", "wrong contents");
    char *ro = map(q + 6 * PAGE, PAGE, PROT_READ, MAP_FIXED);
    check(ro == q + 6 * PAGE && all(ro, PAGE, 0), "MAP_FIXED with other rights", "failed");
    errno = 0;
    char *taken = map(q, PAGE, PROT_READ, MAP_FIXED_NOREPLACE);
    check(taken == MAP_FAILED && errno == EEXIST, "MAP_FIXED_NOREPLACE over a mapping is EEXIST",
          "not EEXIST");
    check(map(q + PAGE + 1, PAGE, PROT_READ, MAP_FIXED) == MAP_FAILED && errno == EINVAL,
          "MAP_FIXED misaligned is EINVAL", "not EINVAL");
    munmap(q, 8 * PAGE);

    /* MADV_DONTNEED: the pages read as zero, writable or not. */
    char *z = map(0, 4 * PAGE, PROT_READ | PROT_WRITE, 0);
    memset(z, 'b', 4 * PAGE);
    check(madvise(z + PAGE, PAGE, MADV_DONTNEED) == 0 && all(z, PAGE, 'b') && all(z + PAGE, PAGE, 0) &&
              all(z + 2 * PAGE, 2 * PAGE, 'b'),
          "MADV_DONTNEED zeroes the pages", "wrong contents");
    mprotect(z + 2 * PAGE, 2 * PAGE, PROT_READ);
    check(madvise(z + 2 * PAGE, 2 * PAGE, MADV_DONTNEED) == 0 && all(z + 2 * PAGE, 2 * PAGE, 0),
          "MADV_DONTNEED on read-only pages", "wrong contents");
    check(madvise(z, 4 * PAGE, MADV_FREE) == 0, "MADV_FREE is accepted", "failed");
    munmap(z, 4 * PAGE);

    /* mremap: shrink in place, grow (in place or moved), contents kept. */
    char *r = map(0, 4 * PAGE, PROT_READ | PROT_WRITE, 0);
    memset(r, 'c', 4 * PAGE);
    check(mremap(r, 4 * PAGE, 2 * PAGE, 0) == r, "mremap shrinks in place", "moved");
    char *grown = mremap(r, 2 * PAGE, 64 * PAGE, MREMAP_MAYMOVE);
    check(grown != MAP_FAILED && all(grown, 2 * PAGE, 'c') && all(grown + 2 * PAGE, 62 * PAGE, 0),
          "mremap grows, contents kept, the rest zero", "wrong contents");
    memset(grown + 60 * PAGE, 'd', 4 * PAGE);
    char *spot = map(0, 64 * PAGE, PROT_NONE, 0);
    munmap(spot, 64 * PAGE);
    char *moved = mremap(grown, 64 * PAGE, 64 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, spot);
    check(moved == spot && all(moved, 2 * PAGE, 'c') && all(moved + 60 * PAGE, 4 * PAGE, 'd'),
          "mremap to a fixed address moves the contents", "wrong place or contents");
    check(faults(grown), "the old range is gone after a move", "still mapped");
    check(mremap(grown, PAGE, 2 * PAGE, MREMAP_MAYMOVE) == MAP_FAILED && errno == EFAULT,
          "mremap of unmapped memory is EFAULT", "not EFAULT");
    check(mremap(moved, PAGE, PAGE, MREMAP_FIXED, moved + PAGE) == MAP_FAILED && errno == EINVAL,
          "MREMAP_FIXED needs MREMAP_MAYMOVE", "not EINVAL");

    /* munmap of one page in the middle. */
    check(munmap(moved + 10 * PAGE, PAGE) == 0, "munmap a middle page", "failed");
    check(faults(moved + 10 * PAGE) && !faults(moved + 9 * PAGE) && !faults(moved + 11 * PAGE),
          "only that page faults", "wrong pages");
    munmap(moved, 64 * PAGE);
    printf("memory passed\n");
    return 0;
}

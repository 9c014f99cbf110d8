/* The checks the C examples print: "ok NAME" when `ok` holds; otherwise
 * "FAIL NAME: why" with errno, and exit code 1. */
#ifndef EREMITE_CHECK_H
#define EREMITE_CHECK_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check(int ok, const char *name, const char *why) {
    if (!ok) {
        printf("FAIL %s: %s (errno %d %s)\n", name, why, errno, strerror(errno));
        exit(1);
    }
    printf("ok %s\n", name);
}

#endif

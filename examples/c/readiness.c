/* Readiness through eremite's Linux ABI: pipes, select, poll and epoll
 * (level- and edge-triggered, one-shot) over pipes, an eventfd and
 * loopback sockets, and SIGPIPE. Each check prints "ok NAME"; the first
 * failure prints "FAIL NAME: why" and exits 1. It passes on Linux too.
 * With the argument "sigpipe" it writes to a pipe with no reader and
 * the default SIGPIPE action, which ends it (exit code 141). With
 * "ignore-term" it ignores SIGTERM and SIGINT and sleeps for ever (for
 * the host's second-signal stop). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* How many events epoll_wait gives within timeout_ms, and their words. */
static int wait_events(int ep, int timeout_ms, uint64_t *words, int max) {
    struct epoll_event events[16];
    int n = epoll_wait(ep, events, max < 16 ? max : 16, timeout_ms);
    for (int i = 0; i < n && words; i++)
        words[i] = events[i].data.u64;
    return n;
}

static void *slow_writer(void *arg) {
    int fd = *(int *)arg;
    struct timespec pause = {0, 30 * 1000 * 1000};
    nanosleep(&pause, 0);
    write(fd, "late", 4);
    return 0;
}

static void pipes(void) {
    int p[2];
    check(pipe2(p, O_CLOEXEC) == 0, "pipe2", "failed");
    struct stat st;
    check(fstat(p[0], &st) == 0 && S_ISFIFO(st.st_mode), "a pipe is a FIFO", "wrong mode");
    check(write(p[1], "hello", 5) == 5, "write to a pipe", "short write");
    char buf[16];
    int queued = -1;
    check(ioctl(p[0], FIONREAD, &queued) == 0 && queued == 5, "FIONREAD on a pipe",
          "wrong count");
    check(read(p[0], buf, sizeof buf) == 5 && memcmp(buf, "hello", 5) == 0, "read from a pipe",
          "wrong bytes");

    /* A blocking read waits for a writer on another thread. */
    pthread_t t;
    pthread_create(&t, 0, slow_writer, &p[1]);
    double start = now_ms();
    ssize_t n = read(p[0], buf, sizeof buf);
    check(n == 4 && now_ms() - start >= 20, "a blocking read waits for data", "did not wait");
    pthread_join(t, 0);

    /* Non-blocking: EAGAIN when empty, and when full. */
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    check(read(p[0], buf, sizeof buf) == -1 && errno == EAGAIN, "empty non-blocking read is EAGAIN",
          "did not fail so");
    fcntl(p[1], F_SETFL, O_NONBLOCK);
    static char chunk[4096];
    size_t total = 0;
    for (;;) {
        ssize_t w = write(p[1], chunk, sizeof chunk);
        if (w < 0)
            break;
        total += (size_t)w;
    }
    check(errno == EAGAIN && total == 65536, "a pipe holds 64 KiB", "another size");
    fd_set writable;
    FD_ZERO(&writable);
    FD_SET(p[1], &writable);
    struct timeval zero = {0, 0};
    check(select(p[1] + 1, 0, &writable, 0, &zero) == 0, "select: a full pipe is not writable",
          "it was");
    while (read(p[0], chunk, sizeof chunk) > 0) {
    }
    /* The writer's end closed: end of file, and poll says hang-up. */
    close(p[1]);
    struct pollfd pfd = {p[0], POLLIN, 0};
    check(poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLHUP), "poll: hang-up after the writer",
          "no POLLHUP");
    check(read(p[0], buf, sizeof buf) == 0, "end of file after the writer", "not 0");
    close(p[0]);

    /* No reader: EPIPE when SIGPIPE is ignored. */
    pipe(p);
    close(p[0]);
    signal(SIGPIPE, SIG_IGN);
    check(write(p[1], "x", 1) == -1 && errno == EPIPE, "EPIPE without a reader", "not EPIPE");
    signal(SIGPIPE, SIG_DFL);
    close(p[1]);
}

static void selects(void) {
    int p[2];
    pipe(p);
    fd_set readable;
    FD_ZERO(&readable);
    FD_SET(p[0], &readable);
    struct timeval tv = {0, 50000};
    double start = now_ms();
    int n = select(p[0] + 1, &readable, 0, 0, &tv);
    check(n == 0 && !FD_ISSET(p[0], &readable) && now_ms() - start >= 40,
          "select times out on an empty pipe", "wrong result");
    write(p[1], "x", 1);
    FD_SET(p[0], &readable);
    fd_set writable;
    FD_ZERO(&writable);
    FD_SET(p[1], &writable);
    tv.tv_sec = 1;
    tv.tv_usec = 0;
    n = select(p[1] + 1, &readable, &writable, 0, &tv);
    check(n == 2 && FD_ISSET(p[0], &readable) && FD_ISSET(p[1], &writable),
          "select: readable and writable", "wrong sets");
    FD_ZERO(&readable);
    FD_SET(100, &readable);
    check(select(101, &readable, 0, 0, &tv) == -1 && errno == EBADF, "select: a closed fd is EBADF",
          "did not fail so");
    close(p[0]);
    close(p[1]);
}

static void epolls(void) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    check(ep >= 0, "epoll_create1", "failed");
    int p[2];
    pipe2(p, O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 11};
    check(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) == 0, "EPOLL_CTL_ADD", "failed");
    check(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) == -1 && errno == EEXIST, "adding twice is EEXIST",
          "did not fail so");
    uint64_t words[16];
    check(wait_events(ep, 0, words, 16) == 0, "nothing ready yet", "an event");
    write(p[1], "ab", 2);
    check(wait_events(ep, 1000, words, 16) == 1 && words[0] == 11, "level-triggered: readable",
          "no event");
    check(wait_events(ep, 0, words, 16) == 1, "level-triggered: still readable", "no event");

    /* Edge-triggered: once per arrival, even while still readable. */
    ev.events = EPOLLIN | EPOLLET;
    ev.data.u64 = 12;
    check(epoll_ctl(ep, EPOLL_CTL_MOD, p[0], &ev) == 0, "EPOLL_CTL_MOD", "failed");
    check(wait_events(ep, 0, words, 16) == 1 && words[0] == 12, "edge: ready when modified",
          "no event");
    check(wait_events(ep, 0, words, 16) == 0, "edge: not again without news", "an event");
    write(p[1], "c", 1);
    check(wait_events(ep, 1000, words, 16) == 1, "edge: more data is news", "no event");
    char buf[8];
    check(read(p[0], buf, sizeof buf) == 3, "drain", "wrong count");
    write(p[1], "d", 1);
    check(wait_events(ep, 1000, words, 16) == 1, "edge: data after draining", "no event");
    read(p[0], buf, sizeof buf);

    /* One-shot: once, then nothing until re-armed. */
    ev.events = EPOLLIN | EPOLLONESHOT;
    epoll_ctl(ep, EPOLL_CTL_MOD, p[0], &ev);
    write(p[1], "e", 1);
    check(wait_events(ep, 1000, words, 16) == 1, "one-shot: first event", "no event");
    check(wait_events(ep, 0, words, 16) == 0, "one-shot: disarmed", "an event");
    epoll_ctl(ep, EPOLL_CTL_MOD, p[0], &ev);
    check(wait_events(ep, 0, words, 16) == 1, "one-shot: re-armed", "no event");
    read(p[0], buf, sizeof buf);

    /* An eventfd written again and again, never read: mio's waker. */
    int efd = eventfd(0, EFD_NONBLOCK);
    ev.events = EPOLLIN | EPOLLET;
    ev.data.u64 = 13;
    epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev);
    uint64_t one = 1;
    int woken = 0;
    for (int i = 0; i < 3; i++) {
        write(efd, &one, 8);
        woken += wait_events(ep, 1000, words, 16) == 1 && words[0] == 13;
    }
    check(woken == 3, "edge: every eventfd write wakes", "a write was missed");

    /* A blocked wait ends when another thread writes. */
    pthread_t t;
    pthread_create(&t, 0, slow_writer, &p[1]);
    ev.events = EPOLLIN;
    ev.data.u64 = 14;
    epoll_ctl(ep, EPOLL_CTL_MOD, p[0], &ev);
    double start = now_ms();
    int n = wait_events(ep, 5000, words, 16);
    check(n == 1 && words[0] == 14 && now_ms() - start >= 20, "epoll_wait blocks until a write",
          "wrong wake-up");
    pthread_join(t, 0);
    read(p[0], buf, sizeof buf);

    /* Closing the descriptor removes it from the interest list. */
    write(p[1], "f", 1);
    close(p[0]);
    check(wait_events(ep, 0, words, 16) == 0, "a closed fd leaves the list", "an event");
    check(epoll_ctl(ep, EPOLL_CTL_DEL, p[0], 0) == -1 && errno == EBADF, "EPOLL_CTL_DEL on a closed fd",
          "did not fail so");

    /* Errors. */
    check(epoll_ctl(ep, EPOLL_CTL_ADD, ep, &ev) == -1 && errno == EINVAL, "an epoll cannot watch itself",
          "did not fail so");
    int file = open("/tmp/readiness-file", O_CREAT | O_RDWR, 0600);
    int left = -1;
    write(file, "0123456789", 10);
    lseek(file, 3, SEEK_SET);
    check(ioctl(file, FIONREAD, &left) == 0 && left == 7, "FIONREAD on a file: what is left",
          "wrong count");
    check(epoll_ctl(ep, EPOLL_CTL_ADD, file, &ev) == -1 && errno == EPERM,
          "a regular file is EPERM", "did not fail so");
    close(file);
    unlink("/tmp/readiness-file");
    /* With an event to give, a wild buffer is EFAULT. */
    int q[2];
    pipe(q);
    write(q[1], "g", 1);
    ev.events = EPOLLIN;
    epoll_ctl(ep, EPOLL_CTL_ADD, q[0], &ev);
    struct epoll_event *volatile wild = (struct epoll_event *)16;
    check(epoll_wait(ep, wild, 4, 0) == -1 && errno == EFAULT, "a wild events buffer is EFAULT",
          "did not fail so");
    close(q[0]);
    close(q[1]);
    check(epoll_wait(ep, (struct epoll_event *)words, 0, 0) == -1 && errno == EINVAL,
          "maxevents 0 is EINVAL", "did not fail so");
    close(p[1]);
    close(efd);
    close(ep);
}

/* Sockets under edge-triggered epoll: a listener with two connections
 * waiting, then data arriving twice on a socket that stays readable. */
static void sockets(void) {
    int ep = epoll_create1(0);
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(listener, (struct sockaddr *)&a, sizeof a);
    socklen_t len = sizeof a;
    getsockname(listener, (struct sockaddr *)&a, &len);
    listen(listener, 8);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u64 = 1};
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
    int c1 = socket(AF_INET, SOCK_STREAM, 0);
    check(connect(c1, (struct sockaddr *)&a, sizeof a) == 0, "connect", "failed");
    uint64_t words[16];
    check(wait_events(ep, 1000, words, 16) == 1 && words[0] == 1, "edge: a connection waits",
          "no event");
    int c2 = socket(AF_INET, SOCK_STREAM, 0);
    connect(c2, (struct sockaddr *)&a, sizeof a);
    check(wait_events(ep, 1000, words, 16) == 1, "edge: a second connection is news", "no event");
    int s1 = accept4(listener, 0, 0, SOCK_NONBLOCK);
    int s2 = accept4(listener, 0, 0, SOCK_NONBLOCK);
    check(s1 >= 0 && s2 >= 0 && accept(listener, 0, 0) == -1 && errno == EAGAIN, "accept both",
          "wrong accepts");

    ev.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP;
    ev.data.u64 = 2;
    epoll_ctl(ep, EPOLL_CTL_ADD, s1, &ev);
    struct epoll_event got;
    check(epoll_wait(ep, &got, 1, 1000) == 1 && got.events == EPOLLOUT, "edge: writable at first",
          "wrong events");
    check(epoll_wait(ep, &got, 1, 0) == 0, "edge: then quiet", "an event");
    write(c1, "12345", 5);
    check(epoll_wait(ep, &got, 1, 1000) == 1 && (got.events & EPOLLIN), "edge: data arrives",
          "no event");
    write(c1, "678", 3);
    check(epoll_wait(ep, &got, 1, 1000) == 1 && (got.events & EPOLLIN),
          "edge: more data while unread is news", "no event");
    char buf[16];
    check(read(s1, buf, sizeof buf) == 8, "read it all", "wrong count");
    /* The same amount again after draining. */
    write(c1, "12345", 5);
    check(epoll_wait(ep, &got, 1, 1000) == 1 && (got.events & EPOLLIN),
          "edge: the same amount after draining is news", "no event");
    read(s1, buf, sizeof buf);

    /* The peer closes: a write then fails with EPIPE; MSG_NOSIGNAL keeps
     * SIGPIPE away. */
    close(c1);
    check(epoll_wait(ep, &got, 1, 1000) == 1 && (got.events & EPOLLIN), "edge: the peer's FIN",
          "no event");
    check(read(s1, buf, sizeof buf) == 0, "end of stream", "not 0");
    int failed = 0;
    for (int i = 0; i < 50 && !failed; i++) {
        if (send(s1, "x", 1, MSG_NOSIGNAL) == -1)
            failed = errno == EPIPE || errno == ECONNRESET;
        struct timespec pause = {0, 2 * 1000 * 1000};
        nanosleep(&pause, 0);
    }
    check(failed, "sending to a closed peer fails (MSG_NOSIGNAL)", "it never failed");
    close(s1);
    close(s2);
    close(c2);
    close(listener);
    close(ep);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "sigpipe") == 0) {
        int p[2];
        pipe(p);
        close(p[0]);
        printf("writing to a pipe with no reader\n");
        fflush(stdout);
        write(p[1], "x", 1);
        printf("still alive\n");
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "ignore-term") == 0) {
        signal(SIGTERM, SIG_IGN);
        signal(SIGINT, SIG_IGN);
        printf("ignoring SIGTERM and SIGINT\n");
        fflush(stdout);
        for (;;)
            sleep(1);
    }
    pipes();
    selects();
    epolls();
    sockets();
    printf("readiness passed\n");
    return 0;
}

/* BSD sockets through eremite's Linux ABI, over the guest's own
 * loopback: TCP between two threads (accept4, connect, send/recv,
 * shutdown, scatter-gather sendmsg and recvmsg with MSG_WAITALL), UDP
 * with addresses, options (SO_REUSEADDR, SO_TYPE, SO_ERROR, SO_RCVTIMEO,
 * TCP_NODELAY), and the errors a program must see (a refused
 * connection, a wild pointer, a timeout, an unknown option), and a
 * socketpair (both ways, MSG_DONTWAIT, end of file, EPIPE). It passes
 * on Linux too. Each check prints "ok NAME"; the first failure prints
 * "FAIL NAME: why" and exits 1. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "check.h"

static struct sockaddr_in loopback(unsigned short port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static unsigned short server_port;

static void *client(void *arg) {
    (void)arg;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in to = loopback(server_port);
    if (fd < 0 || connect(fd, (struct sockaddr *)&to, sizeof to))
        return (void *)1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* Three buffers, one message. */
    char a[] = "hello ", b[] = "from ", c[] = "the client";
    struct iovec iov[3] = {{a, 6}, {b, 5}, {c, 10}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 3};
    if (sendmsg(fd, &msg, MSG_NOSIGNAL) != 21)
        return (void *)2;
    char answer[64];
    ssize_t n = recv(fd, answer, sizeof answer, 0);
    if (n != 21 || memcmp(answer, "HELLO FROM THE CLIENT", 21))
        return (void *)3;
    /* The server closes after the answer: end of stream. */
    if (recv(fd, answer, sizeof answer, 0) != 0)
        return (void *)4;
    close(fd);
    return 0;
}

static void tcp(void) {
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    check(listener >= 0, "tcp socket", "socket failed");
    int one = 1;
    check(setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0,
          "SO_REUSEADDR", "setsockopt failed");
    int value = 0;
    socklen_t len = sizeof value;
    check(getsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &value, &len) == 0 && value == 1 &&
              len == sizeof value,
          "SO_REUSEADDR reads back", "getsockopt did not give 1");
    len = sizeof value;
    check(getsockopt(listener, SOL_SOCKET, SO_TYPE, &value, &len) == 0 && value == SOCK_STREAM,
          "SO_TYPE", "not SOCK_STREAM");
    struct sockaddr_in any = loopback(0);
    check(bind(listener, (struct sockaddr *)&any, sizeof any) == 0, "bind port 0", "bind failed");
    struct sockaddr_in bound;
    len = sizeof bound;
    check(getsockname(listener, (struct sockaddr *)&bound, &len) == 0 && len == sizeof bound &&
              bound.sin_port != 0 && bound.sin_addr.s_addr == htonl(INADDR_LOOPBACK),
          "getsockname", "no port chosen");
    server_port = ntohs(bound.sin_port);
    check(listen(listener, 16) == 0, "listen", "listen failed");

    pthread_t t;
    pthread_create(&t, 0, client, 0);
    struct sockaddr_in peer;
    len = sizeof peer;
    int fd = accept4(listener, (struct sockaddr *)&peer, &len, SOCK_CLOEXEC);
    check(fd >= 0 && peer.sin_addr.s_addr == htonl(INADDR_LOOPBACK) && peer.sin_port != 0,
          "accept4 gives the peer", "accept4 failed");
    struct sockaddr_in name;
    len = sizeof name;
    check(getpeername(fd, (struct sockaddr *)&name, &len) == 0 && name.sin_port == peer.sin_port,
          "getpeername", "a different peer");

    /* All 21 bytes, scattered into two buffers (MSG_WAITALL: even if
     * they arrive in pieces). */
    char first[8], rest[13];
    struct iovec iov[2] = {{first, sizeof first}, {rest, sizeof rest}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
    ssize_t got = recvmsg(fd, &msg, MSG_WAITALL);
    char text[32];
    memcpy(text, first, 8);
    memcpy(text + 8, rest, 13);
    check(got == 21 && memcmp(text, "hello from the client", 21) == 0,
          "recvmsg scatters one message", "wrong bytes");
    for (int i = 0; i < 21; i++)
        if (text[i] >= 'a' && text[i] <= 'z')
            text[i] -= 32;
    check(send(fd, text, 21, 0) == 21, "send", "short send");
    check(shutdown(fd, SHUT_WR) == 0, "shutdown", "shutdown failed");
    void *result;
    pthread_join(t, &result);
    check(result == 0, "client saw the answer and the end", "client failed");
    close(fd);

    /* Nobody listens on the port any more once the listener closes. */
    close(listener);
    int refused = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in gone = loopback(server_port);
    check(connect(refused, (struct sockaddr *)&gone, sizeof gone) == -1 && errno == ECONNREFUSED,
          "connection refused", "connect did not fail with ECONNREFUSED");
    close(refused);
}

static void udp(void) {
    int a = socket(AF_INET, SOCK_DGRAM, 0), b = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in any = loopback(0);
    check(a >= 0 && b >= 0 && bind(a, (struct sockaddr *)&any, sizeof any) == 0 &&
              bind(b, (struct sockaddr *)&any, sizeof any) == 0,
          "udp bind", "bind failed");
    struct sockaddr_in at_a, at_b;
    socklen_t len = sizeof at_a;
    getsockname(a, (struct sockaddr *)&at_a, &len);
    len = sizeof at_b;
    getsockname(b, (struct sockaddr *)&at_b, &len);
    check(sendto(a, "ping", 4, 0, (struct sockaddr *)&at_b, sizeof at_b) == 4, "sendto",
          "short send");
    int queued = -1;
    check(ioctl(b, FIONREAD, &queued) == 0 && queued == 4, "FIONREAD: the next datagram's size",
          "wrong size");
    char buf[16];
    struct sockaddr_in from;
    len = sizeof from;
    ssize_t n = recvfrom(b, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
    check(n == 4 && memcmp(buf, "ping", 4) == 0 && from.sin_port == at_a.sin_port,
          "recvfrom gives the sender", "wrong datagram or sender");

    int one = 1;
    check(setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0 ||
              errno == ENOPROTOOPT || errno == EOPNOTSUPP,
          "TCP_NODELAY on UDP is refused or ignored", "unexpected error");
    int value = -1;
    len = sizeof value;
    check(getsockopt(a, SOL_SOCKET, SO_ERROR, &value, &len) == 0 && value == 0, "SO_ERROR",
          "an error pending");

    struct timeval tv = {0, 50000};
    check(setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0, "SO_RCVTIMEO",
          "setsockopt failed");
    struct timeval back;
    len = sizeof back;
    check(getsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &back, &len) == 0 && back.tv_sec == 0 &&
              back.tv_usec >= 50000 && back.tv_usec < 60000, /* Linux rounds to its tick */
          "SO_RCVTIMEO reads back", "a different timeout");
    n = recv(b, buf, sizeof buf, 0);
    check(n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK), "a receive times out",
          "recv did not time out");
    n = recv(b, buf, sizeof buf, MSG_DONTWAIT);
    check(n == -1 && errno == EAGAIN, "MSG_DONTWAIT", "recv waited");
    close(a);
    close(b);
}

static void errors(void) {
    /* eremite has no IPv6 yet; Linux has. */
    int v6 = socket(AF_INET6, SOCK_STREAM, 0);
    check(v6 >= 0 || errno == EAFNOSUPPORT, "AF_INET6 works or is EAFNOSUPPORT",
          "another error");
    if (v6 >= 0)
        close(v6);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    check(bind(fd, (struct sockaddr *)16, sizeof(struct sockaddr_in)) == -1 && errno == EFAULT,
          "a wild address is EFAULT", "bind did not fail so");
    int value;
    check(getsockopt(fd, SOL_SOCKET, 12345, &value, &(socklen_t){4}) == -1 &&
              errno == ENOPROTOOPT,
          "an unknown option is ENOPROTOOPT", "getsockopt did not fail so");
    check(listen(0, 1) == -1 && errno == ENOTSOCK, "listen on stdin is ENOTSOCK",
          "listen did not fail so");
    close(fd);
}

static void pair(void) {
    int sv[2];
    char buf[16];
    check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair", "failed");
    check(write(sv[0], "ping", 4) == 4 && read(sv[1], buf, sizeof buf) == 4 &&
              memcmp(buf, "ping", 4) == 0,
          "socketpair one way", "lost the bytes");
    check(send(sv[1], "pong", 4, 0) == 4 && recv(sv[0], buf, sizeof buf, 0) == 4 &&
              memcmp(buf, "pong", 4) == 0,
          "socketpair the other way (send, recv)", "lost the bytes");
    check(recv(sv[0], buf, sizeof buf, MSG_DONTWAIT) == -1 && errno == EAGAIN,
          "socketpair MSG_DONTWAIT on nothing is EAGAIN", "did not fail so");
    close(sv[1]);
    check(read(sv[0], buf, sizeof buf) == 0, "socketpair end of file when the peer closes",
          "not 0");
    check(send(sv[0], "x", 1, MSG_NOSIGNAL) == -1 && errno == EPIPE,
          "socketpair send to a closed peer is EPIPE", "did not fail so");
    close(sv[0]);
}

int main(void) {
    tcp();
    udp();
    errors();
    pair();
    printf("sockets passed\n");
    return 0;
}

/* A line echo server on one thread with edge-triggered epoll, as C
 * servers are written: non-blocking sockets, accept until EAGAIN, read
 * until EAGAIN, and writes that wait for EPOLLOUT when the peer is slow.
 * `echo [PORT]` (default 7777) prints "listening on PORT"; every line a
 * client sends comes back; a line "quit" ends the server, which then
 * prints how many connections it served and returns 0. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CLIENTS 1024
#define BUFFER 65536

/* What a connection has read but not yet echoed. */
struct client {
    int fd;
    size_t pending;
    char out[BUFFER];
};

static struct client *clients[MAX_CLIENTS];

static void drop_client(int ep, struct client *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, 0);
    close(c->fd);
    clients[c->fd % MAX_CLIENTS] = 0;
    free(c);
}

/* Write what is pending; 0 when it is all out, 1 if the socket is full,
 * -1 if the client is gone. */
static int flush_client(struct client *c) {
    while (c->pending > 0) {
        ssize_t n = send(c->fd, c->out, c->pending, MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN ? 1 : -1;
        memmove(c->out, c->out + n, c->pending - (size_t)n);
        c->pending -= (size_t)n;
    }
    return 0;
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 7777;
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    if (bind(listener, (struct sockaddr *)&a, sizeof a) || listen(listener, 64)) {
        fprintf(stderr, "echo: cannot listen on port %d: %s\n", port, strerror(errno));
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = listener};
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
    printf("listening on %d\n", port);
    fflush(stdout);

    long served = 0;
    int running = 1;
    while (running) {
        struct epoll_event events[64];
        int n = epoll_wait(ep, events, 64, -1);
        for (int i = 0; i < n; i++) {
            if (events[i].data.fd == listener) {
                for (;;) {
                    int fd = accept4(listener, 0, 0, SOCK_NONBLOCK);
                    if (fd < 0)
                        break;
                    if (fd >= MAX_CLIENTS || !(clients[fd] = calloc(1, sizeof(struct client)))) {
                        close(fd);
                        continue;
                    }
                    clients[fd]->fd = fd;
                    served++;
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP,
                                              .data.fd = fd};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            struct client *c = clients[events[i].data.fd];
            if (!c)
                continue;
            int gone = 0;
            /* Read until EAGAIN (edge-triggered), echoing as room allows. */
            while (!gone && c->pending < BUFFER) {
                ssize_t got = recv(c->fd, c->out + c->pending, BUFFER - c->pending, 0);
                if (got == 0 || (got < 0 && errno != EAGAIN)) {
                    gone = 1;
                } else if (got < 0) {
                    break;
                } else {
                    size_t start = c->pending;
                    c->pending += (size_t)got;
                    char *quit = memmem(c->out + (start >= 5 ? start - 5 : 0),
                                        c->pending - (start >= 5 ? start - 5 : 0), "quit\n", 5);
                    if (quit && (quit == c->out || quit[-1] == '\n'))
                        running = 0;
                }
                if (flush_client(c) < 0)
                    gone = 1;
            }
            if (!gone && flush_client(c) < 0)
                gone = 1;
            if (gone)
                drop_client(ep, c);
        }
    }
    for (int fd = 0; fd < MAX_CLIENTS; fd++)
        if (clients[fd]) {
            flush_client(clients[fd]);
            drop_client(ep, clients[fd]);
        }
    printf("served %ld connections\n", served);
    return 0;
}

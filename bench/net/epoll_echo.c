/* The physical-limit reference for bench/net: a single-threaded,
 * level-triggered epoll server in plain C, driven by the same client.py and
 * measured the same way as the Python servers.
 *
 *     epoll_echo [-H] tcp HOST PORT     (PORT 0: any free port)
 *     epoll_echo [-H] unix PATH
 *
 * Echo mode sends back whatever arrives. -H answers every HTTP request (a
 * request ends at its blank line; the benchmark's GETs carry no body) with
 * the same fixed response as servers.py's http style. Prints "ready tcp HOST
 * PORT" or "ready unix PATH" once listening, then serves until killed.
 *
 * Its CPU time per request is what the kernel's socket path costs with next
 * to nothing in user space: the floor every event loop sits on.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define RECV_SIZE (256 * 1024)
#define MAX_EVENTS 256

static const char HTTP_RESPONSE[] =
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 13\r\n"
    "\r\n"
    "Hello, World!";

/* One connection: bytes accepted for sending but not yet sent (a partial
 * write), and how far into "\r\n\r\n" the HTTP request matcher is. */
struct conn {
    char *pending;
    size_t pending_len, pending_cap;
    int http_match;
};

static struct conn *conns;  /* indexed by fd */
static int conns_cap;
static int http_mode, is_tcp, ep;
static char buf[RECV_SIZE];
static char out[RECV_SIZE];

static void die(const char *what) {
    perror(what);
    exit(1);
}

static struct conn *conn_for(int fd) {
    if (fd >= conns_cap) {
        int cap = conns_cap ? conns_cap : 1024;
        while (cap <= fd)
            cap *= 2;
        conns = realloc(conns, cap * sizeof *conns);
        if (!conns)
            die("realloc");
        memset(conns + conns_cap, 0, (cap - conns_cap) * sizeof *conns);
        conns_cap = cap;
    }
    return &conns[fd];
}

static void drop(int fd) {
    struct conn *c = conn_for(fd);
    free(c->pending);
    memset(c, 0, sizeof *c);
    close(fd);  /* also leaves the epoll set: nothing else holds the fd */
}

/* Keep len bytes after what is already pending, for flush(). */
static void queue(struct conn *c, const char *data, size_t len) {
    if (c->pending_len + len > c->pending_cap) {
        size_t cap = c->pending_cap ? c->pending_cap : 4096;
        while (cap < c->pending_len + len)
            cap *= 2;
        c->pending = realloc(c->pending, cap);
        if (!c->pending)
            die("realloc");
        c->pending_cap = cap;
    }
    memcpy(c->pending + c->pending_len, data, len);
    c->pending_len += len;
}

/* Send what is pending. Returns 0 when all of it went out, 1 when the socket
 * is full (the caller waits for EPOLLOUT), -1 on a dead peer. */
static int flush(int fd, struct conn *c) {
    size_t sent = 0;
    while (sent < c->pending_len) {
        ssize_t n = send(fd, c->pending + sent, c->pending_len - sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                return -1;
            break;
        }
        sent += (size_t)n;
    }
    memmove(c->pending, c->pending + sent, c->pending_len - sent);
    c->pending_len -= sent;
    return c->pending_len ? 1 : 0;
}

/* Send data now (nothing is pending: reading stops while anything is);
 * whatever the socket does not take is queued. Returns as flush() does. */
static int send_or_queue(int fd, struct conn *c, const char *data, size_t len) {
    ssize_t n;
    do
        n = send(fd, data, len, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno != EAGAIN)
            return -1;
        n = 0;
    }
    if ((size_t)n == len)
        return 0;
    queue(c, data + n, len - (size_t)n);  /* the socket is full: wait for EPOLLOUT */
    return 1;
}

static void watch(int fd, unsigned events, int op) {
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(ep, op, fd, &ev) < 0)
        die("epoll_ctl");
}

/* The reply to n bytes just read: the bytes themselves (echo), or one fixed
 * response per completed request (-H). Returns its length in out/buf. */
static size_t reply(struct conn *c, ssize_t n, const char **data) {
    static const char end[] = "\r\n\r\n";
    size_t len = 0;
    if (!http_mode) {
        *data = buf;
        return (size_t)n;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == end[c->http_match])
            c->http_match++;
        else
            c->http_match = buf[i] == '\r' ? 1 : 0;
        if (c->http_match == 4) {
            c->http_match = 0;
            if (len + sizeof HTTP_RESPONSE - 1 <= sizeof out) {
                memcpy(out + len, HTTP_RESPONSE, sizeof HTTP_RESPONSE - 1);
                len += sizeof HTTP_RESPONSE - 1;
            }
        }
    }
    *data = out;
    return len;
}

static void on_readable(int fd) {
    struct conn *c = conn_for(fd);
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {  /* EOF, or a reset (the reconnect client closes with RST) */
        drop(fd);
        return;
    }
    const char *data;
    size_t len = reply(c, n, &data);
    int r = len ? send_or_queue(fd, c, data, len) : 0;
    if (r < 0)
        drop(fd);
    else if (r > 0)  /* stop reading until the peer takes what is queued */
        watch(fd, EPOLLOUT, EPOLL_CTL_MOD);
}

static void on_writable(int fd) {
    struct conn *c = conn_for(fd);
    int r = flush(fd, c);
    if (r < 0)
        drop(fd);
    else if (r == 0)
        watch(fd, EPOLLIN, EPOLL_CTL_MOD);
}

static void on_accept(int lfd) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return;  /* EAGAIN: the backlog is empty; EMFILE and friends: retry next wake-up */
        }
        if (is_tcp) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        conn_for(fd);
        watch(fd, EPOLLIN, EPOLL_CTL_ADD);
    }
}

static int listen_on(int argc, char **argv) {
    int fd, one = 1;
    if (argc == 3 && strcmp(argv[0], "tcp") == 0) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
        socklen_t salen = sizeof sa;
        char host[INET_ADDRSTRLEN];
        if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
            fprintf(stderr, "bad IPv4 address %s\n", argv[1]);
            exit(2);
        }
        is_tcp = 1;
        fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            die("socket");
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
            die("bind");
        if (listen(fd, 1024) < 0)
            die("listen");
        getsockname(fd, (struct sockaddr *)&sa, &salen);
        inet_ntop(AF_INET, &sa.sin_addr, host, sizeof host);
        printf("ready tcp %s %d\n", host, ntohs(sa.sin_port));
    } else if (argc == 2 && strcmp(argv[0], "unix") == 0) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(argv[1]) >= sizeof sa.sun_path) {
            fprintf(stderr, "unix socket path too long\n");
            exit(2);
        }
        strcpy(sa.sun_path, argv[1]);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            die("socket");
        unlink(argv[1]);
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
            die("bind");
        if (listen(fd, 1024) < 0)
            die("listen");
        printf("ready unix %s\n", argv[1]);
    } else {
        fprintf(stderr, "usage: epoll_echo [-H] tcp HOST PORT | epoll_echo [-H] unix PATH\n");
        exit(2);
    }
    fflush(stdout);
    return fd;
}

int main(int argc, char **argv) {
    argc--, argv++;
    if (argc > 0 && strcmp(argv[0], "-H") == 0) {
        http_mode = 1;
        argc--, argv++;
    }
    int lfd = listen_on(argc, argv);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    watch(lfd, EPOLLIN, EPOLL_CTL_ADD);

    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            unsigned ev = events[i].events;
            if (fd == lfd)
                on_accept(lfd);
            else if (ev & EPOLLOUT)
                on_writable(fd);
            else
                on_readable(fd);  /* EPOLLIN, or EPOLLHUP/EPOLLERR: recv() reports it */
        }
    }
}

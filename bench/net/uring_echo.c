/* A completion-based (io_uring) echo server in plain C: the counterpart of
 * epoll_echo.c for asking whether an event loop built on io_uring instead of
 * readiness polling could serve a request with less server CPU. Driven by
 * uring_probe.py with the same client and measurement as run.py.
 *
 *     uring_echo tcp HOST PORT          (PORT 0: any free port)
 *     URING_FLAGS=defer uring_echo ...  (SINGLE_ISSUER | DEFER_TASKRUN: the
 *                                        kernel runs completions only when
 *                                        the server waits, not on interrupts)
 *
 * Per request the server makes one system call: the receive's completion
 * arrives, the echo's send (linked to the connection's next receive, so the
 * buffer is not reused before it is sent) is queued, and a single
 * io_uring_enter() submits both and waits for the next completion. The
 * epoll server makes three (epoll_wait, recv, send). Needs liburing
 * (apt-get install liburing-dev); prints "ready tcp HOST PORT" once
 * listening, then serves until killed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define RECV_SIZE (256 * 1024)

/* user_data: a connection pointer (8-byte aligned) with the operation in
 * its low bits; the accept has no connection. */
enum { OP_ACCEPT = 0, OP_RECV = 1, OP_SEND = 2 };

struct conn {
    int fd;
    char *buf;
};

static struct io_uring ring;
static int listen_fd;

static struct io_uring_sqe *next_sqe(void)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    if (sqe == NULL) {          /* queue full: hand the kernel what is there */
        io_uring_submit(&ring);
        sqe = io_uring_get_sqe(&ring);
    }
    return sqe;
}

static void queue_accept(void)
{
    struct io_uring_sqe *sqe = next_sqe();
    io_uring_prep_accept(sqe, listen_fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, OP_ACCEPT);
}

static void queue_recv(struct conn *c)
{
    struct io_uring_sqe *sqe = next_sqe();
    io_uring_prep_recv(sqe, c->fd, c->buf, RECV_SIZE, 0);
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | OP_RECV);
}

/* The echo, then the next receive once it is sent. MSG_WAITALL makes the
 * kernel finish a short send itself; a failed send cancels the receive,
 * whose completion (-ECANCELED) closes the connection. A successful send
 * posts no completion. */
static void queue_echo(struct conn *c, int len)
{
    struct io_uring_sqe *sqe = next_sqe();
    io_uring_prep_send(sqe, c->fd, c->buf, len, MSG_WAITALL);
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | OP_SEND);
    sqe->flags |= IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
    queue_recv(c);
}

static void on_accepted(int fd)
{
    int one = 1;
    struct conn *c = malloc(sizeof *c);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->buf = malloc(RECV_SIZE);
    queue_recv(c);
}

static void close_conn(struct conn *c)
{
    close(c->fd);
    free(c->buf);
    free(c);
}

int main(int argc, char **argv)
{
    struct io_uring_params params = {0};
    struct sockaddr_in addr = {.sin_family = AF_INET};
    socklen_t addr_len = sizeof addr;
    const char *flags = getenv("URING_FLAGS");
    int one = 1;

    if (argc != 4 || strcmp(argv[1], "tcp") != 0) {
        fprintf(stderr, "usage: uring_echo tcp HOST PORT\n");
        return 2;
    }
    if (flags != NULL && strcmp(flags, "defer") == 0)
        params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    int err = io_uring_queue_init_params(256, &ring, &params);
    if (err < 0) {
        fprintf(stderr, "io_uring_queue_init: %s\n", strerror(-err));
        return 1;
    }
    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    addr.sin_port = htons(atoi(argv[3]));
    if (inet_pton(AF_INET, argv[2], &addr.sin_addr) != 1
            || bind(listen_fd, (struct sockaddr *)&addr, sizeof addr) != 0
            || listen(listen_fd, 1024) != 0) {
        perror("listen");
        return 1;
    }
    getsockname(listen_fd, (struct sockaddr *)&addr, &addr_len);
    printf("ready tcp %s %d\n", argv[2], ntohs(addr.sin_port));
    fflush(stdout);

    queue_accept();
    for (;;) {
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;

        io_uring_submit_and_wait(&ring, 1);
        io_uring_for_each_cqe(&ring, head, cqe) {
            struct conn *c = (struct conn *)(uintptr_t)(cqe->user_data & ~(uint64_t)3);
            int res = cqe->res;

            seen++;
            switch (cqe->user_data & 3) {
            case OP_ACCEPT:
                if (res >= 0)
                    on_accepted(res);
                queue_accept();     /* errors (EMFILE...) are retried: a probe */
                break;
            case OP_RECV:
                if (res > 0)
                    queue_echo(c, res);
                else
                    close_conn(c);  /* EOF, reset, or the send failed */
                break;
            default:                /* a failed send: its receive reports it */
                break;
            }
        }
        io_uring_cq_advance(&ring, seen);
    }
}

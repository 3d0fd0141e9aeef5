/* The system calls of the I/O hot paths, made in place on x86-64 Linux.
 *
 * Why: profiles put much of the servers' user time on the instructions
 * right after the returns that follow a system call (most likely the
 * kernel's deep call chains leave the processor's return predictions
 * useless, and its copies evict our code), and glibc's socket wrappers add a
 * frame of their own, plus a call on each side of the system call (the
 * cancellation-point bookkeeping) once the process has ever started a
 * thread. Measured on this project's machine (an AMD EPYC guest): a
 * send()+recv() pair on a loopback socket spent 170-220 ns of user time
 * made in place against 230-245 ns through glibc; see docs/DESIGN.md,
 * "System calls made in place", for the servers' figures.
 *
 * Each function behaves as the libc one it stands for: the result, or -1
 * with errno set. Elsewhere (other architectures, other systems) they are
 * the libc calls.
 */
#ifndef FASTLOOP_SYSCALLS_H
#define FASTLOOP_SYSCALLS_H

#include <errno.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>

#if defined(__linux__) && defined(__x86_64__) && !defined(__ILP32__)
#include <sys/epoll.h>
#include <sys/syscall.h>
#define FL_INLINE_SYSCALLS 1

/* The x86-64 Linux convention: number in rax, arguments in rdi, rsi, rdx,
 * r10, r8, r9; the kernel clobbers rcx and r11; -errno on failure. */
static inline long fl_syscall6(long nr, long a1, long a2, long a3, long a4, long a5, long a6)
{
    long ret;
    register long r10 __asm__("r10") = a4;
    register long r8 __asm__("r8") = a5;
    register long r9 __asm__("r9") = a6;
    __asm__ volatile ("syscall"
                      : "=a"(ret)
                      : "a"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9)
                      : "rcx", "r11", "memory");
    return ret;
}

static inline long fl_syscall_result(long ret)
{
    if ((unsigned long)ret > (unsigned long)-4096L) {
        errno = (int)-ret;
        return -1;
    }
    return ret;
}

static inline ssize_t fl_recv(int fd, void *buf, size_t n, int flags)
{
    return fl_syscall_result(fl_syscall6(SYS_recvfrom, fd, (long)buf, (long)n, flags, 0, 0));
}

static inline ssize_t fl_send(int fd, const void *buf, size_t n, int flags)
{
    return fl_syscall_result(fl_syscall6(SYS_sendto, fd, (long)buf, (long)n, flags, 0, 0));
}

static inline ssize_t fl_writev(int fd, const struct iovec *iov, int iovcnt)
{
    return fl_syscall_result(fl_syscall6(SYS_writev, fd, (long)iov, iovcnt, 0, 0, 0));
}

static inline int fl_epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)
{
    return (int)fl_syscall_result(fl_syscall6(SYS_epoll_wait, epfd, (long)events, maxevents, timeout, 0, 0));
}

#else
#define FL_INLINE_SYSCALLS 0
#define fl_recv recv
#define fl_send send
#define fl_writev writev
#define fl_epoll_wait epoll_wait
#endif

#endif /* FASTLOOP_SYSCALLS_H */

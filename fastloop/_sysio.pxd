# Socket system calls for the C I/O paths (_transports.pyx, _sockops.pyx),
# and turning their errno into the exception the socket module would raise.

from libc.errno cimport EAGAIN

cdef extern from "<errno.h>":
    int EWOULDBLOCK

cdef extern from "_compat.h":
    ctypedef long ssize_t
    struct iovec:
        void* iov_base
        size_t iov_len
    int FL_MSG_NOSIGNAL          # MSG_NOSIGNAL where it exists, else 0

# The libc calls' behaviour, made in place where _syscalls.h can (fewer
# function returns after each system call: see there).
cdef extern from "_syscalls.h":
    ssize_t recv "fl_recv" (int fd, void* buf, size_t n, int flags) nogil
    ssize_t send "fl_send" (int fd, const void* buf, size_t n, int flags) nogil
    ssize_t writev "fl_writev" (int fd, const iovec* iov, int iovcnt) nogil


cdef extern from "_compat.h":
    object fl_strerror(int err)


cdef inline object os_error(int err):
    # OSError(errno, ...) picks the subclass (ConnectionResetError, ...).
    return OSError(err, fl_strerror(err))


cdef inline bint would_block(int err) noexcept:
    return err == EAGAIN or err == EWOULDBLOCK


# Accepting (see _compat.h) and the addresses of internet sockets.
cdef extern from "_compat.h" nogil:
    int FL_HAVE_ACCEPT4
    int SOCK_NONBLOCK
    int AF_INET
    int AF_INET6
    ctypedef unsigned int socklen_t
    struct sockaddr:
        pass
    struct sockaddr_storage:
        unsigned short ss_family
    struct in_addr:
        pass
    struct sockaddr_in:
        unsigned short sin_port
        in_addr sin_addr
    struct in6_addr:
        pass
    struct sockaddr_in6:
        unsigned short sin6_port
        unsigned int sin6_flowinfo
        in6_addr sin6_addr
        unsigned int sin6_scope_id
    int fl_accept_nonblocking(int fd, sockaddr_storage* addr, socklen_t* len)
    int getsockname(int fd, sockaddr* addr, socklen_t* len)
    int fl_set_tcp_nodelay(int fd)
    const char* inet_ntop(int af, const void* src, char* dst, socklen_t size)
    unsigned short ntohs(unsigned short)
    unsigned int ntohl(unsigned int)

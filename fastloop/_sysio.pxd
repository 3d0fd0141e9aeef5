# Socket system calls for the C I/O paths (_transports.pyx, _sockops.pyx),
# and turning their errno into the exception the socket module would raise.

from libc.errno cimport EAGAIN
from libc.string cimport strerror

cdef extern from "<errno.h>":
    int EWOULDBLOCK

cdef extern from "_compat.h":
    ctypedef long ssize_t
    struct iovec:
        void* iov_base
        size_t iov_len
    ssize_t recv(int fd, void* buf, size_t n, int flags) nogil
    ssize_t send(int fd, const void* buf, size_t n, int flags) nogil
    ssize_t writev(int fd, const iovec* iov, int iovcnt) nogil
    int FL_MSG_NOSIGNAL          # MSG_NOSIGNAL where it exists, else 0


cdef inline object os_error(int err):
    # OSError(errno, ...) picks the subclass (ConnectionResetError, ...).
    return OSError(err, strerror(err).decode("utf-8", "replace"))


cdef inline bint would_block(int err) noexcept:
    return err == EAGAIN or err == EWOULDBLOCK

# Socket reads, and the bytes objects their data is delivered in (stream
# transports' data_received() and loop.sock_recv()).
from fastloop._sysio cimport ssize_t

cdef enum:
    # asyncio reads up to this much per recv() (its transports' max_size).
    READ_SIZE = 256 * 1024

# One recv() of up to limit (<= READ_SIZE) bytes from fd: the count, 0 at the
# peer's EOF, or -1 with errno set. One read at a time per thread holding the
# GIL, each followed by received() before the next.
cdef ssize_t read_some(int fd, Py_ssize_t limit) except -2
# The n bytes the last read_some() returned, as a bytes object of their own.
cdef bytes received(Py_ssize_t n)
# Where the data of the last read_some() is, for a caller that copies it
# out itself instead of calling received().
cdef char* last_read_data() noexcept

# Feeding asyncio's StreamReader from a stream transport's reads, in C
# (see _streams.pyx).
from fastloop._sysio cimport ssize_t

# data_received, a protocol's bound method, is asyncio's
# StreamReaderProtocol.data_received: feed_stream_reader() may stand in for it.
cdef bint runs_stream_reader_protocol(object data_received) noexcept

# What protocol.data_received(<one recv() from fd>) would do, with the data
# received into the reader's buffer: the count, 0 at EOF, -1 if recv()
# failed (*err holds its errno), -2 if it must be left to data_received()
# (nothing was read). *last_size: the size of the connection's previous
# read (0 at first), which decides how the next is received; updated.
cdef ssize_t feed_stream_reader(object protocol, int fd, Py_ssize_t* last_size,
                                int* err) except -3

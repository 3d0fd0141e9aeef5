# Feeding asyncio's StreamReader from a stream transport's reads, in C
# (see _streams.pyx).
from fastloop._sysio cimport ssize_t

# data_received, what a protocol's type has under that name, is asyncio's
# StreamReaderProtocol.data_received: feed_stream_reader() may stand in for
# it (while a look-up of the protocol's data_received still finds it).
cdef bint runs_stream_reader_protocol(object data_received) noexcept

# What protocol.data_received(<one recv() from fd>) would do, with the data
# received into the reader's buffer: the count, 0 at EOF, -1 if recv()
# failed (*err holds its errno), -2 if it must be left to data_received()
# (nothing was read). *hint: the connection's read size hint (0 at first;
# follows the sizes of its reads), which decides how each is received.
cdef ssize_t feed_stream_reader(object protocol, int fd, Py_ssize_t* hint,
                                int* err) except -3

# The memory socket reads go into, and the bytes objects they are delivered
# in (stream transports' data_received() and loop.sock_recv()).

cdef enum:
    # asyncio reads up to this much per recv() (its transports' max_size).
    READ_SIZE = 256 * 1024

# Where the next recv() of up to READ_SIZE bytes goes. Valid until received()
# or the next call; one read at a time per thread holding the GIL.
cdef char* receive_buffer() except NULL
# The first n bytes of the receive buffer as a bytes object of their own.
cdef bytes received(Py_ssize_t n)

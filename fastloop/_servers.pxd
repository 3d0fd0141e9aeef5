# asyncio.Server's bookkeeping of its connections, which every accepted
# connection's transport does at its start and end (see _servers.pyx).

# server._attach(transport) / server._detach(transport) as asyncio's code
# calls them for the running Python (3.13 passes the transport, earlier
# versions do not), their steps run in C while they are asyncio's own.
cdef int server_attach(object server, object transport) except -1
cdef int server_detach(object server, object transport) except -1

# server._sockets is not None: the server is open (not yet closed).
cdef bint server_is_open(object server) except -1

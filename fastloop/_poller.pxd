# Contract of the OS readiness interface used by the loop core.
#
# Interest and readiness are bit masks of READABLE and WRITABLE. epoll and
# poll report errors and hang-ups as both, as the selectors module does, so
# that whoever waits on the fd gets to see the error; kqueue reports them on
# the filters that are registered (EV_EOF), as selectors.KqueueSelector does.
#
# A readiness report may also carry PEER_CLOSED: the peer of a stream socket
# watched for reading has shut down its sending side (a FIN arrived; epoll's
# and poll's RDHUP, kqueue's EV_EOF on the read filter). It is a hint no
# selector gives asyncio, never a reason to wake anyone: the loop notes it
# for the fd's transport (see LoopCore.peer_closed()).

cdef enum:
    READABLE = 1
    WRITABLE = 2
    PEER_CLOSED = 4

cdef enum:
    # Ready.tag of a backend that keeps no kernel registrations (poll): the
    # event is always about the file the fd number names now. Real tags are
    # never 0.
    TAG_ANY = 0

cdef struct Ready:
    int fd
    int events
    unsigned int tag          # the tag the fd was registered with (see update())


cdef class Poller:
    cdef readonly str name
    cdef Ready* ready          # filled by wait(), `capacity` entries
    cdef int capacity
    cdef int nfds              # registered fds
    cdef bint busy             # the last wait reported several events

    # Change the interest set of fd from `old` to `new` (0 means unregistered).
    # `tag` comes back in Ready.tag for events of this registration: the loop
    # recognises events of a registration it no longer knows (a closed fd's
    # file kept open elsewhere) by a tag that does not match.
    cdef int update(self, int fd, int old, int new, unsigned int tag) except -1
    # Wait up to timeout_ms (-1: forever, 0: don't block; the GIL is released
    # only to block) and return how many entries of `ready` are filled.
    # A signal that interrupts the wait runs the Python signal handlers; their
    # exception propagates.
    cdef int wait(self, int timeout_ms) except -1
    # Drop the kernel state and start from scratch: after fork() (the state
    # the parent left, `after_fork`) or to shed stale registrations.
    cdef int reinit(self, bint after_fork) except -1
    cdef close(self)


cdef Poller new_poller(str name)

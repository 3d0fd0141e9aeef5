# Contract of the loop core: scheduling, timers, fd registry and the run loop.
# Transports (later modules) register Handle subclasses as fd readers/writers
# through set_io_handle()/clear_io_handle(), so their events are dispatched by a
# C method call, with no Python-level callback in between.

from cpython.object cimport PyObject
from fastloop._handles cimport LoopBase, Handle, TimerHandle, WriteSettler
from fastloop._poller cimport Poller


cdef struct TimerEntry:
    double when
    unsigned long long seq        # breaks ties: equal deadlines run in FIFO order
    PyObject* timer               # owned reference to a TimerHandle


cdef struct FdEntry:
    PyObject* reader              # owned reference to a Handle, or NULL
    PyObject* writer
    int events                    # interest of the current reader/writer
    int kernel                    # interest registered with the poller: a superset
                                  # of `events` (see release_io_handle)
    unsigned int tag              # the poller registration's tag
    PyObject* owner               # owned weakref to the socket whose interest was
                                  # left registered while events == 0, or NULL
    bint peer_closed              # the poller reported PEER_CLOSED for this registration


cdef class LoopCore(LoopBase):
    # ready queue: a ring of owned Handle references
    cdef PyObject** ready
    cdef Py_ssize_t ready_head
    cdef Py_ssize_t ready_len
    cdef Py_ssize_t ready_capacity  # a power of two

    # timers: a binary heap ordered by (when, seq), cancelled entries removed lazily
    cdef TimerEntry* timers
    cdef Py_ssize_t ntimers
    cdef Py_ssize_t timers_capacity
    cdef unsigned long long timer_seq

    # fd registry, indexed by fd
    cdef FdEntry* fds
    cdef int fds_capacity
    cdef int user_fds               # fds with interest, not counting the wake-up fd
    cdef unsigned int last_tag      # tag of the latest poller registration
    cdef bint stale_registration    # the poller reported a registration we do not know
    cdef dict fileobjs              # fd -> file object it was registered with
    cdef PyObject** io_pending      # handles made ready by the last poll
    cdef int io_pending_capacity

    cdef Poller poller
    cdef int wakeup_read_fd         # eventfd, or a self-pipe's read end
    cdef int wakeup_write_fd
    cdef bint sleeping              # blocked in the poller; other threads must wake us
    cdef bint wakeup_pending        # a wake-up was written and not yet drained

    cdef bint closed
    cdef bint stopping
    cdef bint running
    cdef unsigned long thread_ident
    # {'loop': self} while running: Future() and Task() take loop= from it
    # without a keyword dict being built for each call (see new_future()).
    cdef dict loop_kwargs
    cdef double clock_resolution
    cdef public object _current_handle
    cdef public object _task_factory
    # loop._transports (fd -> transport, held weakly), kept in C for the
    # transports' set-up; asyncio's __init__ and subclasses set the attribute.
    cdef object transports
    cdef public double slow_callback_duration
    cdef bint shared_untracked      # GC saw a queued untracked handle held elsewhere
    cdef object time_replacement    # time() as set on the instance (see LoopClock)
    cdef object __weakref__

    cdef int push_ready(self, Handle handle) except -1
    cdef double now(self) except? -1.0
    cdef int set_io_handle(self, int fd, int kind, Handle handle) except -1
    cdef bint clear_io_handle(self, int fd, int kind) except -1
    # The socket operations' variants. release_io_handle() drops the handle
    # but leaves the interest registered with the poller, on behalf of
    # `owner` (the socket object): when the same, still open socket waits
    # again (set_owned_io_handle), no system call is needed. An event for
    # interest nobody has any more removes it then. Callers pass the fd they
    # have just read from owner.fileno().
    cdef int set_owned_io_handle(self, int fd, int kind, Handle handle, object owner) except -1
    cdef int release_io_handle(self, int fd, int kind, object owner) except -1
    cdef bint has_left_interest(self, int fd, int kind, object owner) except -1
    cdef object io_handle_of(self, int fd, int kind)
    # Whether the poller has reported that fd's peer shut down its sending
    # side (_poller.pxd PEER_CLOSED), since fd was last registered. Inline:
    # a transport asks at each write it might hold.
    cdef inline bint peer_closed(self, int fd) noexcept:
        return fd < self.fds_capacity and self.fds[fd].peer_closed
    cdef object new_future(self)
    # create_task(coro, name=, context=) without extra keyword arguments
    cdef object create_task_plain(self, object coro, object name, object context)
    cdef int run_once(self) except -1

    # internal steps
    cdef int open_wakeup(self) except -1
    cdef close_wakeup(self)
    cdef void wake(self) noexcept
    cdef drain_wakeup(self)
    cdef after_fork(self)
    cdef PyObject* pop_ready(self) noexcept
    cdef int push_timer(self, TimerHandle timer) except -1
    cdef void sift_down(self, Py_ssize_t i) noexcept
    cdef PyObject* pop_timer(self) noexcept
    cdef int purge_cancelled_timers(self) except -1
    cdef int move_due_timers(self) except -1
    cdef int collect_io(self, int nevents) except -1
    cdef int poll_timeout_ms(self) except -2
    cdef int run_handle(self, Handle handle) except -1
    cdef int settle_writes(self) except -1
    cdef WriteSettler pop_settler(self)
    cdef int run_ready(self, Py_ssize_t count) except -1
    cdef release_all(self)
    cdef int check_call(self, object callback, str method) except -1
    cdef int check_thread(self) except -1
    cdef bint is_current(self) noexcept
    cdef track_shared_handles(self)
    cdef int resolve_fd(self, object fileobj) except -2
    cdef remove_io(self, object fileobj, int kind)
    cdef FdEntry* fd_entry(self, int fd) except NULL
    cdef int set_kernel(self, int fd, FdEntry* entry, int interest) except -1
    cdef int sync_kernel(self, int fd, FdEntry* entry) except -1
    cdef int drop_interest(self, int fd, FdEntry* entry, int kind) except -1
    cdef bint drop_io_handle(self, FdEntry* entry, int kind) except -1
    cdef int register_all(self) except -1
    cdef int drop_stale_registrations(self) except -1
    cdef Handle add_io(self, fileobj, int kind, callback, tuple args)

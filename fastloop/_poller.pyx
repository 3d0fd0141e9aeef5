"""OS readiness polling: epoll (Linux), kqueue (macOS, the BSDs) and poll().

All present the small interface declared in _poller.pxd. Which one a loop
uses is chosen by new_poller(): by name, or by default the best the platform
has. All are level-triggered, like the selectors module asyncio uses.
"""
from libc.stdlib cimport realloc, free
from libc.string cimport strerror
from libc.errno cimport errno, EINTR, EEXIST, ENOENT, EBADF
from posix.unistd cimport close as close_fd

cdef extern from "Python.h":
    int PyErr_CheckSignals() except -1
    object PyErr_SetFromErrno(object)

cdef extern from "poll.h" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    ctypedef unsigned long nfds_t
    int poll(pollfd *fds, nfds_t nfds, int timeout)
    enum:
        POLLIN
        POLLOUT

cdef extern from "_compat.h" nogil:
    enum:
        POLLRDHUP                # 0 where poll() has no such report

cdef extern from "_compat.h" nogil:
    int FL_HAVE_EPOLL
    ctypedef unsigned long long uint64_t
    ctypedef union epoll_data_t:
        int fd
        uint64_t u64
    struct epoll_event:
        unsigned int events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    enum:
        EPOLLIN
        EPOLLOUT
        EPOLLRDHUP
        EPOLL_CTL_ADD
        EPOLL_CTL_DEL
        EPOLL_CTL_MOD
        EPOLL_CLOEXEC

cdef extern from "_compat.h" nogil:
    int FL_HAVE_KQUEUE
    int FL_KQUEUE_INHERITED
    ctypedef struct fl_kevent:
        size_t ident
        short filter
        unsigned short flags
        long data
    int fl_kqueue()
    int fl_kqueue_close(int kq)
    void fl_kevent_set(fl_kevent* kev, int fd, int filter, int flags, unsigned int tag)
    unsigned int fl_kevent_tag(const fl_kevent* kev)
    int fl_kevent_wait(int kq, fl_kevent* events, int n, int timeout_ms)
    int fl_kevent_apply(int kq, const fl_kevent* changes, int n, fl_kevent* receipts)
    enum:
        EVFILT_READ
        EVFILT_WRITE
        EV_ADD
        EV_DELETE
        EV_RECEIPT
        EV_ERROR
        EV_EOF

# epoll_wait() made in place where _syscalls.h can (see there).
cdef extern from "_syscalls.h" nogil:
    int FL_INLINE_SYSCALLS
    int epoll_wait "fl_epoll_wait" (int epfd, epoll_event *events, int maxevents, int timeout)

# Whether the hot-path system calls are made in place here (see _syscalls.h).
INLINE_SYSCALLS = bool(FL_INLINE_SYSCALLS)


# Best first. A Linux build linked with libkqueue (for testing the kqueue
# backend there) still defaults to epoll.
AVAILABLE = tuple(name for name, present in (("epoll", FL_HAVE_EPOLL),
                                             ("kqueue", FL_HAVE_KQUEUE),
                                             ("poll", True)) if present)
DEFAULT = AVAILABLE[0]


cdef enum:
    # A wait that reported this many events marks the loop busy: the next
    # wait first polls without releasing the GIL (releasing and re-taking it
    # costs more than the poll when events are already pending, as they
    # usually are after a batch), and releases it only if it has to block.
    # A loop serving one connection at a time reports single events and
    # never pays for the extra poll.
    BUSY_EVENTS = 2


cdef int _raise_errno() except -1:
    PyErr_SetFromErrno(OSError)
    return -1


cdef int _grow(void** buf, int* capacity, int needed, size_t item) except -1:
    """Grow *buf to hold at least `needed` items (doubling)."""
    cdef int cap = capacity[0]
    cdef void* new_buf
    if needed <= cap:
        return 0
    if cap < 16:
        cap = 16
    while cap < needed:
        cap *= 2
    new_buf = realloc(buf[0], cap * item)
    if new_buf == NULL:
        raise MemoryError()
    buf[0] = new_buf
    capacity[0] = cap
    return 0


cdef inline int _after_failed_wait() except -1:
    # EINTR: run the Python-level signal handlers now (Ctrl-C raises
    # KeyboardInterrupt from here), then report no events; the loop polls again.
    if errno == EINTR:
        PyErr_CheckSignals()
        return 0
    return _raise_errno()


cdef class Poller:
    def __dealloc__(self):
        free(self.ready)

    cdef int update(self, int fd, int old, int new, unsigned int tag) except -1:
        raise NotImplementedError

    cdef int wait(self, int timeout_ms) except -1:
        raise NotImplementedError

    cdef int reinit(self, bint after_fork) except -1:
        raise NotImplementedError

    cdef close(self):
        pass


cdef class EpollPoller(Poller):
    cdef int epfd
    cdef epoll_event* kernel_events
    cdef int kernel_capacity

    def __cinit__(self):
        self.epfd = -1
        self.name = "epoll"
        self.reinit(False)

    def __dealloc__(self):
        self.close()
        free(self.kernel_events)

    cdef int reinit(self, bint after_fork) except -1:
        # Close the old instance's fd in either case: a forked child shares
        # the parent's epoll instance through it.
        if self.epfd >= 0:
            close_fd(self.epfd)
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            _raise_errno()
        self.nfds = 0
        return 0

    cdef int update(self, int fd, int old, int new, unsigned int tag) except -1:
        cdef epoll_event ev
        ev.events = ((EPOLLIN | EPOLLRDHUP) if new & READABLE else 0) | (EPOLLOUT if new & WRITABLE else 0)
        ev.data.u64 = (<uint64_t>tag << 32) | <unsigned int>fd
        if new == 0:
            # A closed fd has already left the epoll set: nothing to undo.
            if epoll_ctl(self.epfd, EPOLL_CTL_DEL, fd, &ev) < 0 and errno not in (ENOENT, EBADF):
                _raise_errno()
            self.nfds -= 1
        elif old == 0:
            if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
                # The kernel may still hold an fd number that was closed and
                # reused behind our back (dup2): take it over.
                if errno != EEXIST or epoll_ctl(self.epfd, EPOLL_CTL_MOD, fd, &ev) < 0:
                    _raise_errno()
            self.nfds += 1
        else:
            if epoll_ctl(self.epfd, EPOLL_CTL_MOD, fd, &ev) < 0:
                # The fd was closed and its number reused since it registered.
                if errno != ENOENT or epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
                    _raise_errno()
        return 0

    cdef int wait(self, int timeout_ms) except -1:
        cdef int n, i, bits, events
        cdef int wanted = self.nfds if self.nfds > 0 else 1
        _grow(<void**>&self.kernel_events, &self.kernel_capacity, wanted, sizeof(epoll_event))
        _grow(<void**>&self.ready, &self.capacity, self.kernel_capacity, sizeof(Ready))
        n = 0
        if timeout_ms == 0 or self.busy:
            n = epoll_wait(self.epfd, self.kernel_events, self.kernel_capacity, 0)
        if n == 0 and timeout_ms != 0:
            with nogil:
                n = epoll_wait(self.epfd, self.kernel_events, self.kernel_capacity, timeout_ms)
        self.busy = n >= BUSY_EVENTS
        if n < 0:
            return _after_failed_wait()
        for i in range(n):
            bits = self.kernel_events[i].events
            # As selectors.EpollSelector: anything but "readable" (errors,
            # hang-ups) wakes writers, anything but "writable" wakes readers.
            # EPOLLRDHUP, which the selector does not ask for, comes with
            # EPOLLIN and only adds the hint.
            events = PEER_CLOSED if bits & EPOLLRDHUP else 0
            if bits & ~(EPOLLIN | EPOLLRDHUP):
                events |= WRITABLE
            if bits & ~EPOLLOUT:
                events |= READABLE
            self.ready[i].fd = <int>(self.kernel_events[i].data.u64 & 0xFFFFFFFFu)
            self.ready[i].tag = <unsigned int>(self.kernel_events[i].data.u64 >> 32)
            self.ready[i].events = events
        return n

    cdef close(self):
        if self.epfd >= 0:
            close_fd(self.epfd)
            self.epfd = -1


cdef class PollPoller(Poller):
    cdef pollfd* fds           # the registered set, compact
    cdef int fds_capacity
    cdef int* slot_of          # fd -> index in fds, or -1
    cdef int slot_capacity

    def __cinit__(self):
        self.name = "poll"

    def __dealloc__(self):
        free(self.fds)
        free(self.slot_of)

    cdef int reinit(self, bint after_fork) except -1:
        # poll() keeps no kernel state: only forget the registrations, the
        # loop registers its fds again.
        cdef int i
        for i in range(self.slot_capacity):
            self.slot_of[i] = -1
        self.nfds = 0
        return 0

    cdef int update(self, int fd, int old, int new, unsigned int tag) except -1:
        cdef int slot, old_cap
        cdef short mask = ((POLLIN | POLLRDHUP) if new & READABLE else 0) | (POLLOUT if new & WRITABLE else 0)
        if fd >= self.slot_capacity:
            old_cap = self.slot_capacity
            _grow(<void**>&self.slot_of, &self.slot_capacity, fd + 1, sizeof(int))
            for slot in range(old_cap, self.slot_capacity):
                self.slot_of[slot] = -1
        slot = self.slot_of[fd]
        if new == 0:
            if slot >= 0:
                # Keep the array compact: the last entry takes the freed slot.
                self.nfds -= 1
                self.fds[slot] = self.fds[self.nfds]
                self.slot_of[self.fds[slot].fd] = slot
                self.slot_of[fd] = -1
        elif slot >= 0:
            self.fds[slot].events = mask
        else:
            _grow(<void**>&self.fds, &self.fds_capacity, self.nfds + 1, sizeof(pollfd))
            slot = self.nfds
            self.nfds += 1
            self.fds[slot].fd = fd
            self.fds[slot].events = mask
            self.fds[slot].revents = 0
            self.slot_of[fd] = slot
        return 0

    cdef int wait(self, int timeout_ms) except -1:
        cdef int n, i, count, bits, events
        _grow(<void**>&self.ready, &self.capacity, self.nfds if self.nfds > 0 else 1, sizeof(Ready))
        n = 0
        if timeout_ms == 0 or self.busy:
            n = poll(self.fds, self.nfds, 0)
        if n == 0 and timeout_ms != 0:
            with nogil:
                n = poll(self.fds, self.nfds, timeout_ms)
        self.busy = n >= BUSY_EVENTS
        if n < 0:
            return _after_failed_wait()
        count = 0
        i = 0
        while count < n and i < self.nfds:
            bits = self.fds[i].revents
            if bits:
                # As selectors.PollSelector: POLLERR/POLLHUP/POLLNVAL wake both
                # (POLLRDHUP comes with POLLIN and only adds the hint).
                events = PEER_CLOSED if bits & POLLRDHUP else 0
                if bits & ~(POLLIN | POLLRDHUP):
                    events |= WRITABLE
                if bits & ~POLLOUT:
                    events |= READABLE
                self.ready[count].fd = self.fds[i].fd
                self.ready[count].events = events
                self.ready[count].tag = TAG_ANY
                count += 1
            i += 1
        return count


cdef class KqueuePoller(Poller):
    """One kqueue filter per direction (EVFILT_READ, EVFILT_WRITE), both
    level-triggered; a wait reports an fd's two filters as one Ready entry,
    reader first, as selectors.KqueueSelector does."""
    cdef int kq
    cdef fl_kevent* kernel_events
    cdef int kernel_capacity
    cdef int* slot_of          # fd -> its entry in `ready` while a wait merges
    cdef int slot_capacity

    def __cinit__(self):
        self.kq = -1
        self.name = "kqueue"
        self.reinit(False)

    def __dealloc__(self):
        self.close()
        free(self.kernel_events)
        free(self.slot_of)

    cdef int reinit(self, bint after_fork) except -1:
        if self.kq >= 0 and (FL_KQUEUE_INHERITED or not after_fork):
            fl_kqueue_close(self.kq)
        self.kq = fl_kqueue()
        if self.kq < 0:
            _raise_errno()
        self.nfds = 0
        return 0

    cdef int update(self, int fd, int old, int new, unsigned int tag) except -1:
        # The old filters are deleted and the new ones added, in one call,
        # as selectors.KqueueSelector's modify() does: the fd may have been
        # closed and its number reused since it registered, which removed
        # its filters without the loop knowing.
        cdef fl_kevent changes[4]
        cdef fl_kevent receipts[4]
        cdef int n = 0, i, got, slot, old_cap
        cdef int err = 0
        if fd >= self.slot_capacity:
            old_cap = self.slot_capacity
            _grow(<void**>&self.slot_of, &self.slot_capacity, fd + 1, sizeof(int))
            for slot in range(old_cap, self.slot_capacity):
                self.slot_of[slot] = -1
        n = self.add_changes(changes, n, fd, old, EV_DELETE, tag)
        n = self.add_changes(changes, n, fd, new, EV_ADD, tag)
        got = fl_kevent_apply(self.kq, changes, n, receipts)
        if got < 0:
            _raise_errno()
        for i in range(got):
            if receipts[i].flags & EV_ERROR and receipts[i].data != 0:
                # Deleting what a closed fd already lost is not an error.
                if changes[i].flags & EV_DELETE and receipts[i].data in (ENOENT, EBADF):
                    continue
                err = <int>receipts[i].data
        if err:
            # Leave no half of the new registration behind (what the loop
            # still believes registered, `old`, is deleted: the next
            # update's deletes of it fail harmlessly).
            n = self.add_changes(changes, 0, fd, new, EV_DELETE, tag)
            fl_kevent_apply(self.kq, changes, n, receipts)
            raise OSError(err, strerror(err).decode())
        if new == 0:
            self.nfds -= 1
        elif old == 0:
            self.nfds += 1
        return 0

    cdef inline int add_changes(self, fl_kevent* changes, int n, int fd, int interest,
                                int action, unsigned int tag):
        if interest & READABLE:
            fl_kevent_set(&changes[n], fd, EVFILT_READ, action | EV_RECEIPT, tag)
            n += 1
        if interest & WRITABLE:
            fl_kevent_set(&changes[n], fd, EVFILT_WRITE, action | EV_RECEIPT, tag)
            n += 1
        return n

    cdef int wait(self, int timeout_ms) except -1:
        cdef int n, i, fd, slot, count, bit
        cdef unsigned int tag
        # Up to two filters per registered fd.
        cdef int wanted = 2 * self.nfds if self.nfds > 0 else 1
        _grow(<void**>&self.kernel_events, &self.kernel_capacity, wanted, sizeof(fl_kevent))
        _grow(<void**>&self.ready, &self.capacity, self.kernel_capacity, sizeof(Ready))
        n = 0
        if timeout_ms == 0 or self.busy:
            n = fl_kevent_wait(self.kq, self.kernel_events, self.kernel_capacity, 0)
        if n == 0 and timeout_ms != 0:
            with nogil:
                n = fl_kevent_wait(self.kq, self.kernel_events, self.kernel_capacity, timeout_ms)
        self.busy = n >= BUSY_EVENTS
        if n < 0:
            return _after_failed_wait()
        count = 0
        for i in range(n):
            fd = <int>self.kernel_events[i].ident
            tag = fl_kevent_tag(&self.kernel_events[i])
            if self.kernel_events[i].filter == EVFILT_READ:
                bit = READABLE
                if self.kernel_events[i].flags & EV_EOF:
                    bit |= PEER_CLOSED
            else:
                bit = WRITABLE
            slot = self.slot_of[fd] if fd < self.slot_capacity else -1
            if slot >= 0 and self.ready[slot].tag == tag:
                self.ready[slot].events |= bit
                continue
            self.ready[count].fd = fd
            self.ready[count].events = bit
            self.ready[count].tag = tag
            if fd < self.slot_capacity:
                self.slot_of[fd] = count
            count += 1
        for i in range(count):
            fd = self.ready[i].fd
            if fd < self.slot_capacity:
                self.slot_of[fd] = -1
        return count

    cdef close(self):
        if self.kq >= 0:
            fl_kqueue_close(self.kq)
            self.kq = -1


cdef Poller new_poller(str name):
    if name == "epoll" and FL_HAVE_EPOLL:
        return EpollPoller()
    if name == "kqueue" and FL_HAVE_KQUEUE:
        return KqueuePoller()
    if name == "poll":
        return PollPoller()
    raise ValueError(f"unknown or unavailable poller {name!r}; "
                     f"available: {', '.join(AVAILABLE)}")

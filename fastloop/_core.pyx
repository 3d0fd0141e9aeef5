"""The event loop core: ready queue, timer heap, fd registry and run loop.

One iteration (run_once) keeps asyncio's order, which libraries rely on:

    1. poll for I/O: without blocking if callbacks are ready or the loop is
       stopping, else until the earliest timer (or forever);
    2. run the callbacks that were ready before the poll, in FIFO order;
    3. run the reader/writer callbacks of the fds the poll reported;
    4. run the timers that were due right after the poll, by deadline.

Anything scheduled while 2-4 run waits for the next iteration. asyncio gets
this order by appending I/O handles and due timers behind the ready callbacks
and running that many; here I/O is dispatched straight from the poll result.
"""
from cpython.object cimport PyObject, PyTypeObject, PyObject_Call
from cpython.ref cimport Py_INCREF, Py_DECREF, Py_XDECREF, Py_CLEAR
from cpython.weakref cimport PyWeakref_NewRef
from cpython.tuple cimport PyTuple_GET_SIZE
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memset
from libc.math cimport ceil
from libc.stdint cimport uint64_t
from libc.errno cimport errno
from posix.unistd cimport read, write, close as close_fd, pipe
from posix.fcntl cimport fcntl, F_GETFL, F_SETFL, F_SETFD, FD_CLOEXEC, O_NONBLOCK

from fastloop._handles cimport (LoopBase, Handle, TimerHandle, new_handle, new_threadsafe_handle,
                                new_timer, given_as_int, check_callback, traverse_handle,
                                visitproc)
from fastloop._poller cimport new_poller, READABLE, WRITABLE, PEER_CLOSED, TAG_ANY

import gc
import os
import sys
import time as _time
import weakref
from asyncio import Future as _Future, Task as _Task
from asyncio import base_events as _base_events
from asyncio.events import _get_running_loop, _set_running_loop
from asyncio.log import logger as _logger
from fastloop import _poller

cdef extern from "Python.h":
    unsigned long PyThread_get_thread_ident()
    Py_ssize_t Py_REFCNT(PyObject*)
    PyObject* Py_TYPE(PyObject*)
    PyObject* Py_TYPE(PyObject*)
    int PyObject_GC_IsTracked(PyObject*)
    void PyObject_GC_Track(void*)
    void PyObject_GC_UnTrack(void*)
    ctypedef int (*traverseproc)(PyObject*, visitproc, void*) noexcept
    ctypedef struct TypeSlots "PyTypeObject":
        traverseproc tp_traverse
    PyObject* _PyType_Lookup(PyObject* type, object name)   # borrowed, may be NULL
    object PyMethod_New(object func, object self)

cdef extern from "Python.h":
    # Keyword calls without building a dict for the keywords.
    object PyObject_Vectorcall(object callable, PyObject** args, size_t nargsf,
                               object kwnames)

cdef extern from "_fastcall.h":
    ctypedef object (*fl_schedule_impl)(object, object, object, object)
    fl_schedule_impl fl_call_soon_impl
    fl_schedule_impl fl_call_soon_threadsafe_impl
    int fl_install_scheduling_methods(PyTypeObject* type) except -1

cdef extern from "_compat.h" nogil:
    int FL_HAVE_EVENTFD
    int eventfd(unsigned int initval, int flags)
    double fl_monotonic()
    bint fl_weakref_is(object ref, object obj)
    enum:
        EFD_CLOEXEC
        EFD_NONBLOCK


# asyncio's limits: a blocking poll never waits longer than a day, and
# cancelled timers are purged in bulk once they are over half of a heap of
# more than 100.
cdef double MAXIMUM_SELECT_TIMEOUT = 24 * 3600
cdef Py_ssize_t MIN_SCHEDULED_TIMER_HANDLES = 100

cdef object _format_handle = _base_events._format_handle
cdef object _base_create_task = _base_events.BaseEventLoop.create_task
cdef tuple _KW_LOOP = ("loop",)
cdef bint _RUNNING_LOOP_LOOKUP_IS_CHEAP = sys.version_info >= (3, 12)
cdef tuple _KW_LOOP_NAME_CONTEXT = ("loop", "name", "context")
cdef object _get_asyncgen_hooks = sys.get_asyncgen_hooks
cdef object _set_asyncgen_hooks = sys.set_asyncgen_hooks

# Every live loop, so that a forked child can give each its own poller.
cdef object _all_loops = weakref.WeakSet()


cdef int fileobj_to_fd(object fileobj) except -1:
    """An fd from an int or an object with fileno(), as selectors accepts.
    A number past a C int is no fd: OverflowError, as asyncio's selector
    raises when it registers one (and a look-up finds nothing there)."""
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    if fd > 0x7fffffff:
        raise OverflowError("Python int too large to convert to C int")
    return <int>fd


cdef inline bint timer_before(TimerEntry* a, TimerEntry* b):
    return a.when < b.when or (a.when == b.when and a.seq < b.seq)


# Queued handles are kept out of the cyclic GC.
#
# Scheduling creates a Handle and, without an explicit context, a Context copy
# and an argument tuple: three GC-tracked objects per call. With many callbacks
# or timers pending, every GC pass walked them all, and that dominated batched
# scheduling. So once a handle is queued, the loop "adopts" it: the context copy
# and argument tuple made for it are untracked (the handle's traverse reports
# what they reference), and so is the handle itself (the loop's traverse, at
# the end of this module, reports what it references). When the loop lets go
# of a handle, release_handle() puts the context back under the GC (a Context
# must be tracked when it dies), and the handle and tuple too if somebody else
# still holds them. A queued handle that somebody else also holds
# (asyncio.sleep() keeps its timer) is tracked by the gc.callbacks hook at the
# end of this module before the next full collection.

cdef inline void adopt(Handle handle) noexcept:
    PyObject_GC_UnTrack(<PyObject*>handle)
    if handle.own_context:
        PyObject_GC_UnTrack(<PyObject*>handle._context)
    if handle._args is not None and PyObject_GC_IsTracked(<PyObject*>handle._args):
        PyObject_GC_UnTrack(<PyObject*>handle._args)


cdef inline void release_handle(PyObject* obj) noexcept:
    cdef PyObject* context = <PyObject*>(<Handle>obj)._context
    cdef PyObject* args = <PyObject*>(<Handle>obj)._args
    cdef bint escaped = Py_REFCNT(obj) > 1
    if (<Handle>obj).own_context and not PyObject_GC_IsTracked(context):
        PyObject_GC_Track(context)
    if escaped and not PyObject_GC_IsTracked(obj):
        PyObject_GC_Track(obj)
    # An untracked tuple is fine where nothing can form a cycle through it
    # (CPython untracks tuples itself); one that lives on, or whose handle
    # does, goes back to the GC.
    if (args != <PyObject*>None and (escaped or Py_REFCNT(args) > 1)
            and PyTuple_GET_SIZE(<tuple>args) and not PyObject_GC_IsTracked(args)):
        PyObject_GC_Track(args)
    Py_DECREF(<object>obj)


cdef int _set_nonblocking_cloexec(int fd) except -1:
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    fcntl(fd, F_SETFD, FD_CLOEXEC)
    return 0


def time(self):
    """The loop's clock: time.monotonic(), at full resolution."""
    return fl_monotonic()


cdef class LoopClock:
    """LoopCore.time. asyncio's loop reads its clock through self.time(),
    so a time() replaced on the instance (mock.patch.object(loop, "time"),
    as test suites freeze or advance the loop's clock), on the class or in a
    subclass decides when timers are due and what call_later() schedules
    for. The C core reads the monotonic clock itself while nothing replaced
    it (LoopCore.now()); an instance's replacement is kept by the loop
    itself, which makes this a data descriptor."""

    def __get__(self, obj, objtype):
        if obj is None:
            return time                # as asyncio's loop classes have a function
        replacement = (<LoopCore>obj).time_replacement
        if replacement is not None:
            return replacement
        return PyMethod_New(time, obj)

    def __set__(self, obj, value):
        (<LoopCore>obj).time_replacement = value

    def __delete__(self, obj):
        if (<LoopCore>obj).time_replacement is None:
            raise AttributeError("time")
        (<LoopCore>obj).time_replacement = None


cdef LoopClock _LOOP_CLOCK


cdef class LoopCore(LoopBase):

    def __cinit__(self, *args, **kwargs):
        self.wakeup_read_fd = -1
        self.wakeup_write_fd = -1
        # Closed until __init__ has acquired the OS resources: a loop whose
        # construction failed has nothing to release or warn about.
        self.closed = True
        self.ready_capacity = 256
        self.ready = <PyObject**>malloc(self.ready_capacity * sizeof(PyObject*))
        if self.ready == NULL:
            raise MemoryError()
        self.slow_callback_duration = 0.1
        self.fileobjs = {}
        self.clock_resolution = _time.get_clock_info('monotonic').resolution

    def __init__(self, *, poller=None):
        if self.poller is not None:
            raise RuntimeError("the loop is already initialised")
        if poller is None:
            poller = os.environ.get("FASTLOOP_POLLER") or _poller.DEFAULT
        self.poller = new_poller(poller)
        self._debug = _base_events.coroutines._is_debug_mode()
        self.open_wakeup()
        self.closed = False
        _all_loops.add(self)

    def __dealloc__(self):
        self.release_all()
        self.close_wakeup()
        if self.poller is not None:
            self.poller.close()
        free(self.ready)
        free(self.timers)
        free(self.fds)
        free(self.io_pending)

    # ------------------------------------------------------------------ wake-up

    cdef int open_wakeup(self) except -1:
        cdef int fds[2]
        if FL_HAVE_EVENTFD:
            self.wakeup_read_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)
            if self.wakeup_read_fd < 0:
                raise OSError(errno, os.strerror(errno))
            self.wakeup_write_fd = self.wakeup_read_fd
        else:
            if pipe(fds) < 0:
                raise OSError(errno, os.strerror(errno))
            _set_nonblocking_cloexec(fds[0])
            _set_nonblocking_cloexec(fds[1])
            self.wakeup_read_fd = fds[0]
            self.wakeup_write_fd = fds[1]
        self.wakeup_pending = False
        self.poller.update(self.wakeup_read_fd, 0, READABLE, TAG_ANY + 1)
        return 0

    cdef close_wakeup(self):
        if self.wakeup_read_fd >= 0:
            close_fd(self.wakeup_read_fd)
        if self.wakeup_write_fd >= 0 and self.wakeup_write_fd != self.wakeup_read_fd:
            close_fd(self.wakeup_write_fd)
        self.wakeup_read_fd = self.wakeup_write_fd = -1

    cdef void wake(self) noexcept:
        # Only a loop blocked in the poller needs a wake-up: a running one
        # sees the new callback when its current iteration ends.
        cdef uint64_t one = 1
        if self.sleeping and not self.wakeup_pending and self.wakeup_write_fd >= 0:
            self.wakeup_pending = True
            write(self.wakeup_write_fd, &one, sizeof(one) if FL_HAVE_EVENTFD else 1)

    cdef drain_wakeup(self):
        cdef char buf[64]
        while read(self.wakeup_read_fd, buf, sizeof(buf)) > 0:
            pass
        self.wakeup_pending = False

    cdef after_fork(self):
        """Give a forked child its own poller state, with the same fds."""
        if not self.closed:
            self.poller.reinit(True)
            self.close_wakeup()
            self.open_wakeup()
            self.register_all()

    cdef int register_all(self) except -1:
        """Register every fd's interest with the (fresh) poller."""
        cdef int fd
        cdef FdEntry* entry
        for fd in range(self.fds_capacity):
            entry = &self.fds[fd]
            entry.kernel = 0
            Py_CLEAR(entry.owner)
            self.sync_kernel(fd, entry)
        return 0

    cdef int drop_stale_registrations(self) except -1:
        """The poller reported a registration of an fd that was closed while
        its file stays open elsewhere (a dup, a child process): it cannot be
        removed by fd any more, so start a fresh poller."""
        self.stale_registration = False
        self.poller.reinit(False)
        self.poller.update(self.wakeup_read_fd, 0, READABLE, TAG_ANY + 1)
        return self.register_all()

    # ------------------------------------------------------------ ready queue

    cdef int push_ready(self, Handle handle) except -1:
        cdef Py_ssize_t i, n
        cdef PyObject** grown
        if self.ready_len == self.ready_capacity:
            # Double the ring and unwrap it so that it starts at index 0.
            n = self.ready_capacity
            grown = <PyObject**>malloc(2 * n * sizeof(PyObject*))
            if grown == NULL:
                raise MemoryError()
            for i in range(n):
                grown[i] = self.ready[(self.ready_head + i) & (n - 1)]
            free(self.ready)
            self.ready = grown
            self.ready_head = 0
            self.ready_capacity = 2 * n
        Py_INCREF(handle)
        self.ready[(self.ready_head + self.ready_len) & (self.ready_capacity - 1)] = <PyObject*>handle
        self.ready_len += 1
        return 0

    cdef PyObject* pop_ready(self) noexcept:
        # The caller owns the returned reference.
        cdef PyObject* handle = self.ready[self.ready_head]
        self.ready_head = (self.ready_head + 1) & (self.ready_capacity - 1)
        self.ready_len -= 1
        return handle

    # ------------------------------------------------------------------ timers

    cdef int push_timer(self, TimerHandle timer) except -1:
        cdef Py_ssize_t i, parent, n
        cdef TimerEntry entry
        cdef TimerEntry* grown
        if self.ntimers == self.timers_capacity:
            n = self.timers_capacity * 2 if self.timers_capacity else 64
            grown = <TimerEntry*>realloc(self.timers, n * sizeof(TimerEntry))
            if grown == NULL:
                raise MemoryError()
            self.timers = grown
            self.timers_capacity = n
        entry.when = timer.deadline
        entry.seq = self.timer_seq
        entry.timer = <PyObject*>timer
        self.timer_seq += 1
        Py_INCREF(timer)
        timer._scheduled = True
        # sift up
        i = self.ntimers
        self.ntimers += 1
        while i > 0:
            parent = (i - 1) >> 1
            if not timer_before(&entry, &self.timers[parent]):
                break
            self.timers[i] = self.timers[parent]
            i = parent
        self.timers[i] = entry
        return 0

    cdef void sift_down(self, Py_ssize_t i) noexcept:
        cdef Py_ssize_t child, n = self.ntimers
        cdef TimerEntry entry = self.timers[i]
        while True:
            child = 2 * i + 1
            if child >= n:
                break
            if child + 1 < n and timer_before(&self.timers[child + 1], &self.timers[child]):
                child += 1
            if not timer_before(&self.timers[child], &entry):
                break
            self.timers[i] = self.timers[child]
            i = child
        self.timers[i] = entry

    cdef PyObject* pop_timer(self) noexcept:
        # Remove the earliest timer; the caller owns the returned reference.
        cdef PyObject* timer = self.timers[0].timer
        self.ntimers -= 1
        if self.ntimers > 0:
            self.timers[0] = self.timers[self.ntimers]
            self.sift_down(0)
        (<TimerHandle>timer)._scheduled = False
        return timer

    cdef int purge_cancelled_timers(self) except -1:
        """Drop cancelled timers: all of them when they are over half of a big
        heap (then rebuild it), else just those at the top."""
        cdef Py_ssize_t i, kept = 0, ndropped = 0
        cdef PyObject* timer
        cdef PyObject** dropped
        if (self.ntimers > MIN_SCHEDULED_TIMER_HANDLES
                and 2 * self.timers_cancelled > self.ntimers):
            # Release the dropped timers only once the heap is whole again:
            # releasing one can run arbitrary code.
            dropped = <PyObject**>malloc(self.ntimers * sizeof(PyObject*))
            if dropped == NULL:
                raise MemoryError()
            for i in range(self.ntimers):
                timer = self.timers[i].timer
                if (<TimerHandle>timer)._cancelled:
                    (<TimerHandle>timer)._scheduled = False
                    dropped[ndropped] = timer
                    ndropped += 1
                else:
                    self.timers[kept] = self.timers[i]
                    kept += 1
            self.ntimers = kept
            i = kept // 2
            while i > 0:
                i -= 1
                self.sift_down(i)
            self.timers_cancelled = 0
            for i in range(ndropped):
                release_handle(dropped[i])
            free(dropped)
            return 0
        while self.ntimers and (<TimerHandle>self.timers[0].timer)._cancelled:
            self.timers_cancelled -= 1
            release_handle(self.pop_timer())
        return 0

    cdef int move_due_timers(self) except -1:
        """Append the timers due by now to the ready queue, by deadline."""
        cdef double end
        cdef PyObject* timer
        if self.ntimers == 0:
            return 0
        end = self.now() + self.clock_resolution
        while self.ntimers and self.timers[0].when < end:
            timer = self.pop_timer()
            if (<TimerHandle>timer)._cancelled:
                self.timers_cancelled -= 1
                release_handle(timer)
            else:
                self.push_ready(<TimerHandle>timer)
                Py_DECREF(<object>timer)
        return 0

    # ------------------------------------------------------------- fd registry

    cdef FdEntry* fd_entry(self, int fd) except NULL:
        """fd's registry entry, growing the registry as needed."""
        cdef FdEntry* grown
        cdef int old_cap, n
        if fd >= self.fds_capacity:
            old_cap = self.fds_capacity
            n = max(fd + 1, 2 * old_cap, 64)
            grown = <FdEntry*>realloc(self.fds, n * sizeof(FdEntry))
            if grown == NULL:
                raise MemoryError()
            memset(&grown[old_cap], 0, (n - old_cap) * sizeof(FdEntry))
            self.fds = grown
            self.fds_capacity = n
        return &self.fds[fd]

    cdef int set_kernel(self, int fd, FdEntry* entry, int interest) except -1:
        """Make `interest` what the poller watches for fd."""
        if entry.kernel == interest:
            return 0
        if entry.kernel == 0:
            # A new registration: of another file, perhaps, under this number.
            self.last_tag += 1
            if self.last_tag == TAG_ANY:
                self.last_tag += 1
            entry.tag = self.last_tag
            entry.peer_closed = False
        self.poller.update(fd, entry.kernel, interest, entry.tag)
        entry.kernel = interest
        if interest == 0:
            Py_CLEAR(entry.owner)
        return 0

    cdef int sync_kernel(self, int fd, FdEntry* entry) except -1:
        # Drop interest left behind by release_io_handle().
        return self.set_kernel(fd, entry, entry.events)

    cdef int set_io_handle(self, int fd, int kind, Handle handle) except -1:
        """Make `handle` the reader (kind READABLE) or writer of fd."""
        return self.set_owned_io_handle(fd, kind, handle, None)

    cdef int set_owned_io_handle(self, int fd, int kind, Handle handle, object owner) except -1:
        cdef FdEntry* entry = self.fd_entry(fd)
        cdef PyObject* old
        cdef int had = entry.events
        if had == 0:
            # Interest left registered by a socket operation is this fd's only
            # for the same socket, still open on this fd: otherwise the number
            # may name another file by now, and the registration is dropped.
            if entry.kernel != 0 and (owner is None
                                      or not self.has_left_interest(fd, entry.kernel, owner)):
                self.set_kernel(fd, entry, 0)
            Py_CLEAR(entry.owner)
        entry.events |= kind
        if entry.events & ~entry.kernel:
            try:
                self.set_kernel(fd, entry, entry.kernel | entry.events)
            except BaseException:
                # The poller refused the fd (a regular file: EPERM; a closed
                # fd: EBADF): as in asyncio, nothing new stays registered.
                entry.events = had
                raise
        if had == 0:
            self.user_fds += 1
        Py_INCREF(handle)
        adopt(handle)
        if kind == READABLE:
            old = entry.reader
            entry.reader = <PyObject*>handle
        else:
            old = entry.writer
            entry.writer = <PyObject*>handle
        if old != NULL:
            (<Handle>old).cancel_now()
            release_handle(old)
        return 0

    cdef bint clear_io_handle(self, int fd, int kind) except -1:
        """Drop fd's reader or writer; True if there was one."""
        cdef FdEntry* entry
        if fd >= self.fds_capacity:
            return False
        entry = &self.fds[fd]
        self.drop_interest(fd, entry, kind)
        self.sync_kernel(fd, entry)
        return self.drop_io_handle(entry, kind)

    cdef int drop_interest(self, int fd, FdEntry* entry, int kind) except -1:
        """Remove `kind` from what fd's handles wait for (not from the poller)."""
        if entry.events & kind:
            entry.events &= ~kind
            if entry.events == 0:
                self.user_fds -= 1
                if self.fileobjs:
                    self.fileobjs.pop(fd, None)
        return 0

    cdef object io_handle_of(self, int fd, int kind):
        """fd's reader (kind READABLE) or writer, or None."""
        cdef PyObject* handle
        if fd >= self.fds_capacity:
            return None
        handle = self.fds[fd].reader if kind == READABLE else self.fds[fd].writer
        return <object>handle if handle != NULL else None

    cdef bint has_left_interest(self, int fd, int kind, object owner) except -1:
        """True if `owner` left `kind` registered with the poller and nothing
        else has registered fd since. The caller has just read fd from
        owner.fileno(), so the file is still the one registered."""
        cdef FdEntry* entry
        if fd >= self.fds_capacity:
            return False
        entry = &self.fds[fd]
        return (entry.events == 0 and entry.kernel & kind and entry.owner != NULL
                and fl_weakref_is(<object>entry.owner, owner))

    cdef int release_io_handle(self, int fd, int kind, object owner) except -1:
        cdef FdEntry* entry
        if fd >= self.fds_capacity:
            return 0
        entry = &self.fds[fd]
        self.drop_interest(fd, entry, kind)
        if entry.events == 0 and entry.kernel != 0 and (
                entry.owner == NULL
                or not fl_weakref_is(<object>entry.owner, owner)):
            # Remember whose interest stays registered.
            Py_CLEAR(entry.owner)
            ref = PyWeakref_NewRef(owner, None)
            Py_INCREF(ref)
            entry.owner = <PyObject*>ref
        self.drop_io_handle(entry, kind)
        return 0

    cdef bint drop_io_handle(self, FdEntry* entry, int kind) except -1:
        cdef PyObject* old
        if kind == READABLE:
            old = entry.reader
            entry.reader = NULL
        else:
            old = entry.writer
            entry.writer = NULL
        if old == NULL:
            return False
        (<Handle>old).cancel_now()
        release_handle(old)
        return True

    cdef int collect_io(self, int nevents) except -1:
        """Take owned references to the handles of the fds the poll reported."""
        cdef int i, fd, events, n = 0
        cdef FdEntry* entry
        cdef PyObject** grown
        if 2 * nevents > self.io_pending_capacity:
            grown = <PyObject**>realloc(self.io_pending, 2 * nevents * sizeof(PyObject*))
            if grown == NULL:
                raise MemoryError()
            self.io_pending = grown
            self.io_pending_capacity = 2 * nevents
        for i in range(nevents):
            fd = self.poller.ready[i].fd
            events = self.poller.ready[i].events
            if fd == self.wakeup_read_fd:
                self.drain_wakeup()
                continue
            if fd >= self.fds_capacity:
                continue
            entry = &self.fds[fd]
            if entry.kernel == 0 or (self.poller.ready[i].tag != TAG_ANY
                                     and self.poller.ready[i].tag != entry.tag):
                # A registration this loop no longer knows: its fd was closed
                # while the file stays open in another process or fd.
                self.stale_registration = True
                continue
            if events & entry.kernel & ~entry.events:
                # Interest a socket operation left registered, and nobody
                # waits any more: now it costs a system call to drop it.
                self.sync_kernel(fd, entry)
            if events & PEER_CLOSED:
                entry.peer_closed = True
            if events & READABLE and entry.reader != NULL:
                Py_INCREF(<object>entry.reader)
                self.io_pending[n] = entry.reader
                n += 1
            if events & WRITABLE and entry.writer != NULL:
                Py_INCREF(<object>entry.writer)
                self.io_pending[n] = entry.writer
                n += 1
        return n

    # ---------------------------------------------------------------- run loop

    cdef int poll_timeout_ms(self) except -2:
        cdef double timeout
        if self.ready_len or self.stopping:
            return 0
        if self.ntimers == 0:
            return -1
        timeout = self.timers[0].when - self.now()
        if timeout <= 0:
            return 0
        if timeout > MAXIMUM_SELECT_TIMEOUT:
            timeout = MAXIMUM_SELECT_TIMEOUT
        # Round up, as selectors does: waking early would only spin.
        return <int>ceil(timeout * 1e3)

    cdef int run_handle(self, Handle handle) except -1:
        cdef double t0, dt
        if not self._debug:
            handle.run()
            if self.settlers_head is not None:
                self.settle_writes()
            return 0
        self._current_handle = handle
        # Timed with the loop's clock, as asyncio times it: a time() patched
        # on the loop (test suites freeze or advance it) is what is measured.
        t0 = self.now()
        try:
            handle.run()
        finally:
            self._current_handle = None
        if self.settlers_head is not None:
            self.settle_writes()
        dt = self.now() - t0
        if dt >= self.slow_callback_duration:
            _logger.warning('Executing %s took %.3f seconds', _format_handle(handle), dt)
        return 0

    cdef int settle_writes(self) except -1:
        """Send what transports held back during the callback that just
        returned (see WriteSettler): a response written in pieces by a task
        step leaves in one system call."""
        while self.settlers_head is not None:
            self.pop_settler().settle_writes()
        return 0

    cdef WriteSettler pop_settler(self):
        """Take the oldest transport off the queue of those holding writes."""
        cdef WriteSettler settler = self.settlers_head
        self.settlers_head = settler.next_settler
        if self.settlers_head is None:
            self.settlers_tail = None
        settler.next_settler = None
        settler.queued = False
        return settler

    cdef int run_ready(self, Py_ssize_t count) except -1:
        cdef PyObject* obj
        while count > 0 and self.ready_len > 0:
            count -= 1
            obj = self.pop_ready()
            try:
                if not (<Handle>obj)._cancelled:
                    self.run_handle(<Handle>obj)
            finally:
                release_handle(obj)
        return 0

    cdef int run_once(self) except -1:
        cdef int timeout_ms, nevents, nio, i
        cdef Py_ssize_t nready, ntimers_due
        cdef PyObject* obj
        cdef Handle handle
        if self.timers_cancelled:
            self.purge_cancelled_timers()
        timeout_ms = self.poll_timeout_ms()
        if timeout_ms == 0 and self.user_fds == 0:
            # Nothing but the wake-up fd is registered, and it is only written
            # while we block: a non-blocking poll could not report anything.
            nevents = 0
        else:
            self.sleeping = timeout_ms != 0
            try:
                nevents = self.poller.wait(timeout_ms)
            finally:
                self.sleeping = False
        nio = self.collect_io(nevents) if nevents else 0
        if self.stale_registration:
            self.drop_stale_registrations()
        nready = self.ready_len
        self.batching_writes = True
        try:
            self.move_due_timers()
            ntimers_due = self.ready_len - nready
            self.run_ready(nready)
            for i in range(nio):
                obj = self.io_pending[i]
                self.io_pending[i] = NULL
                handle = <Handle>obj
                Py_DECREF(<object>obj)
                if not handle._cancelled:
                    self.run_handle(handle)
            self.run_ready(ntimers_due)
        finally:
            self.batching_writes = False
            # Only after an exception left a callback: drop the I/O handles not
            # run (level-triggered polling reports their fds again), and send
            # what it wrote, as asyncio would have.
            for i in range(nio):
                Py_XDECREF(self.io_pending[i])
                self.io_pending[i] = NULL
            if self.settlers_head is not None:
                self.settle_writes()
        return 0

    cdef release_all(self):
        """Drop every queued handle, timer and fd registration (on close)."""
        cdef PyObject** ready = self.ready
        cdef Py_ssize_t head = self.ready_head, n = self.ready_len, cap = self.ready_capacity
        cdef TimerEntry* timers = self.timers
        cdef Py_ssize_t ntimers = self.ntimers
        cdef FdEntry* fds = self.fds
        cdef int nfds = self.fds_capacity
        cdef Py_ssize_t i
        # Detach everything before releasing: a finalizer may call back in.
        self.ready = <PyObject**>malloc(cap * sizeof(PyObject*))
        self.ready_head = self.ready_len = 0
        self.timers = NULL
        self.ntimers = self.timers_capacity = 0
        self.timers_cancelled = 0
        self.fds = NULL
        self.fds_capacity = 0
        self.user_fds = 0
        self.fileobjs = {}
        # Transports left holding writes (an exception stopped a settle)
        # keep them: their close() sends them.
        while self.settlers_head is not None:
            self.pop_settler()
        for i in range(n):
            release_handle(ready[(head + i) & (cap - 1)])
        free(ready)
        for i in range(ntimers):
            release_handle(timers[i].timer)
        free(timers)
        for i in range(nfds):
            if fds[i].reader != NULL:
                release_handle(fds[i].reader)
            if fds[i].writer != NULL:
                release_handle(fds[i].writer)
            Py_CLEAR(fds[i].owner)
        free(fds)
        if self.ready == NULL:
            raise MemoryError()

    # ------------------------------------------------------------- public API

    cdef int check_call(self, object callback, str method) except -1:
        if self.closed:
            raise RuntimeError('Event loop is closed')
        if self._debug:
            self.check_thread()
            self._check_callback(callback, method)
        else:
            check_callback(callback, method)
        return 0

    cdef int check_thread(self) except -1:
        if self.running and PyThread_get_thread_ident() != self.thread_ident:
            raise RuntimeError(
                "Non-thread-safe operation invoked on an event loop other "
                "than the current one")
        return 0

    # call_soon() and call_soon_threadsafe() are C methods (_fastcall.h)
    # running _call_soon() and _call_soon_threadsafe() below.

    def call_later(self, delay, callback, *args, context=None):
        """Arrange for callback(*args) to run `delay` seconds from now."""
        if delay is None:
            raise TypeError('delay must not be None')
        cdef double when = self.now() + <double>delay
        # asyncio's call_later() goes through call_at(), and its errors say so.
        self.check_call(callback, 'call_at')
        cdef TimerHandle timer = new_timer(when, callback, args, self, context)
        self.push_timer(timer)
        adopt(timer)
        return timer

    def call_at(self, when, callback, *args, context=None):
        """Arrange for callback(*args) to run at loop time `when`."""
        if when is None:
            raise TypeError("when cannot be None")
        cdef double deadline = when
        self.check_call(callback, 'call_at')
        cdef TimerHandle timer = new_timer(deadline, callback, args, self, context)
        timer.deadline_is_int = given_as_int(when, deadline)
        self.push_timer(timer)
        adopt(timer)
        return timer

    time = LoopClock()

    cdef double now(self) except? -1.0:
        """What asyncio's loop code gets from self.time(): the monotonic
        clock, or what a replaced time() answers (see LoopClock)."""
        if (self.time_replacement is None
                and _PyType_Lookup(Py_TYPE(<PyObject*>self), "time") == <PyObject*>_LOOP_CLOCK):
            return fl_monotonic()
        return float(self.time())

    cdef inline bint is_current(self) noexcept:
        # True when Future() and Task() would find this loop by themselves:
        # it is the running loop of the calling thread. Not passing loop=
        # saves them a keyword dict per call. Before 3.12 their running-loop
        # lookup costs a getpid() system call, far more than the dict.
        return (_RUNNING_LOOP_LOOKUP_IS_CHEAP and self.running
                and PyThread_get_thread_ident() == self.thread_ident)

    def create_future(self):
        """Create a Future attached to this loop."""
        return self.new_future()

    cdef object new_future(self):
        cdef PyObject* args[1]
        if self.is_current():
            return _Future()
        if self.loop_kwargs is not None:
            # Future and Task are called through tp_call, which turns
            # keyword arguments into a new dict on every call; handing it a
            # ready one is a third cheaper (before 3.12, where is_current()
            # cannot be used).
            return PyObject_Call(_Future, (), self.loop_kwargs)
        args[0] = <PyObject*>self
        return PyObject_Vectorcall(_Future, args, 0, _KW_LOOP)

    def _create_task(self, coro, *, name=None, context=None):
        """create_task() for Python 3.11 and 3.12: the plain case (no task
        factory, no debug mode) in C, everything else in asyncio's own code."""
        return self.create_task_plain(coro, name, context)

    def _create_task_kw(self, coro, *, name=None, context=None, **kwargs):
        """create_task() for Python 3.13, whose 3.13.3+ takes other keyword
        arguments for the task factory or Task (and 3.13.0-3.13.2 refuses
        them): those go to asyncio's code. (Cython makes the **kwargs dict on
        every call, which is why 3.11/3.12 keep the method without it.)"""
        if kwargs:
            return _base_create_task(self, coro, name=name, context=context, **kwargs)
        return self.create_task_plain(coro, name, context)

    def _create_task_314(self, coro, **kwargs):
        """create_task() for Python 3.14, which hands its keyword arguments,
        as given, to the task factory or Task."""
        if kwargs:
            return _base_create_task(self, coro, **kwargs)
        return self.create_task_plain(coro, None, None)

    cdef object create_task_plain(self, object coro, object name, object context):
        cdef PyObject* args[4]
        if self._task_factory is not None or self._debug or self.closed:
            if name is None and context is None:
                # (3.14's passes only the arguments it was given to a task
                # factory; before, these two mean the same given or not.)
                return _base_create_task(self, coro)
            return _base_create_task(self, coro, name=name, context=context)
        if name is None and context is None:
            if self.is_current():
                return _Task(coro)
            if self.loop_kwargs is not None:
                return PyObject_Call(_Task, (coro,), self.loop_kwargs)
        args[0] = <PyObject*>coro
        args[1] = <PyObject*>self
        args[2] = <PyObject*>name
        args[3] = <PyObject*>context
        return PyObject_Vectorcall(_Task, args, 1, _KW_LOOP_NAME_CONTEXT)

    def _timer_handle_cancelled(self, handle):
        if handle._scheduled:
            self.timers_cancelled += 1

    cdef int resolve_fd(self, object fileobj) except -2:
        """The fd to look fileobj up under; -1 for a number no fd can be
        (nothing is registered there)."""
        try:
            return fileobj_to_fd(fileobj)
        except OverflowError:
            return -1
        except ValueError:
            # Like selectors, find an object registered before it was closed
            # (its fileno() is -1 now), so closing first and removing second
            # works.
            for fd, registered in self.fileobjs.items():
                if registered is fileobj:
                    return fd
            raise

    cdef Handle add_io(self, fileobj, int kind, callback, tuple args):
        self._check_closed()
        cdef int fd = fileobj_to_fd(fileobj)
        cdef Handle handle = new_handle(callback, args, self, None)
        self.set_io_handle(fd, kind, handle)
        if not isinstance(fileobj, int):
            self.fileobjs[fd] = fileobj
        return handle

    # The selector-loop internals asyncio's transports and sock_* methods
    # call (they get the handle back; the public methods in loop.py first
    # check that no transport owns the fd, as asyncio does).

    def _add_reader(self, fd, callback, *args):
        return self.add_io(fd, READABLE, callback, args)

    def _remove_reader(self, fd):
        return self.remove_io(fd, READABLE)

    def _add_writer(self, fd, callback, *args):
        return self.add_io(fd, WRITABLE, callback, args)

    def _remove_writer(self, fd):
        return self.remove_io(fd, WRITABLE)

    cdef remove_io(self, fileobj, int kind):
        if self.closed:
            return False
        cdef int fd = self.resolve_fd(fileobj)
        return fd >= 0 and self.clear_io_handle(fd, kind)

    def _fd_key(self, fileobj):
        """(events, reader, writer) watched for fd, or None: what asyncio's
        selector keys hold (see loop.SelectorView)."""
        cdef int fd = self.resolve_fd(fileobj)
        cdef FdEntry* entry
        if self.closed or fd < 0 or fd >= self.fds_capacity or self.fds[fd].events == 0:
            return None
        entry = &self.fds[fd]
        return (entry.events,
                <object>entry.reader if entry.reader != NULL else None,
                <object>entry.writer if entry.writer != NULL else None)

    def _add_callback(self, handle):
        """Queue an asyncio.Handle made elsewhere (signal handlers are)."""
        if not handle._cancelled:
            self.push_ready(new_handle(_run_foreign_handle, (handle,), self, None))

    def _check_closed(self):
        if self.closed:
            raise RuntimeError('Event loop is closed')

    def _check_running(self):
        if self.running:
            raise RuntimeError('This event loop is already running')
        if _get_running_loop() is not None:
            raise RuntimeError(
                'Cannot run the event loop while another loop is running')

    def _check_thread(self):
        self.check_thread()

    def run_forever(self):
        """Run the event loop until stop() is called."""
        self._check_closed()
        self._check_running()
        old_hooks = _get_asyncgen_hooks()
        self.thread_ident = PyThread_get_thread_ident()
        self.running = True
        self.loop_kwargs = {'loop': self}
        try:
            self._set_coroutine_origin_tracking(self._debug)
            _set_asyncgen_hooks(firstiter=self._asyncgen_firstiter_hook,
                                finalizer=self._asyncgen_finalizer_hook)
            _set_running_loop(self)
            while True:
                self.run_once()
                if self.stopping:
                    break
        finally:
            self.stopping = False
            self.running = False
            self.loop_kwargs = None     # it holds the loop: no cycle left
            _set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            _set_asyncgen_hooks(*old_hooks)

    def _run_once(self):
        self.run_once()

    def stop(self):
        """Stop running the loop once the current iteration is done."""
        self.stopping = True

    def is_running(self):
        return self.running

    def is_closed(self):
        return self.closed

    def get_debug(self):
        return self._debug

    def set_debug(self, enabled):
        self._debug = enabled
        if self.running:
            self.call_soon_threadsafe(self._set_coroutine_origin_tracking, enabled)

    def _close_core(self):
        """Release the loop's OS resources and drop all pending callbacks."""
        self.closed = True
        self.release_all()
        self.close_wakeup()
        self.poller.close()

    @property
    def _thread_id(self):
        return self.thread_ident if self.running else None

    @property
    def _stopping(self):
        return self.stopping

    @_stopping.setter
    def _stopping(self, value):
        # Sanic (and its test client) clears a pending stop this way after
        # run_forever() returns, as asyncio's attribute allows.
        self.stopping = value

    @property
    def _closed(self):                 # read by test fixtures and libraries
        return self.closed

    @property
    def _poller_name(self):
        return self.poller.name

    @property
    def _clock_resolution(self):
        return self.clock_resolution

    @property
    def _transports(self):
        return self.transports

    @_transports.setter
    def _transports(self, value):
        self.transports = value

    cdef track_shared_handles(self):
        """Track the queued untracked handles that somebody else also holds."""
        cdef Py_ssize_t i
        self.shared_untracked = False
        for i in range(self.ready_len):
            _track_if_shared(self.ready[(self.ready_head + i) & (self.ready_capacity - 1)])
        for i in range(self.ntimers):
            _track_if_shared(self.timers[i].timer)
        for i in range(self.fds_capacity):
            _track_if_shared(self.fds[i].reader)
            _track_if_shared(self.fds[i].writer)


# ---------------------------------------------------------------- GC support
#
# The loop reports the references of each untracked handle it owns alone as
# its own (through the handle's traverse), so that the GC still sees through
# them and collects a dropped loop with its pending callbacks. Tracked handles
# are visited as usual. An untracked handle that somebody else also holds
# cannot be accounted for during a collection: it is skipped (what it
# references stays alive, the safe side) and noted, and the gc.callbacks hook
# below tracks it once the collection is over, so the next one sees it.

cdef traverseproc _generated_traverse = (<TypeSlots*>LoopCore).tp_traverse
cdef bint _shared_untracked_seen = False


cdef inline void _track_if_shared(PyObject* obj) noexcept:
    if obj != NULL and Py_REFCNT(obj) > 1 and not PyObject_GC_IsTracked(obj):
        PyObject_GC_Track(obj)


cdef inline int _visit_handle(LoopCore loop, PyObject* obj, visitproc visit, void* arg) noexcept:
    global _shared_untracked_seen
    if obj == NULL:
        return 0
    if PyObject_GC_IsTracked(obj):
        return visit(obj, arg)
    if Py_REFCNT(obj) == 1:
        # The type's traverse: a transport's I/O handle adds its transport.
        return (<TypeSlots*>Py_TYPE(obj)).tp_traverse(obj, visit, arg)
    loop.shared_untracked = True
    _shared_untracked_seen = True
    return 0


cdef int _loop_traverse(PyObject* obj, visitproc visit, void* arg) noexcept:
    cdef int r = _generated_traverse(obj, visit, arg)
    if r:
        return r
    # Borrowed: a local `LoopCore` would take a reference and drop it on the
    # way out, and a debug build of CPython traverses the loop from its
    # dealloc (gc's validation on re-tracking) at refcount 0, where that drop
    # would deallocate it a second time.
    return _traverse_queues(<LoopCore>obj, visit, arg)


cdef int _traverse_queues(LoopCore loop, visitproc visit, void* arg) noexcept:
    cdef Py_ssize_t i
    cdef int r
    for i in range(loop.ready_len):
        r = _visit_handle(loop, loop.ready[(loop.ready_head + i) & (loop.ready_capacity - 1)],
                          visit, arg)
        if r:
            return r
    for i in range(loop.ntimers):
        r = _visit_handle(loop, loop.timers[i].timer, visit, arg)
        if r:
            return r
    for i in range(loop.fds_capacity):
        r = _visit_handle(loop, loop.fds[i].reader, visit, arg)
        if r == 0:
            r = _visit_handle(loop, loop.fds[i].writer, visit, arg)
        if r:
            return r
    return 0


(<TypeSlots*>LoopCore).tp_traverse = _loop_traverse


def _on_collection(phase, info):
    global _shared_untracked_seen
    if phase == "start":
        if info["generation"] == 2:
            for loop in list(_all_loops):
                (<LoopCore>loop).track_shared_handles()
    elif _shared_untracked_seen:
        _shared_untracked_seen = False
        for loop in list(_all_loops):
            if (<LoopCore>loop).shared_untracked:
                (<LoopCore>loop).track_shared_handles()


gc.callbacks.append(_on_collection)


def _run_foreign_handle(handle):
    if not handle._cancelled:
        handle._run()


# ----------------------------------------------------- call_soon entry points

cdef object _call_soon(object loop, object callback, object args, object context):
    """Arrange for callback(*args) to run on the next loop iteration."""
    cdef LoopCore self = <LoopCore>loop
    self.check_call(callback, 'call_soon')
    cdef Handle handle = new_handle(callback, <tuple>args, self, context)
    self.push_ready(handle)
    adopt(handle)
    return handle


cdef object _call_soon_threadsafe(object loop, object callback, object args, object context):
    """Like call_soon(), but safe to call from any thread."""
    cdef LoopCore self = <LoopCore>loop
    if self.closed:
        raise RuntimeError('Event loop is closed')
    if self._debug:
        self._check_callback(callback, 'call_soon_threadsafe')
    else:
        check_callback(callback, 'call_soon_threadsafe')
    # The GIL makes the push atomic for the loop's thread.
    cdef Handle handle = new_threadsafe_handle(callback, <tuple>args, self, context)
    self.push_ready(handle)
    adopt(handle)
    self.wake()
    return handle


fl_call_soon_impl = _call_soon
fl_call_soon_threadsafe_impl = _call_soon_threadsafe
fl_install_scheduling_methods(<PyTypeObject*>LoopCore)
_LOOP_CLOCK = LoopCore.__dict__["time"]


def _reinit_after_fork():
    for loop in list(_all_loops):
        (<LoopCore>loop).after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)

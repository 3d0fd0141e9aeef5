/* Platform shims for the pollers and the loop's wake-up fd.
 *
 * The epoll backend and eventfd exist only on Linux. Elsewhere this header
 * provides stand-ins that fail with ENOSYS, so one Cython source compiles on
 * every platform and the loop picks the poll() backend and a self-pipe there.
 */
#ifndef FASTLOOP_COMPAT_H
#define FASTLOOP_COMPAT_H

#include <errno.h>
#include <locale.h>
#include <string.h>
#include <stdint.h>
#include <time.h>
#include <limits.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <poll.h>
/* poll()'s report that the peer shut down its sending side: Linux only
 * (Python.h defines _GNU_SOURCE, which poll.h needs for it). */
#ifndef POLLRDHUP
#define POLLRDHUP 0
#endif

/* send() on a socket whose peer is gone: EPIPE, never SIGPIPE (Python
 * ignores SIGPIPE, an embedding application may not). macOS has no flag;
 * there the interpreter's SIG_IGN is what applies. */
#ifdef MSG_NOSIGNAL
#define FL_MSG_NOSIGNAL MSG_NOSIGNAL
#else
#define FL_MSG_NOSIGNAL 0
#endif

#ifdef __linux__
#include <sys/epoll.h>
#include <sys/eventfd.h>
#define FL_HAVE_EPOLL 1
#define FL_HAVE_EVENTFD 1
#else
#define FL_HAVE_EPOLL 0
#define FL_HAVE_EVENTFD 0
#define EPOLLIN 0x001
#define EPOLLOUT 0x004
#define EPOLLERR 0x008
#define EPOLLHUP 0x010
#define EPOLLRDHUP 0x2000
#define EPOLL_CTL_ADD 1
#define EPOLL_CTL_DEL 2
#define EPOLL_CTL_MOD 3
#define EPOLL_CLOEXEC 0
#define EFD_CLOEXEC 0
#define EFD_NONBLOCK 0
typedef union epoll_data { void *ptr; int fd; uint32_t u32; uint64_t u64; } epoll_data_t;
struct epoll_event { uint32_t events; epoll_data_t data; };
static inline int epoll_create1(int flags) { (void)flags; errno = ENOSYS; return -1; }
static inline int epoll_ctl(int e, int op, int fd, struct epoll_event *ev) {
    (void)e; (void)op; (void)fd; (void)ev; errno = ENOSYS; return -1;
}
static inline int epoll_wait(int e, struct epoll_event *evs, int n, int t) {
    (void)e; (void)evs; (void)n; (void)t; errno = ENOSYS; return -1;
}
static inline int eventfd(unsigned int v, int flags) { (void)v; (void)flags; errno = ENOSYS; return -1; }
#endif

/* kqueue: macOS and the BSDs; on Linux only through libkqueue, an emulation
 * on top of epoll that a build may link (FASTLOOP_LIBKQUEUE=<prefix>, see
 * setup.py) so that the kqueue backend can be tested there. Elsewhere the
 * stand-ins fail with ENOSYS, and so they do where the kqueue has no
 * EV_RECEIPT (which interest changes rely on: see _poller.pyx).
 *
 * FL_KQUEUE_INHERITED: whether a forked child gets the parent's queue. A
 * kernel kqueue is not inherited (the child's copy of the fd number is
 * closed, and may be reused by the time the loop notices the fork), so the
 * child must not close it; libkqueue's is an ordinary fd the child has to
 * close. */
#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || \
    defined(__NetBSD__) || defined(__DragonFly__) || defined(FL_USE_LIBKQUEUE)
#include <fcntl.h>
#include <unistd.h>
#include <sys/event.h>
#endif
#if defined(EV_SET) && defined(EV_RECEIPT)
#define FL_HAVE_KQUEUE 1
#ifdef FL_USE_LIBKQUEUE
#define FL_KQUEUE_INHERITED 1
/* libkqueue frees a closed queue's own fds from a thread of its own, later;
 * this waits for it, so that a closed loop has closed its fds, as on a
 * kernel kqueue. */
void libkqueue_drain_pending_close(void);
static inline int fl_kqueue_close(int kq) {
    int rc = close(kq);
    libkqueue_drain_pending_close();
    return rc;
}
#else
#define FL_KQUEUE_INHERITED 0
static inline int fl_kqueue_close(int kq) { return close(kq); }
#endif
typedef struct kevent fl_kevent;
static inline int fl_kqueue(void) {
    int kq = kqueue();
    if (kq >= 0 && fcntl(kq, F_SETFD, FD_CLOEXEC) < 0) {
        int saved = errno;
        close(kq);
        errno = saved;
        return -1;
    }
    return kq;
}
/* The registration tag travels in udata (an intptr_t on NetBSD). */
static inline void fl_kevent_set(fl_kevent *kev, int fd, int filter, int flags, unsigned int tag) {
#ifdef __NetBSD__
    EV_SET(kev, fd, filter, flags, 0, 0, (intptr_t)tag);
#else
    EV_SET(kev, fd, filter, flags, 0, 0, (void *)(uintptr_t)tag);
#endif
}
static inline unsigned int fl_kevent_tag(const fl_kevent *kev) {
    return (unsigned int)(uintptr_t)kev->udata;
}
/* timeout_ms < 0: block until an event. */
static inline int fl_kevent_wait(int kq, fl_kevent *events, int n, int timeout_ms) {
    struct timespec ts;
    ts.tv_sec = timeout_ms / 1000;
    ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
    return kevent(kq, NULL, 0, events, n, timeout_ms < 0 ? NULL : &ts);
}
/* Every change carries EV_RECEIPT, so the call reports one receipt per
 * change and no events; the zero timeout is a guard: it never blocks. */
static inline int fl_kevent_apply(int kq, const fl_kevent *changes, int n, fl_kevent *receipts) {
    struct timespec zero = {0, 0};
    return kevent(kq, changes, n, receipts, n, &zero);
}
#else
#define FL_HAVE_KQUEUE 0
#define FL_KQUEUE_INHERITED 0
#ifndef EVFILT_READ
#define EVFILT_READ (-1)
#define EVFILT_WRITE (-2)
#define EV_ADD 0x0001
#define EV_DELETE 0x0002
#define EV_ERROR 0x4000
#endif
#ifndef EV_RECEIPT
#define EV_RECEIPT 0x0040
#endif
#ifndef EV_EOF
#define EV_EOF 0x8000
#endif
typedef struct { uintptr_t ident; short filter; unsigned short flags; unsigned int fflags;
                 intptr_t data; void *udata; } fl_kevent;
static inline int fl_kqueue(void) { errno = ENOSYS; return -1; }
static inline int fl_kqueue_close(int kq) { (void)kq; errno = ENOSYS; return -1; }
static inline void fl_kevent_set(fl_kevent *kev, int fd, int filter, int flags, unsigned int tag) {
    (void)kev; (void)fd; (void)filter; (void)flags; (void)tag;
}
static inline unsigned int fl_kevent_tag(const fl_kevent *kev) { (void)kev; return 0; }
static inline int fl_kevent_wait(int kq, fl_kevent *events, int n, int timeout_ms) {
    (void)kq; (void)events; (void)n; (void)timeout_ms; errno = ENOSYS; return -1;
}
static inline int fl_kevent_apply(int kq, const fl_kevent *changes, int n, fl_kevent *receipts) {
    (void)kq; (void)changes; (void)n; (void)receipts; errno = ENOSYS; return -1;
}
#endif

/* Accepting a connection as a non-blocking, close-on-exec socket in one
 * system call (what socket.accept() + setblocking(False) take two for).
 * accept4() is Linux's (and the BSDs'); elsewhere the stand-in fails with
 * ENOSYS and the caller takes the socket module's path. */
#include <netinet/in.h>
#include <arpa/inet.h>
#if defined(__linux__) && defined(SOCK_NONBLOCK)
#define FL_HAVE_ACCEPT4 1
static inline int fl_accept_nonblocking(int fd, struct sockaddr_storage *addr, socklen_t *len) {
    *len = sizeof(*addr);
    return accept4(fd, (struct sockaddr *)addr, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
}
#else
#define FL_HAVE_ACCEPT4 0
#ifndef SOCK_NONBLOCK
#define SOCK_NONBLOCK 0
#endif
static inline int fl_accept_nonblocking(int fd, struct sockaddr_storage *addr, socklen_t *len) {
    (void)fd; (void)addr; (void)len; errno = ENOSYS; return -1;
}
#endif

/* TCP_NODELAY on, as asyncio sets it on its TCP transports' sockets; for
 * accepted connections whose listener is known to be TCP, without the socket
 * module's setsockopt() call. */
#include <netinet/tcp.h>
static inline int fl_set_tcp_nodelay(int fd) {
    int on = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
}

/* cls(*args) for socket.socket, with its base's (_socket.socket's) C
 * initialiser instead of its Python-level __init__: the caller sets the two
 * slots that __init__ would (see _transports.pyx, new_socket()). */
static inline PyObject *fl_new_socket(PyObject *cls, PyObject *base, PyObject *args) {
    PyTypeObject *type = (PyTypeObject *)cls;
    PyObject *sock = type->tp_new(type, args, NULL);
    if (sock == NULL)
        return NULL;
    if (((PyTypeObject *)base)->tp_init(sock, args, NULL) < 0) {
        Py_DECREF(sock);
        return NULL;
    }
    return sock;
}

/* The clock of time.monotonic(), so loop.time() agrees with it to the
 * nanosecond: CLOCK_MONOTONIC on Linux, the uptime clock behind
 * mach_absolute_time() on macOS. */
static inline double fl_monotonic(void) {
    struct timespec ts;
#if defined(__APPLE__) && defined(CLOCK_UPTIME_RAW)
    clock_gettime(CLOCK_UPTIME_RAW, &ts);
#else
    clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Read access to CPython's Context objects, for sharing one copy of the
 * current context among callbacks (see _handles.pyx). The layout has been the
 * same from Python 3.7 through 3.14; fastloop._handles checks it at import and
 * falls back to a copy per callback if it ever differs. */
typedef struct {
    PyObject_HEAD
    PyObject *ctx_prev;
    PyObject *ctx_vars;          /* an immutable mapping: replaced, never mutated */
    PyObject *ctx_weakreflist;
    int ctx_entered;
} fl_context_layout;

static inline PyObject *fl_current_context(void) {       /* borrowed, may be NULL */
    return PyThreadState_Get()->context;
}
static inline PyObject *fl_context_vars(PyObject *ctx) {  /* borrowed */
    return ((fl_context_layout *)ctx)->ctx_vars;
}
static inline int fl_context_entered(PyObject *ctx) {
    return ((fl_context_layout *)ctx)->ctx_entered;
}
static inline void fl_context_set_vars(PyObject *ctx, PyObject *vars) {
    Py_INCREF(vars);
    Py_SETREF(((fl_context_layout *)ctx)->ctx_vars, vars);
}

/* strerror(err) as a str (the message the socket module puts in its
 * OSErrors). glibc's strerror() looks the text up through gettext on every
 * call (~600 instructions: a peer reset costs one); while LC_MESSAGES is
 * "C" or "POSIX" (Python's default: it sets only LC_CTYPE) the text is the
 * untranslated one, and is kept per errno. New reference, NULL on error. */
static PyObject *fl_strerror_texts[160];
static inline PyObject *fl_strerror(int err) {
    const char *messages = setlocale(LC_MESSAGES, NULL);
    int keep = err >= 0 && err < (int)(sizeof(fl_strerror_texts) / sizeof(fl_strerror_texts[0]))
               && messages != NULL
               && (strcmp(messages, "C") == 0 || strcmp(messages, "POSIX") == 0);
    PyObject *text;
    if (keep && fl_strerror_texts[err] != NULL) {
        Py_INCREF(fl_strerror_texts[err]);
        return fl_strerror_texts[err];
    }
    const char *raw = strerror(err);
    text = PyUnicode_DecodeUTF8(raw, (Py_ssize_t)strlen(raw), "replace");
    if (keep && text != NULL) {
        Py_INCREF(text);
        fl_strerror_texts[err] = text;
    }
    return text;
}

/* Reuse of a bytes object nobody else references (see _recvbuf.pyx): its
 * first n bytes (its allocation holds at least n + 1) become its content.
 * The cached hash is reset: the object reads as new. */
static inline void fl_bytes_resize_reused(PyObject *b, Py_ssize_t n) {
    ((PyBytesObject *)b)->ob_sval[n] = 0;
    Py_SET_SIZE(b, n);
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
    ((PyBytesObject *)b)->ob_shash = -1;
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic pop
#endif
}

/* obj.name resolves to func as a plain method (found on the type, not
 * shadowed by an instance attribute): Python's own lookup, without making a
 * bound method. 0 when it resolves to anything else or not at all. */
#if PY_VERSION_HEX >= 0x030D0000 && PY_VERSION_HEX < 0x030E0000
PyAPI_FUNC(int) _PyObject_GetMethod(PyObject *obj, PyObject *name, PyObject **method);
#endif
static inline int fl_method_is(PyObject *obj, PyObject *name, PyObject *func) {
    PyObject *found = NULL;
    int same;
#if PY_VERSION_HEX < 0x030E0000
    int unbound = _PyObject_GetMethod(obj, name, &found);
    if (found == NULL) {
        PyErr_Clear();
        return 0;
    }
    same = unbound && found == func;
#else
    found = PyObject_GetAttr(obj, name);
    if (found == NULL) {
        PyErr_Clear();
        return 0;
    }
    same = PyMethod_Check(found) && PyMethod_GET_FUNCTION(found) == func
           && PyMethod_GET_SELF(found) == obj;
#endif
    Py_DECREF(found);
    return same;
}

/* obj has no attributes of its own: its type gives it no __dict__, or the
 * one it gives was never filled. An attribute lookup on it then finds what
 * its type has. 0 when that is not known cheaply (a managed __dict__). */
static inline int fl_no_instance_dict(PyObject *obj) {
    Py_ssize_t offset = Py_TYPE(obj)->tp_dictoffset;
    if (offset > 0)
        return *(PyObject **)((char *)obj + offset) == NULL;
#ifdef Py_TPFLAGS_MANAGED_DICT
    if (PyType_HasFeature(Py_TYPE(obj), Py_TPFLAGS_MANAGED_DICT))
        return 0;
#endif
    return offset == 0;
}

/* Buffers exported from a bytearray (memoryviews...): while any is, it
 * cannot be resized. */
static inline Py_ssize_t fl_bytearray_exports(PyObject *b) {
    return ((PyByteArrayObject *)b)->ob_exports;
}

/* func(self, arg): a method called through its function. */
static inline PyObject *fl_call_method_one(PyObject *func, PyObject *self, PyObject *arg) {
    PyObject *args[3];
    args[1] = self;
    args[2] = arg;
    return PyObject_Vectorcall(func, args + 1, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

/* f(arg) returning a new reference or NULL with the exception set; a bound
 * method is called as its function with (self, arg), without the method
 * object's own vectorcall step (as Cython's calls do). */
static inline PyObject *fl_call_one(PyObject *f, PyObject *arg) {
    PyObject *args[2];
    if (PyMethod_Check(f))
        return fl_call_method_one(PyMethod_GET_FUNCTION(f), PyMethod_GET_SELF(f), arg);
    args[1] = arg;
    return PyObject_Vectorcall(f, args + 1, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

/* Whether weak reference ref still refers to obj. PyWeakref_GetObject() and
 * its macro are deprecated from 3.13 (and gone in 3.15): there, borrow the
 * referent through PyWeakref_GetRef(); only its address is compared. */
static inline int fl_weakref_is(PyObject *ref, PyObject *obj) {
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *target;
    if (PyWeakref_GetRef(ref, &target) <= 0) {
        PyErr_Clear();   /* not a weak reference: cannot happen here */
        return 0;
    }
    Py_DECREF(target);
    return target == obj;
#else
    return PyWeakref_GET_OBJECT(ref) == obj;
#endif
}

#endif

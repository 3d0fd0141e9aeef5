"""The Python half of fastloop's event loop.

Loop puts the Cython LoopCore (scheduling, timers, readiness polling, the
run loop) in front of asyncio's own selector event loop class in the method
resolution order. Everything LoopCore does not implement is the running
Python's asyncio code: task creation, exception handlers, executors, async
generator hooks, DNS, create_connection/create_server, the socket, pipe and
subprocess transports, signal handlers and TLS. Those only reach the loop
through a few selector internals (_add_reader and friends, _add_callback),
which LoopCore provides on top of its own fd registry and ready queue.
Behaviour therefore matches the running Python's asyncio exactly; transports
move to Cython piece by piece.
"""
import asyncio
import asyncio.unix_events
import selectors
import socket
import sys
import threading
import warnings
import weakref
from asyncio.log import logger

from fastloop._core import LoopCore
from fastloop._transports import Acceptor, DatagramTransport, SocketTransport, TransportMap
from fastloop import _sockops
from fastloop._children import new_watcher

__all__ = ["Loop"]

# The selectors module's class for each poller's mechanism.
_SELECTOR_NAMES = {"epoll": "EpollSelector", "kqueue": "KqueueSelector", "poll": "PollSelector"}


class SelectorView:
    """The part of a selector asyncio's transports read: get_key() (their
    reprs, unclosed-transport warnings and the "fd used by a transport" check
    call it), answered from the core's fd registry. READABLE/WRITABLE there
    equal selectors.EVENT_READ/EVENT_WRITE."""

    __slots__ = ("_loop",)

    def __init__(self, loop):
        self._loop = weakref.ref(loop)     # the loop holds the view

    def get_key(self, fileobj):
        loop = self._loop()
        key = loop._fd_key(fileobj) if loop is not None else None
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        events, reader, writer = key
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        return selectors.SelectorKey(fileobj, fd, events, (reader, writer))


class Loop(LoopCore, asyncio.SelectorEventLoop):
    """A fast asyncio event loop. Use it wherever asyncio takes a loop."""

    def __init__(self, *, poller=None):
        """`poller` picks the readiness backend ("epoll", "kqueue" or "poll");
        by default the FASTLOOP_POLLER environment variable, else the best
        available."""
        # The stdlib loops' __init__ would build a selector, a ready deque
        # and a self-pipe: LoopCore has its own, so set only what asyncio's
        # inherited code reads.
        LoopCore.__init__(self, poller=poller)
        # asyncio's selector loops log the selector they made; fastloop names
        # the one that would use its poller's mechanism.
        logger.debug("Using selector: %s", _SELECTOR_NAMES[self._poller_name])
        self._exception_handler = None
        self._default_executor = None
        self._executor_shutdown_called = False
        self._asyncgens = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth = None
        self._selector = SelectorView(self)
        self._transports = TransportMap()
        self._internal_fds = 0
        self._ssock = self._csock = None    # the self-pipe, made on demand
        self._signal_handlers = {}
        self._unix_server_sockets = {}
        self._children = None               # the child watcher, made on demand
        # asyncio's selector loop refers to itself (its self-pipe reader)
        # until close(): a dropped unclosed loop is freed, and warns, only
        # when the cyclic garbage collector runs. The same here, so programs
        # (and their tests) see the warning when asyncio's would come.
        self._self_until_closed = self

    def __repr__(self):
        return (f"<{type(self).__module__}.{type(self).__qualname__} "
                f"running={self.is_running()} closed={self.is_closed()} "
                f"debug={self.get_debug()}>")

    def __del__(self, _warn=warnings.warn):
        if not self.is_closed():
            _warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
            if not self.is_running():
                self.close()

    def close(self):
        """Close the loop: remove signal handlers, drop pending callbacks,
        release its OS resources and shut the default executor down without
        waiting for it."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if self.get_debug():
            logger.debug("Close %r", self)
        if self._signal_handlers:
            if sys.is_finalizing():
                warnings.warn(f"Closing the loop {self!r} on interpreter shutdown "
                              f"stage, skipping signal handlers removal",
                              ResourceWarning, source=self)
                self._signal_handlers.clear()
            else:
                for sig in list(self._signal_handlers):
                    self.remove_signal_handler(sig)
        if self._ssock is not None:
            self._close_self_pipe()
        if self._children is not None:
            self._children.close()
        self._close_core()
        self._self_until_closed = None
        self._selector = None
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    # Same signature and semantics as the stdlib's on these versions, with
    # the plain case in C.
    if (3, 11) <= sys.version_info < (3, 13):
        create_task = LoopCore._create_task
    elif sys.version_info[:2] == (3, 13):
        create_task = LoopCore._create_task_kw
    elif sys.version_info[:2] == (3, 14):
        create_task = LoopCore._create_task_314

    def _make_socket_transport(self, sock, protocol, waiter=None, *,
                               extra=None, server=None):
        # Every plain (non-TLS) stream connection asyncio's code makes --
        # create_connection, servers, unix sockets, connect_accepted_socket
        # -- gets fastloop's C transport. (asyncio's fails on a closed loop
        # when it schedules connection_made().)
        self._check_closed()
        if type(sock) is not socket.socket:
            # asyncio's transport reads and writes through the socket's
            # methods, which a subclass may override: it gets asyncio's.
            return super()._make_socket_transport(sock, protocol, waiter,
                                                  extra=extra, server=server)
        self._ensure_fd_no_transport(sock)
        return SocketTransport(self, sock, protocol, waiter, extra, server)

    def _start_serving(self, protocol_factory, sock, sslcontext=None, server=None,
                       backlog=100, *ssl_timeouts):
        # A plain server's listening socket is read by a C Acceptor: what
        # _accept_connection() below does, without a Python-level call per
        # wake-up. TLS servers and subclasses that override
        # _accept_connection() or _make_socket_transport() get asyncio's
        # registration (and, for the latter, its accept code).
        if (sslcontext is not None or self._own_transports()
                or type(self)._accept_connection is not Loop._accept_connection
                or type(sock) is not socket.socket):     # its accept() may be overridden
            return super()._start_serving(protocol_factory, sock, sslcontext, server,
                                          backlog, *ssl_timeouts)
        self._add_reader(sock.fileno(),
                         Acceptor(self, protocol_factory, sock, server, backlog, ssl_timeouts))

    def _accept_connection(self, protocol_factory, sock, sslcontext=None,
                           server=None, backlog=100, *ssl_timeouts):
        # Plain servers accept in C without a task per connection (see
        # Acceptor). TLS servers (a handshake to wait for) take asyncio's
        # code, and so does a subclass with its own _make_socket_transport(),
        # which asyncio calls with a waiter it then awaits.
        if sslcontext is not None or self._own_transports() or type(sock) is not socket.socket:
            return super()._accept_connection(protocol_factory, sock, sslcontext, server,
                                              backlog, *ssl_timeouts)
        Acceptor(self, protocol_factory, sock, server, backlog, ssl_timeouts)()

    def _own_transports(self):
        return type(self)._make_socket_transport is not Loop._make_socket_transport

    def _make_datagram_transport(self, sock, protocol, address=None,
                                 waiter=None, extra=None):
        # create_datagram_endpoint's transport: fastloop's C one.
        self._check_closed()
        self._ensure_fd_no_transport(sock)
        return DatagramTransport(self, sock, protocol, address, waiter, extra)

    # sock_recv, sock_recv_into and sock_sendall: plain sockets take the C
    # path (fastloop/_sockops.pyx); anything else (socket subclasses, debug
    # mode with its extra checks) runs asyncio's own code. The three bodies
    # are alike on purpose: a shared helper coroutine would add an await
    # layer to every call that has to wait.

    async def sock_recv(self, sock, n):
        if type(sock) is not socket.socket or self._debug:
            return await super().sock_recv(sock, n)
        result = _sockops.sock_recv(self, sock, n)
        if type(result) is bytes:
            return result
        fd = sock.fileno()                  # for abandon(), if sock is closed meanwhile
        try:
            return await result
        except BaseException:
            _sockops.abandon(self, fd, result)
            raise

    async def sock_recv_into(self, sock, buf):
        if type(sock) is not socket.socket or self._debug:
            return await super().sock_recv_into(sock, buf)
        result = _sockops.sock_recv_into(self, sock, buf)
        if type(result) is int:
            return result
        fd = sock.fileno()                  # for abandon(), if sock is closed meanwhile
        try:
            return await result
        except BaseException:
            _sockops.abandon(self, fd, result)
            raise

    async def sock_sendall(self, sock, data):
        if type(sock) is not socket.socket or self._debug:
            _sockops.send_held_writes(self)
            return await super().sock_sendall(sock, data)
        result = _sockops.sock_sendall(self, sock, data)
        if result is None:
            return None
        fd = sock.fileno()                  # for abandon(), if sock is closed meanwhile
        try:
            return await result
        except BaseException:
            _sockops.abandon(self, fd, result)
            raise

    async def _make_subprocess_transport(self, protocol, args, shell,
                                         stdin, stdout, stderr, bufsize,
                                         extra=None, **kwargs):
        # asyncio's process transport, but the exit is detected by the loop's
        # own watcher (fastloop/_children.py: pidfd, else a thread), not by
        # the policy's child watcher: no SIGCHLD handler, any thread.
        if self._children is None:
            self._children = new_watcher(self)
        waiter = self.create_future()
        transp = asyncio.unix_events._UnixSubprocessTransport(
            self, protocol, args, shell, stdin, stdout, stderr, bufsize,
            waiter=waiter, extra=extra, **kwargs)
        self._children.watch(transp.get_pid(), transp._process_exited)
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transp.close()
            await transp._wait()
            raise
        return transp

    def add_signal_handler(self, sig, callback, *args):
        # Signals reach the loop through the self-pipe (signal.set_wakeup_fd);
        # a loop that never handles signals does without it.
        if self._ssock is None and not self.is_closed():
            self._make_self_pipe()
        return super().add_signal_handler(sig, callback, *args)

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        """asyncio's getaddrinfo(); an IP literal (or no host) needs no lookup,
        so it is answered without the thread pool."""
        self._check_closed()
        # Debug mode logs every lookup, and flags that are not an int are
        # converted by the socket module: asyncio's path for both.
        if not self._debug and isinstance(flags, int):
            self._check_default_executor()   # asyncio's run_in_executor() checks
            try:
                result = socket.getaddrinfo(host, port, family, type, proto,
                                            flags | socket.AI_NUMERICHOST)
            except (OSError, UnicodeError):
                pass            # a name to resolve (or an error asyncio reports)
            else:
                # asyncio's answer comes from another thread, at the earliest
                # in the next iteration: other callbacks run first, and the
                # caller may be cancelled meanwhile.
                await asyncio.sleep(0)
                return result
        return await super().getaddrinfo(host, port, family=family, type=type,
                                         proto=proto, flags=flags)

    def _check_default_executor(self):
        # Python 3.10's run_in_executor asks for this.
        if self._executor_shutdown_called:
            raise RuntimeError('Executor shutdown has been called')

    async def shutdown_default_executor(self, timeout=None):
        """Wait for the default executor's threads to finish, at most `timeout`
        seconds (None: no limit), as Python 3.12's asyncio does; available on
        every supported version."""
        self._executor_shutdown_called = True
        if self._default_executor is None:
            return
        future = self.create_future()
        thread = threading.Thread(target=self._do_shutdown, args=(future,))
        thread.start()
        try:
            if timeout is None:
                await future
            else:
                await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            warnings.warn("The executor did not finishing joining "
                          f"its threads within {timeout} seconds.",
                          RuntimeWarning, stacklevel=2)
            self._default_executor.shutdown(wait=False)
        else:
            thread.join()

    def _do_shutdown(self, future):
        try:
            self._default_executor.shutdown(wait=True)
            if not self.is_closed():
                self.call_soon_threadsafe(_set_result_unless_cancelled, future, None)
        except Exception as ex:
            if not self.is_closed() and not future.cancelled():
                self.call_soon_threadsafe(future.set_exception, ex)


def _set_result_unless_cancelled(future, result):
    if not future.cancelled():
        future.set_result(result)

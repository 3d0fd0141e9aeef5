"""Child-process exit detection owned by the loop.

asyncio learns that a subprocess exited through a "child watcher" chosen by
the event loop policy; depending on the Python version that is a SIGCHLD
handler (which other libraries may replace, and which only works in the main
thread) or a thread per child. fastloop watches its own children instead:

- PidfdWatcher (Linux 5.3+): os.pidfd_open() gives an fd that becomes
  readable when the process exits; the loop polls it like any socket, and
  reaps the child with waitpid() when it does. No signal, no thread.
- ThreadWatcher (elsewhere, or where pidfd_open is refused): one daemon thread
  per child waits for its exit (waitid() without reaping, where it exists)
  and tells the loop with call_soon_threadsafe(), which reaps it, as
  asyncio's ThreadedChildWatcher does.

Both have the interface a kqueue watcher (EVFILT_PROC/NOTE_EXIT) would have:
watch(pid, callback) calls callback(returncode) on the loop's thread once;
close() stops watching (the loop is closing).
"""
import os
import sys
import threading
from asyncio.log import logger

# The log records are those of the watcher asyncio's default policy would
# use: its pidfd watcher from Python 3.12 on where pidfd_open() works (it
# logs no exits), otherwise its threaded watcher (which logs each exit in
# debug mode).
_ASYNCIO_WATCHES_PIDFDS = sys.version_info >= (3, 12)


def _reap(loop, pid, like_pidfd_watcher):
    """waitpid() the exited child: its return code (asyncio's conventions)."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        # Somebody else reaped it (a waitpid(-1) elsewhere in the program).
        if like_pidfd_watcher:
            logger.warning("child process pid %d exit status already read: "
                           " will report returncode 255", pid)
        else:
            logger.warning("Unknown child process pid %d, will report returncode 255", pid)
        return 255
    returncode = os.waitstatus_to_exitcode(status)
    if not like_pidfd_watcher and loop.get_debug():
        logger.debug("process %s exited with returncode %s", pid, returncode)
    return returncode


class PidfdWatcher:
    def __init__(self, loop):
        self._loop = loop
        self._pidfds = {}           # pidfd -> pid

    @staticmethod
    def available():
        if not hasattr(os, "pidfd_open"):
            return False
        try:
            fd = os.pidfd_open(os.getpid())
        except OSError:             # ENOSYS on old kernels, EPERM under seccomp
            return False
        os.close(fd)
        return True

    def watch(self, pid, callback):
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            # Already exited and reaped elsewhere... or exited and waiting:
            # waitpid() tells which.
            self._loop.call_soon(self._finish, pid, None, callback)
            return
        self._pidfds[pidfd] = pid
        self._loop._add_reader(pidfd, self._finish, pid, pidfd, callback)

    def _finish(self, pid, pidfd, callback):
        if pidfd is not None:
            self._loop._remove_reader(pidfd)
            del self._pidfds[pidfd]
            os.close(pidfd)
        # The pidfd is readable once the child is a zombie: this cannot block.
        returncode = _reap(self._loop, pid, _ASYNCIO_WATCHES_PIDFDS)
        callback(returncode)

    def close(self):
        for pidfd in list(self._pidfds):
            self._loop._remove_reader(pidfd)
            os.close(pidfd)
        self._pidfds.clear()


class ThreadWatcher:
    def __init__(self, loop):
        self._loop = loop
        # Children that have exited and wait, unreaped, for the loop to reap
        # them; whoever takes a pid out (_claim) reaps it.
        self._unreaped = set()
        self._lock = threading.Lock()

    def watch(self, pid, callback):
        thread = threading.Thread(target=self._wait, args=(pid, callback),
                                  name=f"fastloop-waitpid-{pid}", daemon=True)
        thread.start()

    def _wait(self, pid, callback):
        # Where waitid() exists the thread only waits for the exit; the child
        # stays a zombie, its PID reserved, until the loop's thread reaps it
        # and reports the exit in one step. Reaping here would let a
        # send_signal() in between reach a recycled PID (asyncio's threaded
        # watcher waits the same way from 3.14 on).
        if not hasattr(os, "waitid"):
            returncode = _reap(self._loop, pid, False)
            try:
                self._loop.call_soon_threadsafe(callback, returncode)
            except RuntimeError:    # the loop is closed
                pass
            return
        _wait_for_exit(pid)
        with self._lock:
            self._unreaped.add(pid)
        try:
            self._loop.call_soon_threadsafe(self._finish, pid, callback)
        except RuntimeError:        # the loop is closed: leave no zombie
            if self._claim(pid):
                _reap(self._loop, pid, False)

    def _claim(self, pid):
        with self._lock:
            if pid not in self._unreaped:
                return False
            self._unreaped.remove(pid)
            return True

    def _finish(self, pid, callback):
        if self._claim(pid):
            callback(_reap(self._loop, pid, False))     # a zombie by now: this cannot block

    def close(self):
        # The threads end with their children; the exits the loop will not
        # run _finish() for any more are reaped here.
        for pid in list(self._unreaped):
            if self._claim(pid):
                _reap(self._loop, pid, False)


def _wait_for_exit(pid):
    """Block until child pid has exited, without reaping it."""
    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:   # reaped elsewhere: _reap() reports it
            return
        if info is not None and info.si_code == os.CLD_STOPPED:
            # macOS reports a stopped child to WEXITED: consume the stop
            # and wait on for the exit.
            os.waitid(os.P_PID, pid, os.WSTOPPED | os.WNOHANG)
            continue
        return


def new_watcher(loop):
    if PidfdWatcher.available():
        return PidfdWatcher(loop)
    return ThreadWatcher(loop)

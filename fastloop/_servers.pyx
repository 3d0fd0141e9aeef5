"""asyncio.Server's bookkeeping of its connections, in C.

A server's transports tell it when a connection starts and ends
(Server._attach() and _detach()), so that close() and wait_closed() know
what is still open: a counter before Python 3.13, a weakref.WeakSet of the
transports from 3.13 on (server._clients, for close_clients() and
abort_clients()). As Python, that is one to five frames per connection
(~1000 instructions before 3.13; ~0.5 us on 3.13, with WeakSet's add(),
discard() and __len__()). While each method that would run is the
stdlib's own, checked on each use as Python would look it up (so patches
and subclasses run), its steps run here on the same attributes; where an
assertion of theirs would fail, or anything differs (a subclass of
WeakSet, a replaced set), the methods are called.
"""
from cpython.object cimport PyObject, PyTypeObject, Py_TYPE
from cpython.weakref cimport PyWeakref_NewRef

from fastloop._originals cimport original, fl_method_is
from fastloop._attrs cimport fl_attr, fl_inline_attrs_on, fl_attr_init, fl_getattr
from fastloop import _streams as _streams_module

import inspect
import weakref
from asyncio import base_events as _base_events

cdef extern from "Python.h":
    # Borrowed; NULL (no exception) when the type has no such attribute.
    PyObject* _PyType_Lookup(PyTypeObject* type, object name)

cdef object _Server = _base_events.Server
# Python 3.13's Server tracks its client transports: _attach(transport).
cdef bint _TRACKS_TRANSPORTS = len(inspect.signature(_Server._attach).parameters) > 1
cdef object _attach = original(_Server, "_attach", "asyncio.base_events")
cdef object _detach = original(_Server, "_detach", "asyncio.base_events")

cdef object _WeakSet = weakref.WeakSet
cdef object _weakset_add = original(_WeakSet, "add", "_weakrefset")
cdef object _weakset_discard = original(_WeakSet, "discard", "_weakrefset")
cdef object _weakset_len = original(_WeakSet, "__len__", "_weakrefset")
cdef bint _WEAKSET_KNOWN = (_weakset_add is not None and _weakset_discard is not None
                            and _weakset_len is not None)
# Up to 3.13 a WeakSet defers the removals of dead references while it is
# being iterated (its _pending_removals); 3.14's iterates over a copy and
# has no such list.
cdef bint _WEAKSET_DEFERS = hasattr(_WeakSet(), "_pending_removals")

fl_inline_attrs_on = _streams_module.INLINE_ATTRS      # (see _attrs.pxd)
cdef fl_attr _sockets_at
fl_attr_init(&_sockets_at, "_sockets")


cdef bint server_is_open(object server) except -1:
    """asyncio's test that a server is open: close() sets its _sockets to
    None. Read in place where _attrs.h can (once per accepted connection)."""
    return fl_getattr(server, &_sockets_at) is not None


cdef int server_attach(object server, object transport) except -1:
    if _TRACKS_TRANSPORTS:
        if not client_added(server, transport):
            server._attach(transport)
    elif not counted_in(server):
        server._attach()
    return 0


cdef int server_detach(object server, object transport) except -1:
    if _TRACKS_TRANSPORTS:
        if not client_dropped(server, transport):
            server._detach(transport)
    elif not counted_out(server):
        server._detach()
    return 0


# ------------------------------------------------------------ before 3.13

cdef bint counted_in(server) except -1:
    """What asyncio's Server._attach() does, if it is what would run."""
    if _attach is None or not fl_method_is(server, "_attach", _attach):
        return False
    if not server_is_open(server):
        return False                    # its assertion
    server._active_count += 1
    return True


cdef bint counted_out(server) except -1:
    """What asyncio's Server._detach() does, if it is what would run."""
    if _detach is None or not fl_method_is(server, "_detach", _detach):
        return False
    count = server._active_count
    if not count > 0:
        return False                    # its assertion
    count -= 1
    server._active_count = count
    if count == 0 and not server_is_open(server):
        server._wakeup()
    return True


# ------------------------------------------------------------ 3.13 on

cdef object plain_clients(server, str method, object func, str set_method, object set_func):
    """server._clients, while server.<method> is func and the set is a plain
    WeakSet whose <set_method> is set_func; else None. (The caller checks
    that its data is a plain set, reading it once.)"""
    if not _WEAKSET_KNOWN or func is None or not fl_method_is(server, method, func):
        return None
    clients = server._clients
    if type(clients) is not _WeakSet or not fl_method_is(clients, set_method, set_func):
        return None
    return clients


cdef bint client_added(server, transport) except -1:
    """What asyncio's Server._attach(transport) does, if it is what would run."""
    clients = plain_clients(server, "_attach", _attach, "add", _weakset_add)
    if clients is None or not server_is_open(server):     # (its assertion)
        return False
    data = clients.data
    if type(data) is not set:
        return False
    # WeakSet.add():
    if _WEAKSET_DEFERS and clients._pending_removals:
        clients._commit_removals()
    data.add(PyWeakref_NewRef(transport, clients._remove))
    return True


cdef bint client_dropped(server, transport) except -1:
    """What asyncio's Server._detach(transport) does, if it is what would run."""
    clients = plain_clients(server, "_detach", _detach, "discard", _weakset_discard)
    if clients is None or _PyType_Lookup(Py_TYPE(clients), "__len__") != <PyObject*>_weakset_len:
        return False
    data = clients.data
    if type(data) is not set:
        return False
    # WeakSet.discard():
    if _WEAKSET_DEFERS and clients._pending_removals:
        clients._commit_removals()
    data.discard(PyWeakref_NewRef(transport, None))
    # len(server._clients) == 0, as WeakSet.__len__() counts:
    if (len(data) - (len(clients._pending_removals) if _WEAKSET_DEFERS else 0) == 0
            and not server_is_open(server)):
        server._wakeup()
    return True

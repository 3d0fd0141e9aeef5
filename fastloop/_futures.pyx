"""Calling asyncio Future methods from C (see _futures.pxd).

A lookup of fut.set_result finds the type's method unless the instance has
an attribute of that name, and costs more than the call of a method like
done(). asyncio's C Future is an immutable type: its methods are the ones it
was built with. So for a future of exactly that type whose instance
dictionary was never created, the methods are taken from the type once, at
import, and called directly. Anything else (a subclass, the Python Future,
attributes set on the future) goes through the lookup, as Python would.
"""
from cpython.object cimport PyObject, PyTypeObject

from asyncio import Future as _Future

cdef extern from "Python.h":
    bint PyType_HasFeature(PyTypeObject* type, unsigned long feature)
    unsigned long Py_TPFLAGS_IMMUTABLETYPE
    object PyObject_Vectorcall(object callable, PyObject** args, size_t nargsf,
                               PyObject* kwnames)

cdef extern from "_compat.h":
    bint fl_no_instance_dict(object obj)


# None when asyncio runs its Python Future (whose class can be patched).
cdef object _CFuture = (_Future if PyType_HasFeature(<PyTypeObject*>_Future,
                                                      Py_TPFLAGS_IMMUTABLETYPE)
                        else None)
cdef object _DONE = _Future.done
cdef object _CANCELLED = _Future.cancelled
cdef object _SET_RESULT = _Future.set_result


cdef inline bint _plain(object fut) noexcept:
    return type(fut) is _CFuture and fl_no_instance_dict(fut)


cdef inline object _call(object method, object fut, object arg, size_t nargs):
    # method(fut) or method(fut, arg), straight through its vectorcall entry.
    cdef PyObject* args[2]
    args[0] = <PyObject*>fut
    args[1] = <PyObject*>arg
    return PyObject_Vectorcall(method, args, nargs, NULL)


cdef bint future_done(object fut) except -1:
    if _plain(fut):
        return _call(_DONE, fut, None, 1)
    return fut.done()


cdef bint future_cancelled(object fut) except -1:
    if _plain(fut):
        return _call(_CANCELLED, fut, None, 1)
    return fut.cancelled()


cdef int future_set_result(object fut, object result) except -1:
    if _plain(fut):
        _call(_SET_RESULT, fut, result, 2)
    else:
        fut.set_result(result)
    return 0

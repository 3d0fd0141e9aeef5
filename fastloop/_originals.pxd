# The stdlib functions some of fastloop's C paths stand in for. Each such path
# runs only while the function Python would call is the stdlib's own, so
# that a replaced, patched or overriding one is still called: original()
# finds them at import, fl_method_is() checks on each use that a method
# still resolves to one. And the stdlib classes fastloop's C types stand in
# for (stand_in_for()).

from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.type cimport PyType_Modified

cdef extern from "_compat.h":
    # obj.name, looked up as Python would (type, then instance attributes),
    # is func itself: nobody patched, overrode or shadowed it.
    bint fl_method_is(object obj, object name, object func) noexcept

cdef extern from "Python.h":
    ctypedef struct _MroSlot "PyTypeObject":
        PyObject* tp_mro


cdef inline object original(object owner, str name, str module):
    """owner.name (a function, or a property whose getter is checked) as
    `module` defines it; None if something replaced it before fastloop was
    imported (the path that stands in for it then stays off)."""
    value = owner.__dict__.get(name)
    func = value.fget if isinstance(value, property) else value
    if (getattr(func, "__module__", None) == module
            and getattr(func, "__qualname__", None) == f"{owner.__name__}.{name}"):
        return value
    return None


cdef inline int stand_in_for(type cls, tuple classes) except -1:
    """Make C type cls count as a subclass of the stdlib's Python classes
    `classes` (their MRO without object, most derived first), which code
    checks with isinstance(). A C type cannot inherit from them (their
    __slots__ lay the instance out differently), so cls gets their MRO
    without their layout: isinstance()/issubclass() and method lookup walk
    tp_mro, after cls's own classes. Every slot they declare must be an
    attribute of cls's own, so that no slot descriptor of theirs (which
    reads at their layout's offsets) is ever applied to a cls instance;
    __weakref__ only needs cls to take weak references (its descriptor
    finds the list through the instance's own type)."""
    for base in classes:
        for name in base.__dict__.get("__slots__", ()):
            if name == "__weakref__" and cls.__weakrefoffset__:
                continue
            for own in cls.__mro__:
                if name in own.__dict__:
                    break
            else:
                raise TypeError(f"{cls.__name__} must define {name}, a slot of {base}")
    mro = cls.__mro__[:-1] + classes + (object,)
    cdef PyObject* old = (<_MroSlot*>cls).tp_mro
    Py_INCREF(mro)
    (<_MroSlot*>cls).tp_mro = <PyObject*>mro
    Py_XDECREF(old)
    PyType_Modified(cls)
    return 0

# Attributes of plain Python objects read in place (_attrs.h), and the
# check built on it that a method lookup would still find the function a
# C path stands in for. _streams.pyx checks the layouts at import
# (INLINE_ATTRS) and every module that includes _attrs.h copies its verdict
# into its own fl_inline_attrs_on.
from cpython.object cimport PyObject

from fastloop._originals cimport fl_method_is

cdef extern from "_attrs.h":
    ctypedef struct fl_attr:
        PyObject* name                 # interned
        unsigned int version           # 0: nothing recorded yet
    bint fl_inline_attrs_on
    int fl_attr_init(fl_attr* a, const char* name) except -1
    void fl_attr_clear(fl_attr* a)
    PyObject* fl_attr_peek(object obj, fl_attr* a) noexcept
    bint fl_attr_type_value(object obj, fl_attr* a, PyObject** found) noexcept
    int fl_attr_is_method(object obj, fl_attr* a, object func) noexcept
    object fl_getattr(object obj, fl_attr* a)
    # The same, as the C function returns it: NULL with the exception set.
    PyObject* fl_getattr_or_null "fl_getattr"(object obj, fl_attr* a)
    int fl_setattr(object obj, fl_attr* a, object value) except -1
    # obj.<a.name>(arg) as a look-up at the call finds it: func(obj, arg)
    # while that is what it finds (func: what obj's type had under the name,
    # or None). NULL with the exception set if the look-up or call raised.
    PyObject* fl_call_method_at(object obj, fl_attr* a, object func, object arg)

cdef inline bint method_is(object obj, fl_attr* attr, object func) noexcept:
    """obj.<attr.name> is func bound to obj (see fl_method_is): read in place
    where _attrs.h can, else through the interpreter's method lookup."""
    cdef int known = fl_attr_is_method(obj, attr, func)
    if known >= 0:
        return known
    return fl_method_is(obj, <object>attr.name, func)

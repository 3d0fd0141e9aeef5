# The stdlib functions some of fastloop's C paths stand in for. Each such path
# runs only while the function Python would call is the stdlib's own, so
# that a replaced, patched or overriding one is still called: original()
# finds them at import, fl_method_is() checks on each use that a method
# still resolves to one.

cdef extern from "_compat.h":
    # obj.name, looked up as Python would (type, then instance attributes),
    # is func itself: nobody patched, overrode or shadowed it.
    bint fl_method_is(object obj, object name, object func) noexcept


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

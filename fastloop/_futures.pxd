# Calling asyncio Future methods from C: what fut.done(), fut.cancelled() and
# fut.set_result(result) do when Python looks the method up on fut. For a
# plain C Future (asyncio's own type, no attributes set on the instance) the
# method is called as its type holds it, without that lookup.
cdef bint future_done(object fut) except -1
cdef bint future_cancelled(object fut) except -1
cdef int future_set_result(object fut, object result) except -1

/* Argument parsing for the loop's hottest methods: call_soon() and
 * call_soon_threadsafe().
 *
 * asyncio's C Task schedules every step with loop.call_soon(step,
 * context=ctx) through vectorcall. Its "context" keyword string is not
 * interned, which sends Cython's generated parser down its slow path (a
 * string comparison per argument name) on every call. This parser remembers
 * the keyword object it last matched, so the common case is one pointer
 * comparison. The scheduling itself stays in Cython (_core.pyx), reached
 * through the function pointers below.
 */
#ifndef FASTLOOP_FASTCALL_H
#define FASTLOOP_FASTCALL_H

typedef PyObject *(*fl_schedule_impl)(PyObject *loop, PyObject *callback,
                                      PyObject *args, PyObject *context);

static fl_schedule_impl fl_call_soon_impl = NULL;
static fl_schedule_impl fl_call_soon_threadsafe_impl = NULL;
static PyObject *fl_context_kwname = NULL;     /* last "context" key seen */

static int fl_is_context_kwname(PyObject *key) {
    if (key == fl_context_kwname)
        return 1;
    if (PyUnicode_Check(key) && PyUnicode_CompareWithASCIIString(key, "context") == 0) {
        Py_INCREF(key);
        Py_XSETREF(fl_context_kwname, key);
        return 1;
    }
    return 0;
}

/* (callback, *args, context=None) -> impl(loop, callback, args, context) */
static PyObject *fl_parse_and_schedule(const char *method, fl_schedule_impl impl,
                                       PyObject *self, PyObject *const *args,
                                       Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *context = Py_None, *rest, *result;
    Py_ssize_t i;
    if (kwnames != NULL) {
        for (i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, i);
            if (!fl_is_context_kwname(key)) {
                PyErr_Format(PyExc_TypeError,
                             "%s() got an unexpected keyword argument '%S'", method, key);
                return NULL;
            }
            context = args[nargs + i];
        }
    }
    if (nargs < 1) {
        PyErr_Format(PyExc_TypeError,
                     "%s() missing 1 required positional argument: 'callback'", method);
        return NULL;
    }
    rest = PyTuple_New(nargs - 1);
    if (rest == NULL)
        return NULL;
    for (i = 1; i < nargs; i++) {
        Py_INCREF(args[i]);
        PyTuple_SET_ITEM(rest, i - 1, args[i]);
    }
    result = impl(self, args[0], rest, context);
    Py_DECREF(rest);
    return result;
}

static PyObject *fl_call_soon(PyObject *self, PyObject *const *args,
                              Py_ssize_t nargs, PyObject *kwnames) {
    return fl_parse_and_schedule("call_soon", fl_call_soon_impl, self, args, nargs, kwnames);
}

static PyObject *fl_call_soon_threadsafe(PyObject *self, PyObject *const *args,
                                         Py_ssize_t nargs, PyObject *kwnames) {
    return fl_parse_and_schedule("call_soon_threadsafe", fl_call_soon_threadsafe_impl,
                                 self, args, nargs, kwnames);
}

static PyMethodDef fl_scheduling_methods[] = {
    {"call_soon", (PyCFunction)(void (*)(void))fl_call_soon, METH_FASTCALL | METH_KEYWORDS,
     "call_soon($self, callback, /, *args, context=None)\n--\n\n"
     "Arrange for callback(*args) to run on the next loop iteration."},
    {"call_soon_threadsafe", (PyCFunction)(void (*)(void))fl_call_soon_threadsafe,
     METH_FASTCALL | METH_KEYWORDS,
     "call_soon_threadsafe($self, callback, /, *args, context=None)\n--\n\n"
     "Like call_soon(), but safe to call from any thread."},
    {NULL, NULL, 0, NULL}
};

/* Add the methods above to an extension type after it is ready. */
static int fl_install_scheduling_methods(PyTypeObject *type) {
    PyMethodDef *def;
    for (def = fl_scheduling_methods; def->ml_name != NULL; def++) {
        PyObject *descr = PyDescr_NewMethod(type, def);
        if (descr == NULL)
            return -1;
        if (PyDict_SetItemString(type->tp_dict, def->ml_name, descr) < 0) {
            Py_DECREF(descr);
            return -1;
        }
        Py_DECREF(descr);
    }
    PyType_Modified(type);
    return 0;
}

#endif

/* Instance attributes of plain Python objects, read and written from C the
 * way CPython's specializing interpreter does it for Python code.
 *
 * An attribute lookup from C (PyObject_GetAttr) searches the type's MRO for
 * a descriptor, then the instance's attributes by hash: ~160 instructions.
 * Python code doing the same `reader._buffer` runs LOAD_ATTR_INSTANCE_VALUE
 * (3.11-3.13) once specialized: if the type's version tag is the one it
 * recorded, the value is read from a fixed slot of the instance's inline
 * values, ~10 instructions. fastloop._streams reads and writes a handful of
 * asyncio.StreamReader attributes per read, and does it that way here:
 *
 * - fl_attr_resolve() records, for one type version, where the name's value
 *   lives: its index in the type's shared keys (every instance without a
 *   __dict__ of its own keeps its attributes in a values array in that
 *   order), and what the type itself has under the name. A data descriptor
 *   there (a property...) wins over the instance and is never bypassed.
 * - A type's version tag changes whenever it or a base is modified
 *   (assigning a method, changing __getattribute__...), and is unique to it,
 *   so one comparison tells that the record still holds.
 * - The instance side is checked on every access, as the interpreter does:
 *   the values array must be in use (no __dict__ took it over) and hold the
 *   name. Anything else takes the ordinary lookup.
 *
 * The layouts below mirror CPython's internal headers for 3.11, 3.12 and
 * 3.13 (without free threading). fastloop._streams checks them against the
 * running interpreter at import (_inline_attrs_work) and leaves them unused
 * (every access the ordinary one) if anything disagrees; other versions
 * always take the ordinary lookup.
 */
#ifndef FASTLOOP_ATTRS_H
#define FASTLOOP_ATTRS_H

#include <Python.h>
#include <stdint.h>

#include "_compat.h"     /* fl_method_is(), fl_call_one(), fl_call_method_one() */

/* The per-access checks are inlined into their callers; resolving a record
 * (once per type version) is not. */
#if defined(__GNUC__) || defined(__clang__)
#define FL_HOT_INLINE static inline __attribute__((always_inline))
#define FL_COLD static __attribute__((noinline, cold, unused))
#else
#define FL_HOT_INLINE static inline
#define FL_COLD static
#endif

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000 && !defined(Py_GIL_DISABLED)
#define FL_INLINE_ATTRS 1
#else
#define FL_INLINE_ATTRS 0
#endif

typedef struct {
    PyObject *name;          /* interned */
    unsigned int version;    /* tp_version_tag the record is for; 0: none */
    Py_ssize_t slot;         /* index in that type's shared keys; -1: none */
    Py_ssize_t nentries;     /* names the shared keys held when resolved */
    PyObject *type_value;    /* borrowed: what the type has under the name */
    int usable;              /* instances may be read/written in place */
} fl_attr;

static int fl_inline_attrs_on = 0;   /* set once the layouts are checked */

static inline int fl_attr_init(fl_attr *a, const char *name) {
    a->name = PyUnicode_InternFromString(name);
    a->version = 0;
    return a->name == NULL ? -1 : 0;
}

static inline void fl_attr_clear(fl_attr *a) {
    Py_CLEAR(a->name);
    a->version = 0;
}

#if FL_INLINE_ATTRS

/* struct _dictkeysobject (pycore_dict.h), the same in 3.11-3.13. */
typedef struct {
    Py_ssize_t dk_refcnt;
    uint8_t dk_log2_size;
    uint8_t dk_log2_index_bytes;
    uint8_t dk_kind;
    uint32_t dk_version;
    Py_ssize_t dk_usable;
    Py_ssize_t dk_nentries;
    char dk_indices[];
} fl_keys;
typedef struct { PyObject *key; PyObject *value; } fl_keys_entry;
#define FL_DICT_KEYS_SPLIT 2

#if PY_VERSION_HEX >= 0x030D0000
/* 3.13: the values follow the object header; `valid` drops to 0 when a
 * __dict__ stops sharing them. */
typedef struct {
    uint8_t capacity, size, embedded, valid;
    PyObject *values[1];
} fl_inline_values_layout;
#endif

static inline fl_keys *fl_shared_keys(PyTypeObject *tp) {
    return (fl_keys *)((PyHeapTypeObject *)tp)->ht_cached_keys;
}

/* The instance's values array, or NULL while a __dict__ holds its
 * attributes instead. */
static inline PyObject **fl_values(PyObject *obj) {
#if PY_VERSION_HEX >= 0x030D0000
    fl_inline_values_layout *v = (fl_inline_values_layout *)((char *)obj + sizeof(PyObject));
    return v->valid ? v->values : NULL;
#elif PY_VERSION_HEX >= 0x030C0000
    char *tagged = *((char **)obj - 3);       /* values - 1, or a dict */
    return ((uintptr_t)tagged & 1) ? (PyObject **)(tagged + 1) : NULL;
#else
    return *((PyObject ***)obj - 4);          /* NULL once a dict is made */
#endif
}

/* The values array, when a write may go there: the one the interpreter's
 * STORE_ATTR_INSTANCE_VALUE would use (3.13: no __dict__ object at all). */
static inline PyObject **fl_writable_values(PyObject *obj) {
#if PY_VERSION_HEX >= 0x030D0000
    if (*((PyObject **)obj - 3) != NULL)
        return NULL;
#endif
    return fl_values(obj);
}

/* The type can be read in place at all: generic attribute access, instance
 * attributes in shared-key values arrays. */
static inline int fl_type_has_values(PyTypeObject *tp) {
    fl_keys *keys;
    if (tp->tp_getattro != PyObject_GenericGetAttr || tp->tp_setattro != PyObject_GenericSetAttr)
        return 0;
    if (!PyType_HasFeature(tp, Py_TPFLAGS_HEAPTYPE) || !PyType_HasFeature(tp, Py_TPFLAGS_MANAGED_DICT))
        return 0;
#if PY_VERSION_HEX >= 0x030D0000
    if (!PyType_HasFeature(tp, Py_TPFLAGS_INLINE_VALUES) || tp->tp_basicsize != sizeof(PyObject))
        return 0;
#endif
    keys = fl_shared_keys(tp);
    return keys != NULL && keys->dk_kind == FL_DICT_KEYS_SPLIT;
}

static inline Py_ssize_t fl_keys_index(fl_keys *keys, PyObject *name) {
    fl_keys_entry *entries = (fl_keys_entry *)(keys->dk_indices + ((size_t)1 << keys->dk_log2_index_bytes));
    Py_ssize_t i;
    for (i = 0; i < keys->dk_nentries; i++)
        if (entries[i].key == name)
            return i;
    return -1;
}

/* Record where obj's type keeps a->name (see the top of this file). */
FL_COLD void fl_attr_resolve(PyObject *obj, fl_attr *a) {
    PyTypeObject *tp = Py_TYPE(obj);
    PyObject *descr;
    a->version = 0;
    a->usable = 0;
    if (!fl_inline_attrs_on || !fl_type_has_values(tp))
        return;
    descr = _PyType_Lookup(tp, a->name);         /* gives tp a version tag */
    if (tp->tp_version_tag == 0)                 /* none to be had */
        return;
    a->type_value = descr;
    a->slot = fl_keys_index(fl_shared_keys(tp), a->name);
    a->nentries = fl_shared_keys(tp)->dk_nentries;
    /* A data descriptor on the type would take precedence over the value. */
    a->usable = descr == NULL || Py_TYPE(descr)->tp_descr_set == NULL;
    a->version = tp->tp_version_tag;
}

FL_HOT_INLINE int fl_attr_current(PyObject *obj, fl_attr *a) {
    if (a->version == 0 || Py_TYPE(obj)->tp_version_tag != a->version)
        fl_attr_resolve(obj, a);
    return a->version != 0;
}

/* Borrowed: obj's value for a->name straight from its values array, or NULL
 * when that does not apply (not an error: take the ordinary lookup). */
static inline PyObject *fl_attr_peek(PyObject *obj, fl_attr *a) {
    PyObject **values;
    if (!fl_attr_current(obj, a) || !a->usable || a->slot < 0)
        return NULL;
    values = fl_values(obj);
    return values != NULL ? values[a->slot] : NULL;
}

/* What obj's type has under a->name: 1 with *found set (borrowed, may be
 * NULL), or 0 when not known here (ask _PyType_Lookup). */
static inline int fl_attr_type_value(PyObject *obj, fl_attr *a, PyObject **found) {
    if (!fl_attr_current(obj, a))
        return 0;
    *found = a->type_value;
    return 1;
}

#else  /* !FL_INLINE_ATTRS */

static inline int fl_attr_type_value(PyObject *obj, fl_attr *a, PyObject **found) {
    (void)obj; (void)a; (void)found;
    return 0;
}

static inline PyObject *fl_attr_peek(PyObject *obj, fl_attr *a) {
    (void)obj; (void)a;
    return NULL;
}

#endif

/* obj.<name>: new reference, NULL with the exception set. */
static inline PyObject *fl_getattr(PyObject *obj, fl_attr *a) {
    PyObject *v = fl_attr_peek(obj, a);
    if (v != NULL) {
        Py_INCREF(v);
        return v;
    }
    return PyObject_GetAttr(obj, a->name);
}

/* obj.<name> = value: 0, or -1 with the exception set. Only an existing
 * value is replaced in place (a new one changes the attributes' order). */
static inline int fl_setattr(PyObject *obj, fl_attr *a, PyObject *value) {
#if FL_INLINE_ATTRS
    PyObject **values, *old;
    if (fl_attr_current(obj, a) && a->usable && a->slot >= 0
            && (values = fl_writable_values(obj)) != NULL
            && (old = values[a->slot]) != NULL) {
        Py_INCREF(value);
        values[a->slot] = value;
        Py_DECREF(old);
        return 0;
    }
#endif
    return PyObject_SetAttr(obj, a->name, value);
}

/* obj has no instance attribute a->name and its type has func under it, so
 * obj.<name> is func bound to obj: 1; 0 when not, -1 when not known here
 * (ask the ordinary lookup). */
FL_HOT_INLINE int fl_attr_is_method(PyObject *obj, fl_attr *a, PyObject *func) {
#if FL_INLINE_ATTRS
    PyObject **values;
    if (!fl_attr_current(obj, a))
        return -1;
    if (a->slot < 0 && fl_shared_keys(Py_TYPE(obj))->dk_nentries != a->nentries)
        fl_attr_resolve(obj, a);          /* the name may have been added */
    if (a->version == 0 || (values = fl_values(obj)) == NULL)
        return -1;
    if (a->slot >= 0 && values[a->slot] != NULL)
        return 0;                            /* shadowed by the instance */
    return a->type_value == func;
#else
    (void)obj; (void)a; (void)func;
    return -1;
#endif
}

/* obj.<a->name>(arg), looked up as Python looks it up at each call:
 * func(obj, arg) while obj's type still has func (a plain method: a
 * function or method descriptor) under the name and obj has no attribute
 * of its own shadowing it; else through the ordinary look-up. func may be
 * Py_None (always the look-up). NULL with the exception set if the look-up
 * or the call raised. Forced inline: it runs once per read. */
FL_COLD PyObject *fl_call_looked_up(PyObject *obj, PyObject *name, PyObject *arg);

FL_HOT_INLINE PyObject *fl_call_method_at(PyObject *obj, fl_attr *a, PyObject *func,
                                          PyObject *arg) {
    int known;
    if (func != Py_None) {
        known = fl_attr_is_method(obj, a, func);
        if (known < 0)
            known = fl_method_is(obj, a->name, func);
        if (known)
            return fl_call_method_one(func, obj, arg);
    }
    return fl_call_looked_up(obj, a->name, arg);
}

FL_COLD PyObject *fl_call_looked_up(PyObject *obj, PyObject *name, PyObject *arg) {
    PyObject *result, *method = PyObject_GetAttr(obj, name);
    if (method == NULL)
        return NULL;
    result = fl_call_one(method, arg);
    Py_DECREF(method);
    return result;
}

#endif

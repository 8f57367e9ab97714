/* The rank's op path for the common case, in C (issue 18).
 *
 * A collective called with one MLX array on the world group, and mx.eval of
 * plain arrays, are observed here instead of in Python: the op's notes (call
 * site, shape, dtype, weak references, clock readings) go into a flat buffer,
 * and checked mode's metadata exchange is posted, completed and compared with
 * MPI's own calls.  What it makes per op is a weak reference or two and,
 * checked, the exchange's two small buffers: no record, no dict entry.
 *
 * The notes become the op log's records later, in one batch, when Python
 * next needs them (mxnb.rank.fastpath.replay): a report, the cell's end, an
 * op or an evaluation this file does not take.  A full buffer hands over only
 * what cannot wait (take: most of a loop's notes are counted, not handed, and
 * those the trace will keep wait in ``later``).  Every case
 * this file is not sure of goes to the Python wrapper it wraps, after the
 * notes so far are handed over, so the op log always sees ops in order.
 */
#define PY_SSIZE_T_CLEAN
#define MPI4PY_LIMITED_API 1
#include <Python.h>
#include <frameobject.h>
#include <limits.h>
#include <string.h>
#include <time.h>
#include "mpi4py/mpi4py.h"

#ifndef SOURCE_DIGEST
#define SOURCE_DIGEST "" /* set by mxnb.rank.fastpath.build: a stale build is not loaded */
#endif

/* Its parts, each included once, in the order each needs the ones before
 * (mxnb.rank.fastpath.PARTS): one translation unit, so they share their static
 * state and the compiler inlines across them. */
#include "_fastpath_notes.h"
#include "_fastpath_calls.h"
#include "_fastpath_take.h"

/* -- the wrapper type ------------------------------------------------------ */

static PyObject *wrapper_getattro(Wrapper *self, PyObject *name)
{
    /* what functools.wraps gave the Python wrapper: name, doc, __mxnb_original__ */
    if (PyUnicode_Check(name) && PyUnicode_READ_CHAR(name, 0) == '_' &&
        PyUnicode_CompareWithASCIIString(name, "__class__") != 0)
        return PyObject_GetAttr(self->fallback, name);
    PyObject *v = PyObject_GenericGetAttr((PyObject *)self, name);
    if (v == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        return PyObject_GetAttr(self->fallback, name);
    }
    return v;
}

static PyObject *wrapper_repr(Wrapper *self) { return PyObject_Repr(self->fallback); }

static int wrapper_traverse(Wrapper *self, visitproc visit, void *arg)
{
    Py_VISIT(self->real);
    Py_VISIT(self->fallback);
    return 0;
}

static int wrapper_clear(Wrapper *self)
{
    Py_CLEAR(self->real);
    Py_CLEAR(self->fallback);
    return 0;
}

static void wrapper_dealloc(Wrapper *self)
{
    PyObject_GC_UnTrack(self);
    wrapper_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject WrapperType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mxnb.rank._fastpath.Wrapper",
    .tp_basicsize = sizeof(Wrapper),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Wrapper, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_getattro = (getattrofunc)wrapper_getattro,
    .tp_repr = (reprfunc)wrapper_repr,
    .tp_traverse = (traverseproc)wrapper_traverse,
    .tp_clear = (inquiry)wrapper_clear,
    .tp_dealloc = (destructor)wrapper_dealloc,
    .tp_doc = "An MLX function observed by mxnb's op path in C (mxnb.rank.fastpath).",
};

static PyObject *make_wrapper(vectorcallfunc call, int op, int meta, int same_shape,
                              PyObject *real, PyObject *fallback)
{
    Wrapper *w = PyObject_GC_New(Wrapper, &WrapperType);
    if (w == NULL)
        return NULL;
    w->vectorcall = call;
    w->op = op;
    w->meta = meta;
    w->same_shape = same_shape;
    w->real = Py_NewRef(real);
    w->fallback = Py_NewRef(fallback);
    PyObject_GC_Track(w);
    return (PyObject *)w;
}

/* -- the module's functions ------------------------------------------------ */

static PyObject *wrap_op(PyObject *m, PyObject *args)
{
    int op, meta, same_shape;
    PyObject *real, *fallback;
    if (!PyArg_ParseTuple(args, "iipOO", &op, &meta, &same_shape, &real, &fallback))
        return NULL;
    return make_wrapper((vectorcallfunc)op_call, op, meta, same_shape, real, fallback);
}

static PyObject *wrap_eval(PyObject *m, PyObject *args)
{
    PyObject *real, *fallback;
    if (!PyArg_ParseTuple(args, "OO", &real, &fallback))
        return NULL;
    return make_wrapper((vectorcallfunc)eval_call, -1, -1, 0, real, fallback);
}

static PyObject *configure(PyObject *m, PyObject *args, PyObject *kw)
{
    static char *names[] = {"oplog", "cells", "array", "dtypes", "clock", "sync", "after",
                            "groups", "world_label", "stack", "sizes", "compiled_live",
                            "pending", "pairing_open", "group_seq", "timer_pending", "size",
                            NULL};
    PyObject *o[16];
    Py_ssize_t size;
    if (!PyArg_ParseTupleAndKeywords(
            args, kw, "$OOOO!OOOOUO!O!O!O!O!O!O!n", names, &o[0], &o[1], &o[2], &PyDict_Type,
            &o[3], &o[4], &o[5], &o[6], &o[7], &o[8], &PyList_Type, &o[9], &PyList_Type, &o[10],
            &PyDict_Type, &o[11], &PyDict_Type, &o[12], &PyDict_Type, &o[13], &PyDict_Type,
            &o[14], &PyDict_Type, &o[15], &size))
        return NULL;
    PyObject **slots[] = {&S.oplog,  &S.cells,         &S.array,   &S.dtypes,
                          &S.clock,  &S.sync,          &S.after,   &S.groups,
                          &S.world_label, &S.stack,    &S.sizes,   &S.compiled_live,
                          &S.pending, &S.pairing_open, &S.group_seq, &S.timer_pending};
    for (int i = 0; i < 16; i++)
        Py_XSETREF(*slots[i], Py_NewRef(o[i]));
    S.size = size;
    Py_CLEAR(last_dtype); /* dtypes may have changed */
    Py_CLEAR(last_code);
    Py_CLEAR(last_cell);
    Py_CLEAR(last_info);
    Py_XSETREF(S.world_group, PyObject_GetAttr(S.groups, s_world_group));
    if (S.world_group == NULL)
        return NULL;
    Py_XSETREF(S.oplog_dict, PyObject_GenericGetDict(S.oplog, NULL));
    if (S.oplog_dict == NULL)
        return NULL;
    S.ready = 1;
    Py_RETURN_NONE;
}

/* The settings the C path acts on, pushed by Python whenever one changes. */
static PyObject *update(PyObject *m, PyObject *args, PyObject *kw)
{
    static char *names[] = {"observed", "bare", "checked", "recording", "keep", "world", NULL};
    int observed, bare, checked, recording, keep;
    PyObject *world;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ppppp$O", names, &observed, &bare, &checked,
                                     &recording, &keep, &world))
        return NULL;
    S.observed = observed;
    S.bare = bare;
    S.checked = checked;
    S.recording = recording;
    S.keep = keep;
    if (world != S.world) { /* fresh communicators (OpLog.reset_checks) */
        Py_XSETREF(S.world, Py_NewRef(world));
        Py_CLEAR(S.comm_obj);
        S.comm = NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *get_seq(PyObject *m, PyObject *unused) { return PyLong_FromLongLong(S.seq); }

static PyObject *set_seq(PyObject *m, PyObject *value)
{
    long long v = PyLong_AsLongLong(value);
    if (v == -1 && PyErr_Occurred())
        return NULL;
    S.seq = v;
    Py_RETURN_NONE;
}

static PyObject *enable(PyObject *m, PyObject *on)
{
    int t = PyObject_IsTrue(on);
    if (t < 0)
        return NULL;
    S.ready = t && S.sync != NULL; /* configured */
    Py_RETURN_NONE;
}

static PyObject *counts(PyObject *m, PyObject *unused)
{
    return Py_BuildValue("(lllllll)", stats[0], stats[1], stats[2], stats[3], stats[4],
                         stats[5], stats[6]);
}

/* What the C++ reads give for one array, for Python to hold against its own reads:
 * (MLX's number of its dtype, its shape), or None where Python would read it. */
static PyObject *mlx_read(PyObject *m, PyObject *a)
{
    int dtype, nd, dims[MAX_NDIM];
    if (read_mlx(a, &dtype, &nd, dims) != 0)
        Py_RETURN_NONE;
    return Py_BuildValue("(iN)", dtype, shape_tuple(nd, dims));
}

/* use_reader({MLX's number: (name, code)}) turns the reads on; None turns them off. */
static PyObject *use_reader(PyObject *m, PyObject *table)
{
    reader_on = 0;
    for (int i = 0; i < DTYPE_VALS; i++)
        Py_CLEAR(by_dtype[i]);
    if (table == Py_None)
        Py_RETURN_NONE;
    if (!PyDict_Check(table))
        return PyErr_Format(PyExc_TypeError, "use_reader takes a dict or None");
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(table, &pos, &key, &value)) {
        long v = PyLong_AsLong(key);
        if (v < 0 || v >= DTYPE_VALS || !PyTuple_Check(value) || PyTuple_GET_SIZE(value) != 2) {
            for (int i = 0; i < DTYPE_VALS; i++)
                Py_CLEAR(by_dtype[i]);
            PyErr_Clear();
            return PyErr_Format(PyExc_ValueError, "use_reader: %R is not number -> (name, code)",
                                key);
        }
        Py_XSETREF(by_dtype[v], Py_NewRef(value));
    }
    reader_on = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"counts", counts, METH_NOARGS,
     "(ops taken, ops left to Python, evaluations taken, evaluations left, ops handed over "
     "without a record, ops a full buffer kept back, full buffers whose notes waited): for "
     "tests"},
    {"configure", (PyCFunction)(void (*)(void))configure, METH_VARARGS | METH_KEYWORDS,
     "What the op path reads: the rank's hooks, op log and the rest."},
    {"update", (PyCFunction)(void (*)(void))update, METH_VARARGS | METH_KEYWORDS,
     "update(observed, bare, checked, recording, keep, *, world): the settings it acts on."},
    {"seq", get_seq, METH_NOARGS, "The rank's op counter (mxnb.rank.hooks.Hooks.seq)."},
    {"set_seq", set_seq, METH_O, "Set the rank's op counter."},
    {"enable", enable, METH_O, "enable(False): every call goes to Python's wrappers."},
    {"wrap_op", wrap_op, METH_VARARGS,
     "wrap_op(op, meta, same_shape, real, fallback) -> callable"},
    {"wrap_eval", wrap_eval, METH_VARARGS, "wrap_eval(real, fallback) -> callable"},
    {"mlx_read", mlx_read, METH_O,
     "mlx_read(array) -> (MLX's number of its dtype, shape) read in C++, or None"},
    {"use_reader", use_reader, METH_O,
     "use_reader({number: (name, code)}): ops read dtype and shape in C++; None: off"},
    {"take", take, METH_VARARGS,
     "take(keep, room, hold) -> (notes, running evaluation or None, ops left out, recorded "
     "ones); hold: a full buffer keeps the op log's last ops back, and the notes before "
     "them if their replay can wait"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastpath", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    if (import_mpi4py() < 0)
        return NULL;
    if (PyType_Ready(&WrapperType) < 0)
        return NULL;
    s_found = PyUnicode_InternFromString("found");
    s_dtype = PyUnicode_InternFromString("dtype");
    s_shape = PyUnicode_InternFromString("shape");
    s_comm = PyUnicode_InternFromString("_comm");
    s_in_eval = PyUnicode_InternFromString("in_eval");
    s_live = PyUnicode_InternFromString("live");
    s_ipy = PyUnicode_InternFromString("<ipython-input");
    s_group = PyUnicode_InternFromString("group");
    s_world_group = PyUnicode_InternFromString("world_group");
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && (PyModule_AddStringConstant(m, "SOURCE_DIGEST", SOURCE_DIGEST) < 0 ||
                      PyModule_AddIntConstant(m, "DTYPE_VALS", DTYPE_VALS) < 0))
        Py_CLEAR(m);
    return m;
}

/* The least observer of raw_mpi.least_observer, compiled (issue 18).
 *
 * The same notes per op and per evaluation as the Python one (the caller's
 * code object and instruction, the input's dtype and shape, a weak handle on
 * the result; two clock readings and which noted results an evaluation was
 * handed), kept in fixed C arrays instead of Python tuples and lists.  It
 * measures how much of the Python observer's cost is Python: built and loaded
 * by the bench only (bench/compiled.py), never part of mxnb.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>
#include <time.h>

#define NOTES 4096 /* bounded, as mxnb's own log is */
#define LOOK_BACK 8

typedef struct {
    PyObject *code;   /* strong references, dropped when the notes wrap */
    PyObject *shape;
    PyObject *dtype;
    PyObject *handle; /* weak reference to the op's result */
    int lasti;
} OpNote;

typedef struct {
    double start, end;
    int noted; /* how many of the evaluated arrays were noted ops' results */
} EvalNote;

static OpNote ops[NOTES];
static int n_ops;
static EvalNote evals[NOTES];
static int n_evals;
static PyObject *wrapped_op, *wrapped_eval, *name_dtype, *name_shape;

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void forget_ops(void)
{
    for (int i = 0; i < n_ops; i++) {
        Py_CLEAR(ops[i].code);
        Py_CLEAR(ops[i].shape);
        Py_CLEAR(ops[i].dtype);
        Py_CLEAR(ops[i].handle);
    }
    n_ops = 0;
}

static PyObject *observed_op(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "the op takes its array first");
        return NULL;
    }
    PyFrameObject *caller = PyEval_GetFrame(); /* borrowed */
    PyObject *dtype = PyObject_GetAttr(args[0], name_dtype);
    if (dtype == NULL)
        return NULL;
    PyObject *out = PyObject_Vectorcall(wrapped_op, args, (size_t)nargs, kwnames);
    if (out == NULL) {
        Py_DECREF(dtype);
        return NULL;
    }
    PyObject *handle = PyWeakref_NewRef(out, NULL);
    PyObject *shape = PyObject_GetAttr(args[0], name_shape);
    if (handle == NULL || shape == NULL)
        PyErr_Clear();
    if (n_ops == NOTES)
        forget_ops();
    OpNote *note = &ops[n_ops++];
    note->code = caller ? (PyObject *)PyFrame_GetCode(caller) : NULL;
    note->lasti = caller ? PyFrame_GetLasti(caller) : -1;
    note->shape = shape;
    note->dtype = dtype;
    note->handle = handle;
    return out;
}

static PyObject *observed_eval(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames)
{
    double start = seconds();
    PyObject *done = PyObject_Vectorcall(wrapped_eval, args, (size_t)nargs, kwnames);
    if (done == NULL)
        return NULL;
    double end = seconds();
    int noted = 0;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        for (int k = n_ops - 1; k >= 0 && k >= n_ops - LOOK_BACK; k--) {
            if (ops[k].handle && PyWeakref_GetObject(ops[k].handle) == args[i]) {
                noted++;
                break;
            }
        }
    }
    if (n_evals == NOTES)
        n_evals = 0;
    evals[n_evals++] = (EvalNote){start, end, noted};
    return done;
}

static PyObject *observe(PyObject *module, PyObject *args)
{
    PyObject *op, *evaluate;
    if (!PyArg_ParseTuple(args, "OO", &op, &evaluate))
        return NULL;
    Py_XSETREF(wrapped_op, Py_NewRef(op));
    Py_XSETREF(wrapped_eval, Py_NewRef(evaluate));
    return Py_BuildValue("(NN)", PyObject_GetAttrString(module, "op"),
                         PyObject_GetAttrString(module, "evaluate"));
}

static PyMethodDef methods[] = {
    {"op", (PyCFunction)(void (*)(void))observed_op, METH_FASTCALL | METH_KEYWORDS,
     "The wrapped op, noted."},
    {"evaluate", (PyCFunction)(void (*)(void))observed_eval, METH_FASTCALL | METH_KEYWORDS,
     "The wrapped evaluation, timed."},
    {"observe", observe, METH_VARARGS, "observe(op, evaluate) -> (op, evaluate), wrapped."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "least_observer", NULL, -1, methods};

PyMODINIT_FUNC PyInit_least_observer(void)
{
    name_dtype = PyUnicode_InternFromString("dtype");
    name_shape = PyUnicode_InternFromString("shape");
    return PyModule_Create(&module);
}

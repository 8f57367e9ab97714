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

#define CAP 16384 /* notes (ops and evaluations) before they are handed over: ~4 MB */
#define TABLE (4 * CAP)   /* result address -> note, open addressing */
#define MAX_GIVEN 8       /* arrays of an evaluation taken here */
#define MAX_NDIM 10
#define WIDTH (4 + MAX_NDIM)
#define META_BYTES (8 * WIDTH)
/* then Python waits, interruptibly.  Longer than Python's own spin (mxnb.rank.check.SPIN_S,
 * 200 us): handing an evaluation over makes records of the op log's last ops, and at 200 us
 * a rank's batch or a preemption on the other rank sent a loop's evaluations there 5-18
 * times in 20,000 (1 KB, 2 ranks: default 2.2x -> 1.9x).  The GIL's switch interval is
 * 5 ms, so a probe or Ctrl-C waits no longer than it may anyway. */
#define SPIN_S 2e-3

enum { OP = 1, EVAL = 2, EVALS = 3 /* evaluations of nothing handed over, counted */ };
enum { CHECK_NONE = 0, CHECK_OPEN = 1, CHECK_OK = 2 };
#define SAME (-2) /* a result's shape: its input's */

typedef struct {
    int kind;
    /* an op */
    long long seq;
    int op;              /* the op's number, as Python gave it (mxnb.rank.fastpath.FAST_OPS) */
    PyObject *mirror;    /* the world's GroupInfo */
    PyObject *code;
    int lasti;
    PyObject *cell;
    PyObject *dtype;     /* its name */
    int ndim, out_ndim;  /* out_ndim: -1, no result shape; SAME, the input's */
    int dims[MAX_NDIM], out_dims[MAX_NDIM]; /* no tuples kept: each would be the collector's */
    PyObject *in_ref;    /* recorded only */
    PyObject *out_ref;   /* NULL: the result is not weakly referenceable */
    void *out_id;
    double t0, t1;
    int recorded, failed, check, handed;
    PyObject *sent, *recv;
    MPI_Request req;
    /* an evaluation */
    double c0, e0, e1;
    int raised, n_arrays, checked, n_given;
    int given[MAX_GIVEN];
} Note;

static Note notes[CAP];
static int n_notes;
static int table[TABLE]; /* note index + 1; 0: empty */
static int filled[CAP];  /* the slots of table in use: take() clears those alone */
static int n_filled;
static int open_notes[CAP]; /* ops not yet handed to an evaluation */
static int n_open;
static unsigned long generation; /* notes handed over so far: a take() while a call runs */

/* A full buffer's notes whose replay can wait (take): those the recorder makes
 * the trace's first records of, and their evaluations.  They wait here, out of the
 * loop that made them, and are handed over first when Python next looks (a take
 * without ``hold``).  Their evaluations name ops by index here; EVALS notes count
 * evaluations of nothing handed over (n_arrays). */
static Note later[CAP];
static int n_later;
static int later_kept; /* records the recorder keeps of them */
#define LATER_LIVE 64
static int later_live[LATER_LIVE]; /* its ops whose results lived when they came */
static int n_later_live;

/* the running evaluation taken here */
static int in_eval;
static int eval_taken; /* its notes were handed over while it ran */
static Note cur;
static PyFrameObject *cur_frame; /* borrowed: the caller waits in it */

static struct {
    int ready;
    /* pushed by Python whenever they change (mxnb.rank.fastpath.FastPath.update) */
    int observed;   /* the op log is the hooks' logger (else --bare, or uninstalled) */
    int bare, checked, recording, keep;
    long long seq;  /* the rank's op counter (mxnb.rank.hooks.Hooks.seq) */
    PyObject *world;     /* the world's GroupInfo */
    MPI_Comm *comm;      /* its mirror communicator, once Python made it (NULL: not yet) */
    PyObject *comm_obj;
    PyObject *cell_files; /* IPython's map of cell files, once found */
    PyObject *timer_pending; /* the recorder's untimed ops (cleared, never replaced) */
    PyObject *oplog, *cells, *array, *dtypes, *clock, *sync, *after;
    PyObject *oplog_dict; /* the op log's attributes: in_eval and live, read directly */
    PyObject *groups, *world_label, *world_group;
    /* containers that live as long as the rank (cleared, never replaced): read directly */
    PyObject *stack, *sizes, *compiled_live, *pending, *pairing_open, *group_seq;
    Py_ssize_t size;
} S;

static PyObject *s_found, *s_dtype, *s_shape, *s_comm, *s_in_eval, *s_live, *s_ipy, *s_group,
    *s_world_group;

/* -- small helpers -------------------------------------------------------- */

static double mono(void);

/* time.perf_counter's reading: read directly where Python says it is CLOCK_MONOTONIC
 * (``clock`` None), which spares a Python call and a float per reading */
static double now(void)
{
    if (S.clock == Py_None)
        return mono();
    PyObject *t = PyObject_CallNoArgs(S.clock);
    if (t == NULL) {
        PyErr_Clear();
        return 0.0;
    }
    double v = PyFloat_AsDouble(t);
    Py_DECREF(t);
    return v;
}

static double wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void clear_note(Note *n)
{
    Py_CLEAR(n->mirror);
    Py_CLEAR(n->code);
    Py_CLEAR(n->cell);
    Py_CLEAR(n->dtype);
    Py_CLEAR(n->in_ref);
    Py_CLEAR(n->out_ref);
    Py_CLEAR(n->sent);
    Py_CLEAR(n->recv);
}

/* An op's result is still alive. */
static int lives(const Note *n)
{
    return n->out_ref != NULL && PyWeakref_GetObject(n->out_ref) != Py_None;
}

/* An op handed to an evaluation here, its check passed, no error: nothing of it is
 * left for Python to complete. */
static int settled(const Note *n)
{
    return n->handed && !n->failed && n->check != CHECK_OPEN;
}

/* A live object has one address, so a newer result at an address replaces
 * the older one there: that one has died.  Lookups stay one probe or two. */
static void table_put(void *id, int index)
{
    size_t h = ((size_t)id >> 4) % TABLE;
    while (table[h] != 0 && notes[table[h] - 1].out_id != id)
        h = (h + 1) % TABLE;
    if (table[h] == 0)
        filled[n_filled++] = (int)h;
    table[h] = index + 1;
}

/* the note whose result is ``a`` itself, else -1 */
static int table_find(PyObject *a)
{
    size_t h = ((size_t)a >> 4) % TABLE;
    while (table[h] != 0) {
        Note *n = &notes[table[h] - 1];
        if (n->out_id == (void *)a)
            return n->out_ref && PyWeakref_GetObject(n->out_ref) == a ? table[h] - 1 : -1;
        h = (h + 1) % TABLE;
    }
    return -1;
}

/* A full buffer: Python takes the notes (mxnb.rank.fastpath.FastPath.sync), but for
 * the op log's last ops, which stay here until a later op pushes them out */
static int sync_now(void)
{
    if (n_notes == 0 && !(in_eval && !eval_taken))
        return 0;
    PyObject *r = PyObject_CallOneArg(S.sync, Py_True);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* The (name, code) of an MLX dtype, or NULL (an error set or not).  MLX makes a new
 * Dtype object per read, and a dict lookup by it calls its __hash__ and __eq__
 * through nanobind: one __eq__ against the last dtype seen costs half of that. */
static PyObject *last_dtype, *last_info;

static PyObject *dtype_info(PyObject *dtype)
{
    if (last_dtype != NULL && PyObject_RichCompareBool(dtype, last_dtype, Py_EQ) == 1)
        return last_info;
    PyErr_Clear();
    PyObject *info = PyDict_GetItemWithError(S.dtypes, dtype); /* borrowed */
    if (info != NULL) {
        Py_XSETREF(last_dtype, Py_NewRef(dtype));
        Py_XSETREF(last_info, Py_NewRef(info));
    }
    return info;
}

/* A weak reference, left out of the collector's passes: one without a callback holds
 * nothing, so it is never part of a cycle, and a loop's notes hold thousands (tracked,
 * they made the collector run about twice as often). */
static PyObject *weak(PyObject *o)
{
    PyObject *ref = PyWeakref_NewRef(o, NULL);
    if (ref != NULL && PyWeakref_CheckRefExact(ref) &&
        ((PyWeakReference *)ref)->wr_callback == NULL && PyObject_GC_IsTracked(ref))
        PyObject_GC_UnTrack(ref);
    return ref;
}

/* A shape's dimensions into ``dims``: its length, or -1 (not a tuple of ints MLX takes). */
static int dims_of(PyObject *shape, int *dims)
{
    if (shape == NULL || !PyTuple_CheckExact(shape) || PyTuple_GET_SIZE(shape) > MAX_NDIM)
        return -1;
    int nd = (int)PyTuple_GET_SIZE(shape);
    for (int i = 0; i < nd; i++) {
        long d = PyLong_AsLong(PyTuple_GET_ITEM(shape, i));
        if (d < 0 || d > INT_MAX)
            return -1;
        dims[i] = (int)d;
    }
    return nd;
}

static PyObject *shape_tuple(int nd, const int *dims)
{
    PyObject *t = PyTuple_New(nd);
    for (int i = 0; t != NULL && i < nd; i++) {
        PyObject *d = PyLong_FromLong(dims[i]);
        if (d == NULL)
            Py_CLEAR(t);
        else
            PyTuple_SET_ITEM(t, i, d);
    }
    return t;
}

/* -- the call site, as mxnb.rank.hooks.raw_site finds it ---------------- */

/* the code whose file was last found a cell's, and that cell: a loop's ops share one */
static PyObject *last_code, *last_cell;

static int site_of(PyObject *cells, PyObject **code_out, int *lasti_out, PyObject **cell_out)
{
    PyFrameObject *top = PyEval_GetFrame(); /* borrowed */
    if (top == NULL)
        return 1;
    PyFrameObject *f = top;
    Py_INCREF(f);
    while (f != NULL) {
        PyCodeObject *code = PyFrame_GetCode(f);
        PyObject *cell = (PyObject *)code == last_code
                             ? last_cell
                             : PyDict_GetItemWithError(cells, code->co_filename);
        if (cell != NULL && cell != last_cell) {
            Py_XSETREF(last_code, Py_NewRef(code));
            Py_XSETREF(last_cell, Py_NewRef(cell));
        }
        int ipy = 0;
        if (cell == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(code);
                Py_DECREF(f);
                return -1;
            }
            ipy = PyUnicode_Tailmatch(code->co_filename, s_ipy, 0, PY_SSIZE_T_MAX, -1) == 1;
        }
        if (cell != NULL || ipy) {
            *code_out = (PyObject *)code;
            *lasti_out = PyFrame_GetLasti(f);
            *cell_out = Py_NewRef(cell != NULL ? cell : Py_None);
            Py_DECREF(f);
            return 0;
        }
        Py_DECREF(code);
        PyFrameObject *back = PyFrame_GetBack(f);
        Py_DECREF(f);
        f = back;
    }
    *code_out = (PyObject *)PyFrame_GetCode(top);
    *lasti_out = PyFrame_GetLasti(top);
    *cell_out = Py_NewRef(Py_None);
    return 0;
}

/* -- an op --------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    int op;          /* the op's number in Python's list; -1: mx.eval */
    int meta;        /* its number in checked mode's vector (mxnb.protocol.ops) */
    int same_shape;  /* its result has its input's shape (the reductions) */
    PyObject *real, *fallback;
} Wrapper;

static long stats[7]; /* ops taken, ops left to Python, evaluations taken, left; ops not
                        * handed over (take): no record would have kept them; ops a full
                        * buffer kept back (kept_back_from), each time; full buffers
                        * whose notes waited in later (take) */

static PyObject *slow(Wrapper *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    stats[self->op < 0 ? 3 : 1]++;
    return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
}

static PyObject *op_call(Wrapper *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (!S.ready || nargs != 1 || Py_TYPE(args[0]) != (PyTypeObject *)S.array)
        return slow(self, args, nargsf, kwnames);
    if (kwnames && PyTuple_GET_SIZE(kwnames)) { /* group=world (or None) alone */
        PyObject *g = args[1];
        if (PyTuple_GET_SIZE(kwnames) != 1 ||
            (PyTuple_GET_ITEM(kwnames, 0) != s_group && /* interned, as a call's names are */
             PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, 0), s_group) != 0) ||
            (g != Py_None && g != S.world_group))
            return slow(self, args, nargsf, kwnames);
    }
    if (S.bare || !S.observed) /* --bare: plain MLX; uninstalled: Python's wrapper */
        return S.bare ? PyObject_Vectorcall(self->real, args, nargsf, kwnames)
                      : slow(self, args, nargsf, kwnames);
    if (S.keep || PyList_GET_SIZE(S.stack) || PyList_GET_SIZE(S.sizes))
        return slow(self, args, nargsf, kwnames); /* --viz, or inside mx.compile / mx.vmap */
    if (S.cell_files == NULL) {
        PyObject *found = PyObject_GetAttr(S.cells, s_found);
        if (found == NULL || !PyDict_CheckExact(found)) {
            Py_XDECREF(found);
            PyErr_Clear();
            return slow(self, args, nargsf, kwnames); /* Python finds them */
        }
        S.cell_files = found;
    }
    if (S.checked && S.comm == NULL) {
        PyObject *comm = PyObject_GetAttr(S.world, s_comm);
        if (comm != NULL && comm != Py_None && (S.comm = PyMPIComm_Get(comm)) != NULL)
            Py_XSETREF(S.comm_obj, Py_NewRef(comm));
        Py_XDECREF(comm);
        PyErr_Clear();
        if (S.comm == NULL)
            return slow(self, args, nargsf, kwnames); /* made on first use, by Python */
    }
    PyObject *x = args[0];
    PyObject *dtype = NULL, *info = NULL, *shape = NULL, *group_seq = NULL;
    Note n;
    memset(&n, 0, sizeof n);
    if ((dtype = PyObject_GetAttr(x, s_dtype)) == NULL || (info = dtype_info(dtype)) == NULL)
        goto go_slow; /* bool, or a dtype mxnb does not know: Python decides */
    shape = PyObject_GetAttr(x, s_shape);
    if ((n.ndim = dims_of(shape, n.dims)) < 0)
        goto go_slow;
    Py_CLEAR(shape);
    if (site_of(S.cell_files, &n.code, &n.lasti, &n.cell) != 0)
        goto go_slow;
    int checked = S.checked;
    long long seq = ++S.seq;
    /* from here the op is ours: every note before it was taken here too */
    n.kind = OP;
    n.out_ndim = -1; /* no result, until MLX gives one */
    n.seq = seq;
    n.op = self->op;
    n.mirror = Py_NewRef(S.world);
    n.dtype = Py_NewRef(PyTuple_GET_ITEM(info, 0));
    n.recorded = S.recording;
    if (checked) {
        long long gseq = 1;
        group_seq = Py_NewRef(S.group_seq);
        PyObject *last = PyDict_GetItemWithError(group_seq, S.world_label);
        if (last != NULL)
            gseq = PyLong_AsLongLong(last) + 1;
        PyObject *g = PyLong_FromLongLong(gseq);
        if (g == NULL || PyDict_SetItem(group_seq, S.world_label, g) < 0) {
            Py_XDECREF(g);
            goto error;
        }
        Py_DECREF(g);
        long long v[WIDTH];
        int nd = n.ndim;
        v[0] = self->meta;
        v[1] = gseq;
        v[2] = PyLong_AsLongLong(PyTuple_GET_ITEM(info, 1));
        v[3] = nd;
        for (int i = 0; i < MAX_NDIM; i++)
            v[4 + i] = i < nd ? n.dims[i] : -1;
        if (PyErr_Occurred())
            goto error;
        n.sent = PyBytes_FromStringAndSize((const char *)v, META_BYTES);
        n.recv = PyByteArray_FromStringAndSize(NULL, META_BYTES * S.size);
        if (n.sent == NULL || n.recv == NULL)
            goto error;
        int rc = MPI_Iallgather(PyBytes_AS_STRING(n.sent), META_BYTES, MPI_BYTE,
                                PyByteArray_AS_STRING(n.recv), META_BYTES, MPI_BYTE, *S.comm,
                                &n.req);
        if (rc != MPI_SUCCESS) {
            PyErr_Format(PyExc_RuntimeError, "MPI_Iallgather failed (%d)", rc);
            goto error;
        }
        n.check = CHECK_OPEN;
    }
    if (n.recorded) {
        n.in_ref = weak(x);
        if (n.in_ref == NULL)
            PyErr_Clear();
        n.t0 = now();
    }
    PyObject *y = PyObject_Vectorcall(self->real, args, nargsf, kwnames);
    if (y == NULL) {
        n.failed = 1;
    } else {
        if (n.recorded)
            n.t1 = now();
        n.out_ref = weak(y);
        if (n.out_ref == NULL) {
            PyErr_Clear();
        } else {
            n.out_id = (void *)y;
            if (self->same_shape) {
                n.out_ndim = SAME;
            } else { /* all_gather: MLX decides the result's shape */
                PyObject *out_shape = PyObject_GetAttr(y, s_shape);
                n.out_ndim = dims_of(out_shape, n.out_dims);
                Py_XDECREF(out_shape);
                PyErr_Clear();
            }
        }
    }
    /* appended last: a take() from another thread while MLX ran saw the notes before it */
    if (n_notes == CAP) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        if (sync_now() < 0)
            PyErr_Clear(); /* Python failed to take them: keep going, the op is the user's */
        PyErr_Restore(et, ev, tb);
    }
    if (n_notes == CAP) { /* still full: drop the oldest (never happens after a take) */
        clear_note(&notes[0]);
        memmove(notes, notes + 1, sizeof(Note) * (CAP - 1));
        n_notes--;
    }
    int index = n_notes++;
    notes[index] = n;
    stats[0]++;
    if (y != NULL) {
        if (n.out_ref)
            table_put(n.out_id, index);
        open_notes[n_open++] = index;
    }
    Py_DECREF(dtype);
    Py_XDECREF(shape);
    Py_XDECREF(group_seq);
    return y;

go_slow:
    PyErr_Clear();
    Py_XDECREF(dtype);
    Py_XDECREF(shape);
    clear_note(&n);
    return slow(self, args, nargsf, kwnames);

error:
    Py_XDECREF(dtype);
    Py_XDECREF(shape);
    Py_XDECREF(group_seq);
    clear_note(&n);
    return NULL;
}

/* -- an evaluation --------------------------------------------------------- */


/* 0: taken here, 1: Python's entry takes it, -1: error */
static int eval_eligible(PyObject *const *args, Py_ssize_t nargs)
{
    if (in_eval || !S.observed || nargs == 0 || nargs > MAX_GIVEN)
        return 1;
    for (Py_ssize_t i = 0; i < nargs; i++)
        if (Py_TYPE(args[i]) != (PyTypeObject *)S.array)
            return 1;
    if (PyDict_GET_SIZE(S.pending) || PyDict_GET_SIZE(S.pairing_open) ||
        PyDict_GET_SIZE(S.compiled_live) || (S.recording && PyDict_GET_SIZE(S.timer_pending)))
        return 1; /* checks open in Python, point to point ops, compiled functions, untimed ops */
    PyObject *running = PyDict_GetItemWithError(S.oplog_dict, s_in_eval); /* borrowed */
    if (running == NULL)
        return PyErr_Occurred() ? -1 : 1;
    return running != Py_None; /* inside one of Python's entry points */
}

/* An array given that Python knows as an op's result, or will once the notes in
 * later come in (the Python path brings them in first): Python's path. */
static int known_to_python(PyObject *a)
{
    for (int i = 0; i < n_later_live; i++) {
        Note *n = &later[later_live[i]];
        if (n->out_id == (void *)a && PyWeakref_GetObject(n->out_ref) == a)
            return 1;
    }
    PyObject *live = PyDict_GetItemWithError(S.oplog_dict, s_live); /* borrowed */
    if (live == NULL)
        return PyErr_Occurred() ? -1 : 1;
    PyObject *key = PyLong_FromVoidPtr(a);
    PyObject *hit = key ? PyDict_GetItemWithError(live, key) : NULL;
    int known = 0;
    if (hit != NULL && PyTuple_Check(hit) && PyTuple_GET_SIZE(hit) == 2) {
        PyObject *ref = PyTuple_GET_ITEM(hit, 1);
        known = PyWeakref_Check(ref) && PyWeakref_GetObject(ref) == a;
    }
    Py_XDECREF(key);
    return PyErr_Occurred() ? -1 : known;
}

/* Complete the exchanges of the given ops, oldest first, within SPIN_S.
 * 1: all landed and agree, 0: Python must wait or explain. */
static int checks_agree(const int *given, int n_given)
{
    int order[MAX_GIVEN];
    int k = 0;
    for (int i = 0; i < n_given; i++)
        if (notes[given[i]].check == CHECK_OPEN)
            order[k++] = given[i];
    for (int i = 1; i < k; i++) /* insertion sort by seq: a handful */
        for (int j = i; j > 0 && notes[order[j]].seq < notes[order[j - 1]].seq; j--) {
            int tmp = order[j];
            order[j] = order[j - 1];
            order[j - 1] = tmp;
        }
    double until = k ? mono() + SPIN_S : 0.0;
    for (int i = 0; i < k; i++) {
        Note *n = &notes[order[i]];
        int done = 0;
        for (;;) {
            MPI_Test(&n->req, &done, MPI_STATUS_IGNORE);
            if (done || mono() > until)
                break;
        }
        if (!done)
            return 0;
        const char *mine = PyBytes_AS_STRING(n->sent);
        const char *all = PyByteArray_AS_STRING(n->recv);
        for (Py_ssize_t r = 0; r < S.size; r++)
            if (memcmp(all + r * META_BYTES, mine, META_BYTES) != 0)
                return 0; /* Python verifies again and says how they differ */
    }
    return 1;
}

static PyObject *eval_call(Wrapper *self, PyObject *const *args, size_t nargsf,
                           PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (!S.ready || (kwnames && PyTuple_GET_SIZE(kwnames)))
        goto go_slow;
    if (S.bare) /* plain MLX: nothing observed */
        return PyObject_Vectorcall(self->real, args, nargsf, kwnames);
    if (n_notes >= CAP - 1 && sync_now() < 0) /* room for this evaluation's note */
        goto go_slow;
    double c0 = S.checked ? now() : 0.0; /* what the checks take: checked alone */
    int t = eval_eligible(args, nargs);
    if (t < 0)
        PyErr_Clear();
    if (t != 0)
        goto go_slow;
    Note e;
    memset(&e, 0, sizeof e);
    e.kind = EVAL;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        int index = table_find(args[i]);
        if (index < 0) {
            int known = known_to_python(args[i]);
            if (known != 0) {
                PyErr_Clear();
                goto go_slow;
            }
            continue;
        }
        int dup = 0;
        for (int j = 0; j < e.n_given; j++)
            dup |= e.given[j] == index;
        if (!dup)
            e.given[e.n_given++] = index;
    }
    /* every op not yet evaluated must be among them (or gone, its check landed):
     * else Python reads MLX's graph for what this evaluation runs */
    for (int i = 0; i < n_open; i++) {
        Note *n = &notes[open_notes[i]];
        int given = 0;
        for (int j = 0; j < e.n_given; j++)
            given |= e.given[j] == open_notes[i];
        if (given)
            continue;
        if (n->check == CHECK_OPEN || lives(n))
            goto go_slow;
    }
    if (!checks_agree(e.given, e.n_given))
        goto go_slow;
    /* taken: the checks passed, the evaluation is timed */
    e.n_arrays = (int)nargs;
    if (nargs > 1) {
        int distinct = 0;
        for (Py_ssize_t i = 0; i < nargs; i++) {
            int seen = 0;
            for (Py_ssize_t j = 0; j < i; j++)
                seen |= args[j] == args[i];
            distinct += !seen;
        }
        e.n_arrays = distinct;
    }
    e.checked = S.checked;
    for (int j = 0; j < e.n_given; j++) {
        Note *n = &notes[e.given[j]];
        if (n->check == CHECK_OPEN)
            n->check = CHECK_OK;
    }
    for (int i = 0; i < n_open;) { /* an evaluation settles every open op, given or gone */
        notes[open_notes[i]].handed = 1;
        open_notes[i] = open_notes[--n_open];
    }
    e.c0 = c0;
    e.e0 = now(); /* also when it began, should a probe ask (take) */
    cur = e;
    in_eval = 1;
    eval_taken = 0;
    cur_frame = PyEval_GetFrame();
    unsigned long gen = generation;
    PyObject *out = PyObject_Vectorcall(self->real, args, nargsf, kwnames);
    e.e1 = S.recording ? now() : e.e0; /* timed only while the trace records */
    e.raised = out == NULL;
    in_eval = 0;
    cur_frame = NULL;
    if (eval_taken || gen != generation) {
        /* handed over while MLX ran: Python's records finish it */
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        PyObject *arrays = PyTuple_New(nargs);
        if (arrays != NULL) {
            for (Py_ssize_t i = 0; i < nargs; i++)
                PyTuple_SET_ITEM(arrays, i, Py_NewRef(args[i]));
            PyObject *r = PyObject_CallFunction(
                S.after, "Odd", arrays, e.raised ? -1.0 : e.e1 - e.e0,
                e.checked ? e.e0 - c0 : -1.0);
            Py_XDECREF(r);
            Py_DECREF(arrays);
        }
        PyErr_Clear();
        PyErr_Restore(et, ev, tb);
        return out;
    }
    notes[n_notes++] = e;
    stats[2]++;
    return out;

go_slow:
    PyErr_Clear();
    return slow(self, args, nargsf, kwnames);
}

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

/* note index -> its place in the list take() hands over; -1: left out, -2: an
 * evaluation of nothing handed over (while take() plans: 1, handed) */
static int place[CAP];
static int later_place[CAP]; /* the same for later */
static char given_here[CAP]; /* an evaluation among the notes taken was given this op */

static PyObject *given_list(const Note *e, const int *where)
{
    int n = 0;
    for (int j = 0; j < e->n_given; j++)
        n += where[e->given[j]] >= 0;
    PyObject *g = PyList_New(n);
    for (int j = 0, k = 0; g && j < e->n_given; j++)
        if (where[e->given[j]] >= 0)
            PyList_SET_ITEM(g, k++, PyLong_FromLong(where[e->given[j]]));
    return g;
}

/* A note as the tuple mxnb.rank.fastpath.replay reads; ``where``: as for given_list */
static PyObject *item_of(const Note *n, const int *where)
{
    if (n->kind == EVALS)
        return Py_BuildValue("(ii)", EVALS, n->n_arrays);
    if (n->kind == EVAL) {
        PyObject *given = given_list(n, where);
        if (given == NULL)
            return NULL;
        return Py_BuildValue("(iNdddiii)", EVAL, given, n->c0, n->e0, n->e1, n->raised,
                             n->n_arrays, n->checked);
    }
    PyObject *req = Py_NewRef(Py_None);
    if (n->check == CHECK_OPEN) {
        Py_DECREF(req);
        req = PyMPIRequest_New(n->req); /* Python's from now on */
        if (req == NULL)
            return NULL;
    }
    PyObject *shape = shape_tuple(n->ndim, n->dims);
    PyObject *out_shape = n->out_ndim == SAME ? Py_XNewRef(shape)
                          : n->out_ndim < 0   ? Py_NewRef(Py_None)
                                              : shape_tuple(n->out_ndim, n->out_dims);
    if (shape == NULL || out_shape == NULL) {
        Py_XDECREF(shape);
        Py_XDECREF(out_shape);
        Py_DECREF(req);
        return NULL;
    }
    return Py_BuildValue(
        "(iLiO(OiO)ONONNNddiiiNOO)", OP, n->seq, n->op, n->mirror, n->code, n->lasti, n->cell,
        n->dtype, shape, n->in_ref ? n->in_ref : Py_None,
        n->out_ref ? Py_NewRef(n->out_ref) : Py_NewRef(Py_None),
        n->out_ref ? PyLong_FromVoidPtr(n->out_id) : Py_NewRef(Py_None), out_shape, n->t0,
        n->t1, n->recorded, n->failed, n->check, req, n->sent ? n->sent : Py_None,
        n->recv ? n->recv : Py_None);
}

static int append(PyObject *out, PyObject *item)
{
    if (item == NULL || PyList_Append(out, item) < 0) {
        Py_XDECREF(item);
        return -1;
    }
    Py_DECREF(item);
    return 0;
}

/* ``quiet``: evaluations of nothing handed over, in a row, as one item */
static int flush_quiet(PyObject *out, int *quiet)
{
    int n = *quiet;
    *quiet = 0;
    return n ? append(out, Py_BuildValue("(ii)", EVALS, n)) : 0;
}

/* Whether no record could keep this op: settled, its result gone, among the ops
 * the op log's bounded list pushes out (not the last ``keep``), and past the ops
 * the recorder still has room for. */
static int unrecorded(const Note *n, int k, int n_ops, int keep, int full)
{
    if (k >= n_ops - keep || !settled(n))
        return 0;
    if (n->recorded && !full)
        return 0;
    return !lives(n);
}

/* Where the notes that stay here begin: the op log's last ``keep`` ops and every
 * note after the first of them, less any evaluation handed an op before it.  A full
 * buffer's loop then makes records only for the ops the op log still holds when
 * Python looks.  n_notes: none stay (they would fill half the buffer or more). */
static int kept_back_from(int n_ops, int keep)
{
    if (in_eval || keep >= n_ops)
        return n_notes;
    int split = n_notes;
    for (int i = 0, k = 0; i < n_notes; i++)
        if (notes[i].kind == OP && k++ == n_ops - keep) {
            split = i;
            break;
        }
    for (int again = 1; again;) { /* given ops are older than their evaluation */
        again = 0;
        for (int i = split; i < n_notes; i++)
            for (int j = 0; notes[i].kind == EVAL && j < notes[i].n_given; j++)
                if (notes[i].given[j] < split) {
                    split = notes[i].given[j];
                    again = 1;
                }
    }
    return n_notes - split > CAP / 2 ? n_notes : split;
}

/* Drop the notes before ``split`` (taken) and move the rest, if any, to the front. */
static void keep_back(int split)
{
    int rest = n_notes - split;
    for (int i = 0; i < split; i++)
        clear_note(&notes[i]);
    memmove(notes, notes + split, sizeof(Note) * rest);
    n_notes = rest;
    for (int i = 0; i < rest; i++)
        for (int j = 0; notes[i].kind == EVAL && j < notes[i].n_given; j++)
            notes[i].given[j] -= split;
    int open = 0;
    for (int i = 0; i < n_open; i++) /* open ops taken are Python's now */
        if (open_notes[i] >= split)
            open_notes[open++] = open_notes[i] - split;
    n_open = open;
    for (int i = 0; i < n_filled; i++)
        table[filled[i]] = 0;
    n_filled = 0;
    for (int i = 0; i < rest; i++)
        if (notes[i].kind == OP && lives(&notes[i]))
            table_put(notes[i].out_id, i);
}

/* The later notes first, as tuples (clear_later once the rest are too). */
static int hand_later(PyObject *out)
{
    for (int i = 0; i < n_later; i++) {
        later_place[i] = (int)PyList_GET_SIZE(out);
        if (append(out, item_of(&later[i], later_place)) < 0)
            return -1;
    }
    return 0;
}

static void clear_later(void)
{
    for (int i = 0; i < n_later; i++)
        clear_note(&later[i]);
    n_later = later_kept = n_later_live = 0;
}

/* Move the notes before ``split`` that take() would hand over (place[] planned) to
 * later, their evaluations renumbered, runs of quiet ones as one EVALS note. */
static void defer(int split)
{
    int quiet = 0;
    for (int i = 0; i <= split; i++) {
        if (i < split && place[i] < 0) { /* left out, or quiet */
            quiet += place[i] == -2;
            continue;
        }
        if (quiet) {
            Note *q = &later[n_later++];
            memset(q, 0, sizeof *q);
            q->kind = EVALS;
            q->n_arrays = quiet;
            quiet = 0;
        }
        if (i == split)
            break;
        Note *l = &later[n_later];
        *l = notes[i];
        if (l->kind == EVAL) {
            int k = 0;
            for (int j = 0; j < l->n_given; j++)
                if (place[l->given[j]] >= 0)
                    l->given[k++] = place[l->given[j]];
            l->n_given = k;
        }
        if (l->kind == OP && lives(l))
            later_live[n_later_live++] = n_later;
        place[i] = n_later++;
        memset(&notes[i], 0, sizeof notes[i]); /* its references are later's now */
    }
}

/* The notes, as tuples Python replays (mxnb.rank.fastpath.replay), the later ones
 * first; the running evaluation's (None outside one); and how many ops and recorded
 * ops it left out (``unrecorded``).  The buffer starts empty again, or (``hold``, a
 * full buffer) holds the op log's last ops (kept_back_from), and the notes before
 * them wait in later if their replay can, handing over nothing.
 * ``keep``: the op log keeps the last that many ops; ``room``: records the
 * recorder still keeps. */
static PyObject *take(PyObject *m, PyObject *args)
{
    int keep = INT_MAX, room = INT_MAX, hold = 0;
    if (!PyArg_ParseTuple(args, "|iip", &keep, &room, &hold))
        return NULL;
    int n_ops = 0, k = 0, kept = 0, quiet = 0, can_wait = 1, moving = 0, last = 0, live = 0;
    long left_out = 0, left_recorded = 0;
    room = room > later_kept ? room - later_kept : 0;
    for (int i = 0; i < n_notes; i++)
        n_ops += notes[i].kind == OP;
    int split = hold ? kept_back_from(n_ops, keep) : n_notes;
    for (int i = 0; i < split; i++)
        given_here[i] = 0;
    for (int i = 0; i < split; i++)
        for (int j = 0; notes[i].kind == EVAL && j < notes[i].n_given; j++)
            given_here[notes[i].given[j]] = 1;
    for (int i = 0; i < split; i++) { /* the plan: which notes are handed over */
        Note *n = &notes[i];
        if (n->kind == OP) {
            int full = kept >= room; /* as the recorder finds it when it reaches this op */
            if (n->recorded && !full && !n->failed && n->out_ref)
                kept++;
            place[i] = unrecorded(n, k++, n_ops, keep, full) ? -1 : 1;
            if (place[i] < 0) {
                left_out++;
                left_recorded += n->recorded;
            } else {
                /* its replay can wait: nothing the C path reads in Python would
                 * come of it but a live result, which later_live lists */
                can_wait &= given_here[i] && settled(n);
                live += lives(n);
            }
        } else {
            int handed = 0;
            for (int j = 0; j < n->n_given; j++)
                handed += place[n->given[j]] >= 0;
            place[i] = handed || n->raised ? 1 : -2;
            can_wait &= !n->raised;
        }
        if (place[i] != -1) { /* what defer() moves: each note handed, each run of quiet ones */
            moving += place[i] == 1 || last != -2;
            last = place[i];
        }
    }
    int running_eval = in_eval && !eval_taken;
    PyObject *out = NULL;
    if (hold && can_wait && !running_eval && n_later + moving <= CAP &&
        n_later_live + live <= LATER_LIVE) {
        defer(split);
        later_kept += kept;
        stats[6]++;
        out = PyList_New(0);
    } else {
        out = PyList_New(0);
        if (out == NULL || hand_later(out) < 0)
            goto error;
        for (int i = 0; i < split; i++) {
            if (place[i] == -1)
                continue;
            if (place[i] == -2) {
                quiet++;
                continue;
            }
            if (flush_quiet(out, &quiet) < 0)
                goto error;
            place[i] = (int)PyList_GET_SIZE(out);
            if (append(out, item_of(&notes[i], place)) < 0)
                goto error;
        }
        if (flush_quiet(out, &quiet) < 0)
            goto error;
        clear_later(); /* handed over: a failure before this kept them for the next look */
    }
    if (out == NULL)
        return NULL;
    PyObject *running = Py_NewRef(Py_None);
    if (running_eval) {
        Py_DECREF(running);
        running = Py_BuildValue("(NOdi)", given_list(&cur, place),
                                cur_frame ? (PyObject *)cur_frame : Py_None,
                                wall() - (now() - cur.e0), cur.checked);
        eval_taken = 1;
        cur.n_given = 0;
    }
    for (int i = split; i < n_notes; i++)
        stats[5] += notes[i].kind == OP;
    keep_back(split); /* split == n_notes: the buffer starts empty */
    generation++;
    stats[4] += left_out;
    return Py_BuildValue("(NNll)", out, running, left_out, left_recorded);

error:
    Py_XDECREF(out);
    return NULL;
}

static PyObject *counts(PyObject *m, PyObject *unused)
{
    return Py_BuildValue("(lllllll)", stats[0], stats[1], stats[2], stats[3], stats[4],
                         stats[5], stats[6]);
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
    if (m != NULL && PyModule_AddStringConstant(m, "SOURCE_DIGEST", SOURCE_DIGEST) < 0)
        Py_CLEAR(m);
    return m;
}

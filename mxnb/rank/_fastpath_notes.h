/* A part of _fastpath.c, included there.
 *
 * The notes and the state they are read from: the buffers, the settings Python
 * pushes, and the small helpers every other part uses (clocks, weak references,
 * shapes, the call site).
 */

#define CAP 16384 /* notes (ops and evaluations) before they are handed over: ~3.5 MB */
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

/* An op's fields and an evaluation's share their memory (by ``kind``): a loop
 * writes a note an op and one an evaluation, and a full buffer is walked a few
 * times as it is handed over, so every byte of a note is paid for 16,384 times. */
typedef struct {
    int kind;
    union {
        struct { /* an op */
            long long seq;
            int op;             /* its number, as Python gave it (mxnb.rank.fastpath.FAST_OPS) */
            int lasti;
            PyObject *mirror;   /* the world's GroupInfo */
            PyObject *code;
            PyObject *cell;
            PyObject *dtype;    /* its name */
            int ndim, out_ndim; /* out_ndim: -1, no result shape; SAME, the input's */
            int dims[MAX_NDIM], out_dims[MAX_NDIM]; /* no tuples kept: the collector's work */
            PyObject *in_ref;   /* recorded only */
            PyObject *out_ref;  /* NULL: the result is not weakly referenceable */
            void *out_id;
            double t0, t1;
            unsigned char recorded, failed, check, handed;
            PyObject *sent, *recv;
            MPI_Request req;
        };
        struct { /* an evaluation (EVAL), or evaluations of nothing handed over (EVALS) */
            double c0, e0, e1;
            int raised, n_arrays, checked, n_given;
            int given[MAX_GIVEN];
        };
    };
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
    if (n->kind != OP)
        return; /* an evaluation holds no references */
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

/* -- an array's dtype and shape, read by MLX's own accessors (_fastpath_mlx.cpp) -- */

#define DTYPE_VALS 64
#ifdef MXNB_MLX_READ
int mxnb_mlx_read(PyObject *o, int *dtype, int *ndim, int *dims, int max);
#else /* built without a C++ compiler or MLX's headers: Python reads them */
static int mxnb_mlx_read(PyObject *o, int *dtype, int *ndim, int *dims, int max) { return -1; }
#endif
static PyObject *by_dtype[DTYPE_VALS]; /* MLX's number of a dtype -> (name, code) */
static int reader_on; /* set by Python once the reads agreed with its own (use_reader) */

/* 0, with MLX's number of an mx.array's dtype and its dimensions; -1: Python reads them
 * (not an mx.array as MLX makes them, or more than MAX_NDIM dimensions). */
static int read_mlx(PyObject *a, int *dtype, int *ndim, int *dims)
{
    if (S.array == NULL || Py_TYPE(a) != (PyTypeObject *)S.array)
        return -1;
    return mxnb_mlx_read(a, dtype, ndim, dims, MAX_NDIM);
}

/* (name, code) of MLX's dtype number ``dtype``, borrowed; NULL: one mxnb does not take. */
static PyObject *dtype_named(int dtype)
{
    return dtype >= 0 && dtype < DTYPE_VALS ? by_dtype[dtype] : NULL;
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

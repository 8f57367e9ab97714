/* A part of _fastpath.c, included there.
 *
 * An op and an evaluation: the wrapped calls, what they take here and what they
 * leave to Python's wrappers, and checked mode's exchange completed in C.
 */

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
    int dtype_no;
    Note n;
    memset(&n, 0, sizeof n);
    n.kind = OP; /* its half of the note, which clear_note clears */
    int read = reader_on && read_mlx(x, &dtype_no, &n.ndim, n.dims) == 0;
    if (!read || (info = dtype_named(dtype_no)) == NULL) { /* ask the Python object */
        if ((dtype = PyObject_GetAttr(x, s_dtype)) == NULL || (info = dtype_info(dtype)) == NULL)
            goto go_slow; /* bool, or a dtype mxnb does not know: Python decides */
        shape = PyObject_GetAttr(x, s_shape);
        if ((n.ndim = dims_of(shape, n.dims)) < 0)
            goto go_slow;
        Py_CLEAR(shape);
    }
    if (site_of(S.cell_files, &n.code, &n.lasti, &n.cell) != 0)
        goto go_slow;
    int checked = S.checked;
    long long seq = ++S.seq;
    /* from here the op is ours: every note before it was taken here too */
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
            } else if (!reader_on || read_mlx(y, &dtype_no, &n.out_ndim, n.out_dims) != 0) {
                /* all_gather: MLX decides the result's shape */
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
    Py_XDECREF(dtype);
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

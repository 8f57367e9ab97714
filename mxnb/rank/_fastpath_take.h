/* A part of _fastpath.c, included there.
 *
 * The notes handed to Python (take): as tuples mxnb.rank.fastpath.replay reads,
 * or, for a full buffer whose replay can wait, moved to ``later``.
 */

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

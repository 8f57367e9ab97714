"""MLX's evaluation entry points, wrapped so a rank knows when it evaluates.

MLX is lazy: communication happens when an array is evaluated, by
``mx.eval``, ``print`` of an array, ``.item()``, conversion to NumPy and the
like.  Each entry point tells the rank's op log which arrays are about to be
evaluated (it completes their checks and notes where the rank waits), and,
while the trace is timed, how long the evaluation took.  One watcher and no
list of listeners: this runs on every evaluation (issue 18).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from mxnb.protocol.afterimport import when_imported
from mxnb.rank.hooks import call_site

if TYPE_CHECKING:
    from mxnb.protocol.messages import EvalState

__all__ = ["ENTRY_NAMES", "MAX_NEEDS", "EvalEntries", "EvalWatcher", "eval_state"]

#: Not-yet-evaluated ops an evaluation lists as what it may need (most recent).
MAX_NEEDS = 64

#: How an evaluation entry point reads in a report.
ENTRY_NAMES = {
    "__repr__": "print/repr of an array",
    "__str__": "print of an array",
    "__format__": "formatting an array",
    "__float__": "float() of an array",
    "__int__": "int() of an array",
    "__bool__": "a truth test of an array",
    "__index__": "using an array as an index",
    "__complex__": "complex() of an array",
    "__array__": "conversion to NumPy",
    "__iter__": "iterating over an array",
    "__bytes__": "bytes() of an array",
    "item": ".item()",
    "__dlpack__": "DLPack export",
    "__getstate__": "pickling an array",
    "tolist": ".tolist()",
}

_ARRAY_ENTRIES = (
    "item", "tolist", "__repr__", "__str__", "__format__", "__float__", "__int__",
    "__bool__", "__index__", "__complex__", "__array__", "__iter__", "__bytes__",
    "__dlpack__", "__getstate__",
)  # fmt: skip
#: MLX's savers evaluate the arrays they write (after the file argument).
_SAVERS = ("save", "savez", "savez_compressed", "save_safetensors", "save_gguf")

#: NumPy's converters read an MLX array through the buffer protocol (evaluating it).
_NUMPY_ENTRIES = ("array", "asarray", "asanyarray", "ascontiguousarray", "copy")
ENTRY_NAMES.update({f"mx.{name}": "saving arrays" for name in _SAVERS})
ENTRY_NAMES.update({f"np.{name}": "conversion to NumPy" for name in _NUMPY_ENTRIES})


class EvalWatcher(Protocol):
    """What an entry point tells (the rank's :class:`~mxnb.rank.oplog.OpLog`)."""

    in_eval: Any  # None outside an evaluation
    bare: bool
    checked: bool
    #: whether ``after_eval`` wants to hear, with clock readings (the trace records)
    timed: bool

    def sync(self) -> None:
        """Bring in what the C path noted (mxnb.rank.fastpath) before Python looks."""

    def before_eval(self, arrays: Sequence[Any], entry: str) -> None: ...

    def after_eval(
        self, arrays: Sequence[Any], seconds: float | None, entry: str, check_s: float | None
    ) -> None:
        """``seconds``: the real evaluation alone, None if interrupted before MLX ran;
        ``check_s``: completing mxnb's checks just before it (None: checks off)."""


def _flatten(tree: Any, out: list[Any]) -> list[Any]:
    if isinstance(tree, (list, tuple)):
        for t in tree:
            _flatten(t, out)
    elif isinstance(tree, dict):
        for t in tree.values():
            _flatten(t, out)
    else:
        out.append(tree)
    return out


class EvalEntries:
    """MLX's evaluation entry points, wrapped for one watcher."""

    def __init__(self, watcher: EvalWatcher) -> None:
        self.watcher = watcher
        self._originals: list[tuple[Any, str, Any]] = []
        self._numpy_wait: Callable[[], None] | None = None  # cancels the wait for NumPy
        #: the op path in C, which takes ``mx.eval`` of plain arrays first (mxnb.rank.fastpath)
        self.fast: Any = None

    def _entry(
        self, name: str, real: Callable[..., Any], arrays_of: Callable[..., Sequence[Any] | None]
    ) -> Any:
        watcher = self.watcher
        clock = time.perf_counter

        @functools.wraps(real)
        def entry(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            if watcher.in_eval is not None or watcher.bare:  # nested, e.g. print -> tolist
                return real(*args, **kwargs)
            arrays = arrays_of(*args, **kwargs)
            if arrays is None:  # not about MLX arrays (NumPy given its own data)
                return real(*args, **kwargs)
            watcher.sync()  # the C path's ops and evaluations came first
            if not watcher.timed:  # no clock readings
                watcher.before_eval(arrays, name)
                try:
                    return real(*args, **kwargs)
                finally:
                    watcher.in_eval = None
            t0 = clock()
            try:
                watcher.before_eval(arrays, name)
            except BaseException:  # interrupted while mxnb's check waited: MLX never ran
                watcher.after_eval(arrays, None, name, clock() - t0)
                raise
            try:
                t1 = clock()
                out = real(*args, **kwargs)
                seconds = clock() - t1
                watcher.after_eval(arrays, seconds, name, t1 - t0 if watcher.checked else None)
                return out
            finally:
                watcher.in_eval = None

        entry.__mxnb_original__ = real  # type: ignore[attr-defined]
        if name == "mx.eval" and self.fast is not None:
            return self.fast.wrap_eval(real, entry)
        return entry

    def install(self) -> None:
        """Wrap MLX's evaluation entry points; a second call does nothing."""
        import mlx.core as mx

        if self._originals:
            return
        array = mx.array

        def eval_args(*args: Any, **_: Any) -> Sequence[Any]:
            for a in args:
                if type(a) is not array:
                    return _flatten(args, [])
            return args  # the common case, mx.eval(y), without recursion or a copy

        def self_only(self: Any, *_: Any, **__: Any) -> Sequence[Any]:
            return (self,)

        def numpy_args(a: Any = None, *_: Any, **__: Any) -> Sequence[Any] | None:
            if type(a) is array:
                return (a,)
            first = a
            while isinstance(first, (list, tuple)) and first:
                first = first[0]  # a list of MLX arrays starts with one: O(depth), not O(n)
            if type(first) is array:
                return [x for x in _flatten(a, []) if type(x) is array]
            return None

        def saved_args(_file: Any = None, *args: Any, **kwargs: Any) -> Sequence[Any] | None:
            found = [x for x in _flatten([args, kwargs], []) if type(x) is array]
            return found or None

        targets = [(mx, "mx.eval", "eval", eval_args)]
        targets += [(mx, f"mx.{name}", name, saved_args) for name in _SAVERS]
        targets += [(mx, "mx.async_eval", "async_eval", eval_args)]
        targets += [(mx.array, name, name, self_only) for name in _ARRAY_ENTRIES]
        self._wrap_all(targets)

        # NumPy reads an MLX array through the buffer protocol, which evaluates it
        # without passing any Python method of the array: NumPy's converters are
        # the entry points then.  They are wrapped once NumPy is imported, by a
        # cell or by mxnb: a rank that never uses NumPy does not import it.
        def wrap_numpy(np: Any) -> None:
            self._wrap_all([(np, f"np.{name}", name, numpy_args) for name in _NUMPY_ENTRIES])

        self._numpy_wait = when_imported("numpy", wrap_numpy)

    def _wrap_all(self, targets: list[tuple[Any, str, str, Any]]) -> None:
        for owner, name, attr, arrays_of in targets:
            real = getattr(owner, attr, None)
            if real is None:
                continue
            real = getattr(real, "__mxnb_original__", real)
            self._originals.append((owner, attr, real))
            setattr(owner, attr, self._entry(name, real, arrays_of))

    def uninstall(self) -> None:
        """Put MLX's own entry points back."""
        if self._numpy_wait is not None:
            self._numpy_wait()
            self._numpy_wait = None
        for owner, attr, real in self._originals:
            setattr(owner, attr, real)
        self._originals.clear()


def eval_state(in_eval: tuple[str, Any, float] | None, given: Sequence[Any],
               ops: Sequence[Any]) -> EvalState | None:  # fmt: skip
    """The running evaluation as a report reads it, worked out when a probe asks.

    ``in_eval``: (entry, the caller's frame, since) of the evaluation the main
    thread is blocked in; ``given``: the records of the op results it was
    handed; ``ops``: the cell's records.  Without one of this cell's results
    among its arrays, it may still be running any op the cell left
    unevaluated: the most recent of those are listed.
    """
    if in_eval is None:
        return None
    entry, frame, since = in_eval
    site = call_site(frame=frame)
    if given:
        needs = sorted(r.seq for r in given)
    else:
        needs = [r.seq for r in reversed(ops) if not r.evaluated][:MAX_NEEDS][::-1]
    return {
        "entry": ENTRY_NAMES.get(entry, entry),
        "site": site.describe() if site else "",
        "since": since,
        "ops": needs,
    }

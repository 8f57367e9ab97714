"""MLX's evaluation entry points, wrapped so a rank knows when it evaluates.

MLX is lazy: communication happens when an array is evaluated, by
``mx.eval``, ``print`` of an array, ``.item()``, conversion to NumPy and the
like.  Each entry point tells the monitor which arrays are about to be
evaluated (it completes their checks and notes where the rank waits), and
tells listeners how long the evaluation took.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

__all__ = ["ENTRY_NAMES", "EvalListener", "add_eval_listener", "install", "remove_eval_listener"]

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
    "tolist": ".tolist()",
}

_ARRAY_ENTRIES = (
    "item", "tolist", "__repr__", "__str__", "__format__", "__float__", "__int__",
    "__bool__", "__index__", "__complex__", "__array__", "__iter__", "__bytes__",
)  # fmt: skip

#: ``fn(arrays, seconds, entry)``, called after each outermost evaluation.
EvalListener = Callable[[Sequence[Any], float, str], None]
#: Empty unless someone listens (the trace recorder, while recording): an
#: evaluation then costs one truth test more, and no clock reads.
_eval_listeners: list[EvalListener] = []


class Watcher(Protocol):
    """What an entry point tells (the rank's :class:`~mxnb.engine.monitor.Monitor`)."""

    in_eval: Any  # None outside an evaluation
    bare: bool

    def before_eval(self, arrays: Sequence[Any], entry: str) -> None: ...


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


def add_eval_listener(fn: EvalListener) -> None:
    """Call ``fn(arrays, seconds, entry)`` after each outermost evaluation returns.

    ``arrays`` are the arrays the entry point was given, ``seconds`` the wall
    time of the real evaluation alone (checks completed before it are not
    counted): since MLX is lazy, that is where communication really happens.
    """
    if fn not in _eval_listeners:
        _eval_listeners.append(fn)


def remove_eval_listener(fn: EvalListener) -> None:
    if fn in _eval_listeners:
        _eval_listeners.remove(fn)


def _entry(
    name: str, real: Callable[..., Any], arrays_of: Callable[..., Sequence[Any]], watcher: Watcher
) -> Any:
    @functools.wraps(real)
    def entry(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        if watcher.in_eval is not None or watcher.bare:  # nested, e.g. print -> tolist
            return real(*args, **kwargs)
        arrays = arrays_of(*args, **kwargs)
        watcher.before_eval(arrays, name)
        try:
            if not _eval_listeners:
                return real(*args, **kwargs)
            t0 = time.perf_counter()
            out = real(*args, **kwargs)
            seconds = time.perf_counter() - t0
            for fn in list(_eval_listeners):
                fn(arrays, seconds, name)
            return out
        finally:
            watcher.in_eval = None

    entry.__mxnb_original__ = real  # type: ignore[attr-defined]
    return entry


def install(watcher: Watcher) -> None:
    """Wrap MLX's evaluation entry points once; idempotent."""
    import mlx.core as mx

    if getattr(mx.eval, "__mxnb_original__", None) is not None:
        return
    array = mx.array

    def eval_args(*args: Any, **_: Any) -> Sequence[Any]:
        for a in args:
            if type(a) is not array:
                return _flatten(args, [])
        return args  # the common case, mx.eval(y), without recursion or a copy

    mx.eval = _entry("mx.eval", mx.eval, eval_args, watcher)
    mx.async_eval = _entry("mx.async_eval", mx.async_eval, eval_args, watcher)
    for name in _ARRAY_ENTRIES:
        real = getattr(mx.array, name, None)
        if real is not None:
            setattr(mx.array, name, _entry(name, real, lambda self, *a, **k: (self,), watcher))

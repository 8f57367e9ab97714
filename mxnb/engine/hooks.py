"""The seam where ``mx.distributed`` operations can be observed on a rank.

Tracing (per-rank array views) and checked communication attach here as
observers.  The wrappers call the real MLX function unchanged; an observer
sees each call before it is made and its (still lazy) result after.
"""

from __future__ import annotations

import functools
import linecache
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

#: Every communication operation of ``mlx.core.distributed``.
OPS = (
    "all_sum",
    "all_gather",
    "all_max",
    "all_min",
    "sum_scatter",
    "send",
    "recv",
    "recv_like",
)


@dataclass(frozen=True)
class CallSite:
    """Where in the user's cell an op was called (or the nearest caller)."""

    filename: str
    line: int
    source: str | None = None  # None: read from linecache when first needed
    cell: int | None = None  # the IPython execution count, when known

    @property
    def code(self) -> str:
        if self.source is not None:
            return self.source
        return linecache.getline(self.filename, self.line)

    def describe(self) -> str:
        where = f"cell In[{self.cell}]" if self.cell is not None else self.filename
        return f"{where}, line {self.line}: {self.code.strip()}"


_filename_map: dict[str, int] | None = None


def _cell_number(filename: str) -> int | None:
    """The execution count of the cell compiled as ``filename``, if it is one.

    Called for every frame of every op, so IPython's map is looked up once:
    the shell fills that same dict as cells are compiled.
    """
    global _filename_map
    if _filename_map is None:
        try:
            from IPython import get_ipython

            fmap = getattr(getattr(get_ipython(), "compile", None), "_filename_map", None)
        except Exception:  # a best-effort label
            fmap = None
        if not isinstance(fmap, dict):
            return None
        _filename_map = fmap
    return _filename_map.get(filename)


def call_site(depth: int = 2, frame: Any = None) -> CallSite | None:
    """The innermost frame that belongs to a notebook cell, else the direct caller.

    Ops called from library code (``mlx.nn.utils.average_gradients``) are
    attributed to the cell line that called the library.
    """
    if frame is None:
        frame = sys._getframe(depth)
    first = None
    while frame is not None:
        fn = frame.f_code.co_filename
        if first is None:
            first = frame
        cell = _cell_number(fn)
        if cell is not None or fn.startswith("<ipython-input"):
            return CallSite(fn, frame.f_lineno, None, cell)
        frame = frame.f_back
    if first is None:
        return None
    fn = first.f_code.co_filename
    return CallSite(fn, first.f_lineno)


#: Where MLX's point-to-point ops take their peer: (position, keyword).
_PEER_ARG = {"send": (1, "dst"), "recv": (2, "src"), "recv_like": (1, "src")}


@dataclass
class OpCall:
    """One call of a distributed op, as an observer sees it."""

    op: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    seq: int
    site: CallSite | None = None
    result: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def arg(self, index: int, name: str) -> Any:
        """An argument of the MLX call, passed by position or by name."""
        return self.args[index] if len(self.args) > index else self.kwargs.get(name)

    @property
    def peer(self) -> int | None:
        """The group rank sent to (``send``) or received from; None for collectives."""
        where = _PEER_ARG.get(self.op)
        p = None if where is None else self.arg(*where)
        return None if p is None else int(p)

    @property
    def x(self) -> Any:
        """The input array; ``recv`` has none (only a shape and dtype)."""
        return None if self.op == "recv" else self.arg(0, "x")


class Observer(Protocol):
    def before(self, call: OpCall) -> None: ...

    def after(self, call: OpCall) -> None: ...


_observers: list[Observer] = []
_originals: dict[str, Callable[..., Any]] = {}
_seq = 0


def _wrap(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(real)
    def op(*args: Any, **kwargs: Any) -> Any:
        global _seq
        if not _observers:
            return real(*args, **kwargs)
        _seq += 1
        call = OpCall(name, args, kwargs, _seq, site=call_site())
        for obs in list(_observers):
            obs.before(call)
        call.result = real(*args, **kwargs)
        for obs in list(_observers):
            obs.after(call)
        return call.result

    op.__mxnb_original__ = real  # type: ignore[attr-defined]
    return op


def reset_seq() -> None:
    """Number ops from 1 again: called when a new cell starts."""
    global _seq
    _seq = 0


def install() -> None:
    """Wrap the ops in ``mlx.core.distributed`` once; idempotent."""
    import mlx.core as mx

    dist = mx.distributed
    for name in OPS:
        real = getattr(dist, name, None)
        if real is None or name in _originals:
            continue
        _originals[name] = real
        setattr(dist, name, _wrap(name, real))


def uninstall() -> None:
    """Put the original MLX functions back."""
    import mlx.core as mx

    for name, real in _originals.items():
        setattr(mx.distributed, name, real)
    _originals.clear()


def add_observer(obs: Observer, first: bool = False) -> None:
    """Observe every op; ``first`` puts ``obs`` before the others (it may refuse ops)."""
    if obs not in _observers:
        _observers.insert(0 if first else len(_observers), obs)


def remove_observer(obs: Observer) -> None:
    if obs in _observers:
        _observers.remove(obs)

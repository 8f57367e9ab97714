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
from typing import Any, NamedTuple, Protocol

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
#: The ops every member of a group calls together.
COLLECTIVES = ("all_sum", "all_gather", "all_max", "all_min", "sum_scatter")
#: Collectives after which every member should hold the same result.
AGREEING = ("all_sum", "all_gather", "all_max", "all_min")


class CallSite(NamedTuple):
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


#: A call site as every op keeps it: (code object, instruction offset, cell).
#: Reading ``frame.f_lineno`` scans the code's line table up to the current
#: instruction (measured: 0.1 us on line 3 of a cell, 2.4 us on line 300), so
#: the line is worked out only when a report shows the site (:func:`resolve`).
RawSite = tuple[Any, int, "int | None"]

_filename_map: dict[str, int] | None = None


def _cell_map() -> dict[str, int]:
    """IPython's map from cell file names to execution counts.

    Read for every op, so the shell's own dict is kept once found (the shell
    fills it as cells are compiled); outside IPython it is empty.
    """
    global _filename_map
    if _filename_map is not None:
        return _filename_map
    try:
        from IPython import get_ipython

        fmap = getattr(getattr(get_ipython(), "compile", None), "_filename_map", None)
    except Exception:  # a best-effort label
        fmap = None
    if not isinstance(fmap, dict):
        return {}
    _filename_map = fmap
    return fmap


def raw_site(frame: Any) -> RawSite:
    """The innermost frame from ``frame`` outwards in a notebook cell, else ``frame``.

    Ops called from library code (``mlx.nn.utils.average_gradients``) are
    attributed to the cell line that called the library.
    """
    cells = _filename_map if _filename_map is not None else _cell_map()
    f = frame
    while f is not None:
        code = f.f_code
        cell = cells.get(code.co_filename)
        if cell is not None or code.co_filename.startswith("<ipython-input"):
            return (code, f.f_lasti, cell)
        f = f.f_back
    return (frame.f_code, frame.f_lasti, None)


def resolve(raw: RawSite) -> CallSite:
    """The :class:`CallSite` of a :data:`RawSite`."""
    code, lasti, cell = raw
    line = code.co_firstlineno
    for start, end, at in code.co_lines():
        if start <= lasti < end:
            line = at if at is not None else line
            break
    return CallSite(code.co_filename, line, None, cell)


def cell_site(frame: Any) -> CallSite | None:
    """The innermost frame from ``frame`` outwards that belongs to a notebook cell."""
    if frame is None:
        return None
    raw = raw_site(frame)
    if raw[2] is None and not raw[0].co_filename.startswith("<ipython-input"):
        return None
    return resolve(raw)


def call_site(depth: int = 2, frame: Any = None) -> CallSite | None:
    """The innermost frame that belongs to a notebook cell, else the direct caller."""
    if frame is None:
        try:
            frame = sys._getframe(depth)
        except ValueError:  # called from the top of a thread's stack
            return None
    return resolve(raw_site(frame))


#: Where MLX's point-to-point ops take their peer: (position, keyword).
_PEER_ARG = {"send": (1, "dst"), "recv": (2, "src"), "recv_like": (1, "src")}


class OpCall:
    """One call of a distributed op, as an observer sees it.

    Made for every op, so a plain class with slots; ``extra`` is where
    observers leave themselves notes between ``before`` and ``after``.
    """

    __slots__ = ("args", "extra", "kwargs", "op", "result", "seq", "site")

    def __init__(
        self,
        op: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        seq: int,
        site: CallSite | None = None,
    ) -> None:
        self.op = op
        self.args = args
        self.kwargs = kwargs
        self.seq = seq
        self.site = site
        self.result: Any = None
        self.extra: dict[str, Any] = {}

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


class Logger(Protocol):
    """Sees every op first, without an :class:`OpCall`: the rank's op log.

    It runs for every op of every cell, so it gets the bare call; ``log``
    may refuse the op by raising, and what it returns is handed back to
    ``logged`` with the (lazy) result.
    """

    def log(
        self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any], seq: int, site: RawSite
    ) -> Any: ...

    def logged(self, token: Any, result: Any) -> None: ...


#: A tuple, replaced when observers change, so that an op need not copy it.
_observers: tuple[Observer, ...] = ()
_logger: Logger | None = None
_originals: dict[str, Callable[..., Any]] = {}
_seq = 0


def _wrap(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(real)
    def op(*args: Any, **kwargs: Any) -> Any:
        global _seq
        logger, observers = _logger, _observers
        if logger is None and not observers:
            return real(*args, **kwargs)
        _seq += 1
        seq = _seq
        site = raw_site(sys._getframe(1))
        token = None if logger is None else logger.log(name, args, kwargs, seq, site)
        if not observers:  # the op log alone: the common case, kept short
            result = real(*args, **kwargs)
            logger.logged(token, result)  # type: ignore[union-attr]
            return result
        call = OpCall(name, args, kwargs, seq, resolve(site))
        for obs in observers:
            obs.before(call)
        result = call.result = real(*args, **kwargs)
        if logger is not None:
            logger.logged(token, result)
        for obs in observers:
            obs.after(call)
        return result

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


def add_observer(obs: Observer) -> None:
    """Observe every op, after the logger (which may refuse it)."""
    global _observers
    if obs not in _observers:
        _observers = (*_observers, obs)


def remove_observer(obs: Observer) -> None:
    global _observers
    _observers = tuple(o for o in _observers if o is not obs)


def set_logger(logger: Logger | None) -> None:
    """The op log (``None``: none); it sees each op before any observer."""
    global _logger
    _logger = logger

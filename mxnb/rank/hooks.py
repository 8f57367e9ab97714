"""The seam where ``mx.distributed`` operations are observed on a rank.

One logger attaches here: the rank's op log (:mod:`mxnb.rank.oplog`), which
checks ops and hands them to the trace recorder.  The wrappers call the real
MLX function unchanged; the logger sees each call before it is made and its
(still lazy) result after.  There is one seam and one per-op record, not a
list of observers: every object made per op shows in a timed loop (issue 18).
Where mxnb's op path in C is built (:mod:`mxnb.rank.fastpath`), it wraps these
wrappers and takes the common case first, handing the rest to them.
"""

from __future__ import annotations

import functools
import linecache
import operator
import sys
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from mxnb.protocol.ops import OPS, PEER_ARG
from mxnb.rank.check import dtype_name


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


class _CellFiles:
    """IPython's map from cell file names to execution counts, found once.

    Read for every op, so the shell's own dict is kept once found (the shell
    fills it as cells are compiled); outside IPython it is empty.
    """

    def __init__(self) -> None:
        self.found: dict[str, int] | None = None

    def map(self) -> dict[str, int]:
        if self.found is not None:
            return self.found
        try:
            from IPython import get_ipython

            fmap = getattr(getattr(get_ipython(), "compile", None), "_filename_map", None)
        except Exception:  # a best-effort label
            fmap = None
        if not isinstance(fmap, dict):
            return {}
        self.found = fmap
        return fmap


_cells = _CellFiles()


def raw_site(frame: Any) -> RawSite:
    """The innermost frame from ``frame`` outwards in a notebook cell, else ``frame``.

    Ops called from library code (``mlx.nn.utils.average_gradients``) are
    attributed to the cell line that called the library.
    """
    cells = _cells.found if _cells.found is not None else _cells.map()
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


def op_arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    """An argument of an MLX call, passed by position or by name."""
    return args[index] if len(args) > index else kwargs.get(name)


def op_peer(op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """The group rank sent to (``send``) or received from; None for collectives."""
    where = PEER_ARG.get(op)
    p = None if where is None else op_arg(args, kwargs, *where)
    return None if p is None else operator.index(p)  # as MLX: an int, not a float


def input_meta(x: Any) -> tuple[tuple[int, ...], str] | None:
    """The shape and dtype of the array MLX makes of an op's input: an MLX
    array's own; for what MLX converts (a Python number, a NumPy array or
    scalar) those of the array it makes (float64 NumPy becomes float32); None
    for anything else, which MLX refuses in its own words."""
    import mlx.core as mx

    if isinstance(x, mx.array):
        return tuple(x.shape), dtype_name(x.dtype)
    np = sys.modules.get("numpy")  # no NumPy value exists before NumPy is imported
    if np is not None and isinstance(x, np.ndarray):
        try:  # the dtype MLX makes of it, from an empty array: no copy of the data
            return tuple(x.shape), dtype_name(mx.array(np.empty(0, x.dtype)).dtype)
        except (TypeError, ValueError):  # e.g. an object array
            return None
    scalars = (bool, int, float, complex) + ((np.generic,) if np is not None else ())
    if isinstance(x, scalars):
        try:
            return (), dtype_name(mx.array(x).dtype)
        except (TypeError, ValueError):  # e.g. a NumPy string
            return None
    return None


def describe_args(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, tuple[int, ...], str, int | None] | None:
    """The input (None for recv), shape, dtype and peer of an op's call; None
    where MLX will refuse the call (then MLX says why, in its own words)."""
    try:
        if name == "recv":
            x = None
            shape = tuple(op_arg(args, kwargs, 0, "shape"))
            dtype = dtype_name(op_arg(args, kwargs, 1, "dtype"))
        else:
            x = op_arg(args, kwargs, 0, "x")
            meta = input_meta(x)
            if meta is None:
                return None
            shape, dtype = meta
        peer = op_peer(name, args, kwargs)
    except (TypeError, ValueError):  # not a shape, or a peer that is not an int
        return None
    if peer is None and name in ("send", "recv", "recv_like"):
        return None  # a required argument left out
    return x, shape, dtype, peer


class Logger(Protocol):
    """Sees every op: the rank's op log.

    It runs for every op of every cell, so it gets the bare call; ``log``
    may refuse the op by raising, and what it returns is handed back to
    ``logged`` with the (lazy) result.
    """

    def log(
        self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any], seq: int, site: RawSite
    ) -> Any: ...

    def logged(self, token: Any, result: Any) -> None: ...

    def failed(self, token: Any) -> None: ...


class Hooks:
    """The wrapped ops of one rank: who logs them, and how to undo it.

    The wrappers read the logger from this object on every call.
    """

    def __init__(self) -> None:
        self.logger: Logger | None = None
        self._seq = 0
        self._originals: dict[str, Callable[..., Any]] = {}
        #: the op path in C, which takes the common case first (mxnb.rank.fastpath)
        self.fast: Any = None

    @property
    def seq(self) -> int:
        """Ops called so far in this cell: the last op's sequence number.

        The C path counts the ops it takes itself, so with it the count lives there.
        """
        return self._seq if self.fast is None else self.fast.module.seq()

    @seq.setter
    def seq(self, value: int) -> None:
        if self.fast is None:
            self._seq = value
        else:
            self.fast.module.set_seq(value)

    def _wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        hooks = self
        getframe = sys._getframe

        @functools.wraps(real)
        def op(*args: Any, **kwargs: Any) -> Any:
            logger = hooks.logger
            if logger is None:
                return real(*args, **kwargs)
            hooks.seq += 1
            # the common case inline: called straight from a cell (see raw_site)
            frame = getframe(1)
            code = frame.f_code
            cell = _cells.found.get(code.co_filename) if _cells.found is not None else None
            site = (code, frame.f_lasti, cell) if cell is not None else raw_site(frame)
            token = logger.log(name, args, kwargs, hooks.seq, site)
            try:
                result = real(*args, **kwargs)
            except BaseException:
                logger.failed(token)
                raise
            logger.logged(token, result)
            return result

        op.__mxnb_original__ = real  # type: ignore[attr-defined]
        if self.fast is not None:
            return self.fast.wrap_op(name, real, op)
        return op

    def reset_seq(self) -> None:
        """Number ops from 1 again: called when a new cell starts."""
        self.seq = 0

    def install(self) -> None:
        """Wrap the ops in ``mlx.core.distributed``; a second call does nothing."""
        import mlx.core as mx

        dist = mx.distributed
        for name in OPS:
            real = getattr(dist, name, None)
            if real is None or name in self._originals:
                continue
            real = getattr(real, "__mxnb_original__", real)
            self._originals[name] = real
            setattr(dist, name, self._wrap(name, real))

    def uninstall(self) -> None:
        """Put the original MLX functions back."""
        import mlx.core as mx

        for name, real in self._originals.items():
            setattr(mx.distributed, name, real)
        self._originals.clear()

    def set_logger(self, logger: Logger | None) -> None:
        """The op log (``None``: ops go straight to MLX)."""
        self.logger = logger
        if self.fast is not None:
            self.fast.update()

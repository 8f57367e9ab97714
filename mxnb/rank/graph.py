"""What MLX's lazy graph holds, read without evaluating anything.

MLX's Python API gives no access to an array's inputs; ``mx.export_to_dot``
is the one public way to see the unevaluated graph behind arrays.  It names
each primitive node by its address, which is what lets a rank tell which of
its point-to-point ops an evaluation is about to run even when their result
is only an input of what is evaluated (``mx.eval(layer(recv_like(h, 0)))``),
and without keeping a reference that would stop MLX reusing the buffer.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "COLLECTIVE_LABELS",
    "LABELS",
    "Reading",
    "dot",
    "has_pending_graph",
    "inside",
    "occurrences",
    "own_primitive",
    "primitives",
    "runs_alone",
]

#: MLX's name (``Primitive::name``) of the primitive each checked op makes.
LABELS = {
    "all_sum": "Sum AllReduce",
    "all_max": "Max AllReduce",
    "all_min": "Min AllReduce",
    "all_gather": "AllGather",
    "send": "Send",
    "recv": "Recv",
}
#: The collectives' names among them.
COLLECTIVE_LABELS = {op: LABELS[op] for op in ("all_sum", "all_max", "all_min", "all_gather")}
#: Open ops whose results are still alive that one evaluation looks up (most recent).
MAX_LOOKUPS = 64

_NODE = re.compile(r'\{ (\d+) \[label ="([^"]*)", shape=rectangle\]; \}')
_TO_ARRAY = re.compile(r'^(\d+) -> "', re.M)


def dot(arrays: Sequence[Any]) -> str | None:
    """The unevaluated graph behind ``arrays`` in DOT, or None if MLX cannot write it."""
    import mlx.core as mx

    buf = io.StringIO()
    try:
        mx.export_to_dot(buf, *arrays)
    except Exception:
        return None
    return buf.getvalue()


class Reading:
    """The graph behind one evaluation's arrays, written by MLX at most once.

    Up to three parts of an evaluation look at it (the point-to-point ops it
    runs, the compiled replays, the open collectives inside an expression);
    writing it costs 0.4 ms on a training step's 175 nodes, so they share it.
    Nothing they do in between changes MLX's graph.
    """

    __slots__ = ("_arrays", "_read", "_text")

    def __init__(self, arrays: Sequence[Any]) -> None:
        self._arrays = arrays
        self._text: str | None = None
        self._read = False

    @property
    def text(self) -> str | None:
        """The DOT text (None if MLX cannot write it)."""
        if not self._read:
            self._text, self._read = dot(self._arrays), True
            self._arrays = ()  # the text is all that is needed now
        return self._text


def has_pending_graph(a: Any) -> bool | None:
    """True if ``a`` still has a primitive to run; None if MLX cannot tell."""
    text = dot([a])
    return None if text is None else _NODE.search(text) is not None


def runs_alone(reading: Reading) -> bool:
    """Whether the evaluation of one op's own result runs no other op.

    Its graph then holds at most one primitive of the ops in :data:`LABELS`,
    the op's own (an evaluated result holds none).  They are every primitive
    of MLX's that moves data and that a rank can make: mxnb refuses
    ``sum_scatter`` before MLX makes one.
    """
    found = occurrences(reading, LABELS.values())
    return found is not None and len(found) <= 1


def own_primitive(a: Any) -> int | None:
    """The address of the primitive that makes ``a``, while it is unevaluated.

    MLX writes a graph inputs first, so the last primitive-to-array edge is the
    one into ``a`` itself.
    """
    text = dot([a])
    found = _TO_ARRAY.findall(text) if text else []
    return int(found[-1]) if found else None


def occurrences(reading: Reading, labels: Iterable[str]) -> list[tuple[int, str]] | None:
    """(address, label) of each run of a primitive named ``labels`` that
    the evaluation ``reading`` shows makes, in MLX's order (inputs first).

    A primitive shared by several arrays runs once for each: the replays of
    one ``mx.compile`` trace share their primitives (see
    :mod:`mxnb.rank.compiled`), and MLX writes a node for each array it makes.
    """
    text = reading.text
    if text is None:
        return None
    found = []
    for m in _labelled(tuple(labels)).finditer(text):
        at = m.start() - 1  # the address is the word before the label
        found.append((int(text[text.rfind("{ ", 0, at) + 2 : at]), m.group(1)))
    return found


@functools.lru_cache(maxsize=8)
def _labelled(labels: tuple[str, ...]) -> re.Pattern[str]:
    """Nodes of these primitives only, found by their literal start: a training
    step's graph has hundreds of nodes, and matching every node cost 0.27 ms
    an evaluation where this takes 0.04 (measured on 175 nodes)."""
    names = "|".join(re.escape(label) for label in labels)
    return re.compile(r'\[label ="(' + names + r')", shape=rectangle\]')


def primitives(reading: Reading, labels: Iterable[str]) -> dict[int, str] | None:
    """Address -> label of the primitives named ``labels`` that the evaluation runs."""
    found = occurrences(reading, labels)
    return None if found is None else dict(found)


def inside(reading: Reading, ops: Sequence[tuple[str, Any]]) -> list[int]:
    """Which of ``ops`` (collective, its result or None) the evaluation may run.

    For ``mx.eval(all_sum(x) / n)``, which is handed the quotient and not the
    sum.  Nothing is looked at unless the graph holds a primitive of that
    collective.  A live result counts if its own primitive is in the graph.  A
    result only MLX's graph still holds (``avg(x)`` returned ``all_sum(x) /
    n``) cannot be looked up by address, so it counts whenever the graph runs
    that collective at all.
    """
    found = primitives(reading, COLLECTIVE_LABELS.values())
    if not found:
        return []
    labels = set(found.values())
    hits: list[int] = []
    looked = 0
    for i, (op, result) in enumerate(ops):
        if COLLECTIVE_LABELS.get(op) not in labels:
            continue
        if result is None:
            hits.append(i)
        elif looked < MAX_LOOKUPS:
            looked += 1
            if own_primitive(result) in found:
                hits.append(i)
    return hits

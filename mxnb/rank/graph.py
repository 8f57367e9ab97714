"""What MLX's lazy graph holds, read without evaluating anything.

MLX's Python API gives no access to an array's inputs; ``mx.export_to_dot``
is the one public way to see the unevaluated graph behind arrays.  It names
each primitive node by its address, which is what lets a rank tell which of
its point-to-point ops an evaluation is about to run even when their result
is only an input of what is evaluated (``mx.eval(layer(recv_like(h, 0)))``),
and without keeping a reference that would stop MLX reusing the buffer.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["dot", "has_pending_graph", "own_primitive", "primitives"]

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


def has_pending_graph(a: Any) -> bool | None:
    """True if ``a`` still has a primitive to run; None if MLX cannot tell."""
    text = dot([a])
    return None if text is None else _NODE.search(text) is not None


def own_primitive(a: Any) -> int | None:
    """The address of the primitive that makes ``a``, while it is unevaluated.

    MLX writes a graph inputs first, so the last primitive-to-array edge is the
    one into ``a`` itself.
    """
    text = dot([a])
    found = _TO_ARRAY.findall(text) if text else []
    return int(found[-1]) if found else None


def primitives(arrays: Sequence[Any], labels: Iterable[str]) -> dict[int, str] | None:
    """Address -> label of the primitives named ``labels`` that evaluating ``arrays`` runs."""
    text = dot(arrays)
    if text is None:
        return None
    wanted = set(labels)
    return {int(m.group(1)): m.group(2) for m in _NODE.finditer(text) if m.group(2) in wanted}

"""Ops inside ``mx.vmap``: checked as the batched op MLX runs.

``mx.vmap`` calls a function's Python with one example's worth of each input
(the mapped axis taken away) and then batches every primitive of the traced
graph.  An ``all_sum`` called there on a ``float32[2]`` runs as an
``all_sum`` of the whole batch, ``float32[3, 2]`` over three examples.  A
check of the ``float32[2]`` the Python call saw passes on ranks that map over
3 and over 4 examples, and MPI then reduces arrays of different sizes: a
wrong number, with no error (measured: rank 0 kept its own values).

So while a vmapped function is traced, each op's check and record carry the
batch: the size of every enclosing ``mx.vmap``'s mapped axis, in front of the
shape the op was called with.  The ranks must then map over the same sizes.
That is stricter than MPI only for a collective on a value that does not
depend on the mapped inputs (MLX does not batch it); mxnb cannot tell that
from Python, and refuses rather than risk the silent case.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

__all__ = ["VmapHook", "batch_size"]


def batch_size(args: tuple[Any, ...], in_axes: Any) -> int | None:
    """The size of the mapped axis of ``args`` (as ``mx.vmap`` is given them), or
    None where it cannot be told (MLX then says what is wrong, if anything)."""
    if in_axes is None or isinstance(in_axes, int):
        axes: Any = [in_axes] * len(args)
    elif isinstance(in_axes, (list, tuple)) and len(in_axes) == len(args):
        axes = in_axes
    else:
        return None
    for arg, axis in zip(args, axes, strict=True):
        size = _size(arg, axis)
        if size is not None:
            return size
    return None


def _size(tree: Any, axis: Any) -> int | None:
    """The mapped size of one argument and its ``in_axes`` (a prefix tree of it)."""
    if axis is None:
        return None
    if isinstance(axis, int):
        for leaf in _leaves(tree):
            shape = getattr(leaf, "shape", None)
            if shape is not None and -len(shape) <= axis < len(shape):
                return int(shape[axis])
        return None
    if isinstance(axis, (list, tuple)) and isinstance(tree, (list, tuple)):
        pairs: Any = zip(tree, axis, strict=False)
    elif isinstance(axis, dict) and isinstance(tree, dict):
        pairs = ((tree[k], a) for k, a in axis.items() if k in tree)
    else:
        return None
    for sub, a in pairs:
        size = _size(sub, a)
        if size is not None:
            return size
    return None


def _leaves(tree: Any) -> Any:
    if isinstance(tree, (list, tuple)):
        for t in tree:
            yield from _leaves(t)
    elif isinstance(tree, dict):
        for t in tree.values():
            yield from _leaves(t)
    else:
        yield tree


class VmapHook:
    """``mx.vmap`` wrapped on a rank: the batch sizes of the traces running now.

    ``sizes`` is not empty exactly while Python runs inside a vmapped
    function's trace, outermost first (MLX traces at every call).
    """

    def __init__(self) -> None:
        #: read by mxnb's op path in C on every call (mxnb.rank.fastpath): never replaced
        self.sizes: list[int] = []
        self._original: Callable[..., Any] | None = None

    def install(self) -> None:
        import mlx.core as mx

        if self._original is not None:
            return
        real = self._original = getattr(mx.vmap, "__mxnb_original__", mx.vmap)
        sizes = self.sizes

        @functools.wraps(real)
        def vmap(fun: Any, in_axes: Any = 0, out_axes: Any = 0) -> Any:
            mapped = real(fun, in_axes=in_axes, out_axes=out_axes)

            def call(*args: Any, **kwargs: Any) -> Any:
                size = batch_size(args, in_axes)
                if size is None:
                    return mapped(*args, **kwargs)
                sizes.append(size)
                try:
                    return mapped(*args, **kwargs)
                finally:
                    sizes.pop()

            try:
                functools.update_wrapper(call, fun)
            except (AttributeError, TypeError):  # e.g. a functools.partial
                pass
            return call

        vmap.__mxnb_original__ = real  # type: ignore[attr-defined]
        mx.vmap = vmap

    def uninstall(self) -> None:
        import mlx.core as mx

        if self._original is not None:
            mx.vmap = self._original
            self._original = None

"""A private mpi4py communicator beside every MLX group, for mxnb's own messages.

MLX groups expose only ``rank()`` and ``size()``.  To name the members of a
``split`` subgroup in reports, and to exchange the small metadata messages of
checked mode without touching the user's traffic, each MLX group gets a
*mirror*: an MPI communicator with the same members and rank order, made by
splitting mxnb's duplicate of ``COMM_WORLD`` the same way MLX split its group.

MLX initialises MPI before mpi4py is imported (see ``python -m mxnb.engine``),
so mpi4py finds MPI running and neither initialises nor finalises it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Mirror", "install_split_hook", "mirror_of", "reset", "world_mirror"]


@dataclass
class Mirror:
    """An MLX group's members (as world ranks) and its mpi4py twin."""

    comm: Any  # mpi4py.MPI.Intracomm
    ranks: tuple[int, ...]  # world rank of each member, in group rank order
    label: str  # "world" or "split(color=1, key=0) #1"

    def describe(self) -> str:
        if self.label == "world":
            return f"world (ranks {_span(self.ranks)})"
        return f"{self.label} (world ranks {_span(self.ranks)})"


def _span(ranks: tuple[int, ...]) -> str:
    if ranks and list(ranks) == list(range(ranks[0], ranks[-1] + 1)) and len(ranks) > 2:
        return f"{ranks[0]}-{ranks[-1]}"
    return ", ".join(map(str, ranks))


_world: Mirror | None = None
# id(mlx group) -> (group kept alive so its id is not reused, mirror)
_mirrors: dict[int, tuple[Any, Mirror]] = {}
# every split in call order: (parent group id, color, key), to rebuild after reset
_splits: list[tuple[int, int, int, Any]] = []


def world_mirror() -> Mirror:
    global _world
    if _world is None:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD.Dup()
        _world = Mirror(comm, tuple(range(comm.Get_size())), "world")
    return _world


def mirror_of(group: Any) -> Mirror:
    """The mirror of an MLX group (``None`` means the world group)."""
    if group is None:
        return _world if _world is not None else world_mirror()
    entry = _mirrors.get(id(group))
    if entry is not None:
        return entry[1]
    if group.size() == world_mirror().comm.Get_size():
        return world_mirror()
    raise LookupError("this MLX group was not made by world.split() on this cell's cluster")


def install_split_hook(world_group: Any) -> None:
    """Make ``Group.split`` also split the mirror, with the same color and key."""
    import mlx.core as mx

    cls = mx.distributed.Group
    if getattr(cls.split, "__mxnb_original__", None) is not None:
        return
    real = cls.split
    _mirrors[id(world_group)] = (world_group, world_mirror())

    def split(self: Any, color: int, key: int = -1) -> Any:
        __tracebackhide__ = True
        sub = real(self, color, key)
        parent = mirror_of(self)
        _mirrors[id(sub)] = (sub, _split_mirror(parent, color, key, len(_splits) + 1))
        _splits.append((id(self), color, key, sub))
        return sub

    split.__doc__ = real.__doc__
    split.__mxnb_original__ = real  # type: ignore[attr-defined]
    cls.split = split


def _split_mirror(parent: Mirror, color: int, key: int, number: int) -> Mirror:
    # MLX orders a subgroup by key, then by parent rank; key -1 means "keep order".
    my_key = parent.comm.Get_rank() if key < 0 else key
    comm = parent.comm.Split(color, my_key)
    ranks = tuple(comm.allgather(world_mirror().comm.Get_rank()))
    return Mirror(comm, ranks, f"split(color={color}) #{number}")


def reset() -> None:
    """Fresh communicators after a wait was abandoned (collective on all ranks).

    An abandoned nonblocking exchange would otherwise pair with the next one.
    """
    global _world
    from mpi4py import MPI

    _world = Mirror(MPI.COMM_WORLD.Dup(), tuple(range(MPI.COMM_WORLD.Get_size())), "world")
    rebuilt: dict[int, tuple[Any, Mirror]] = {}
    for gid, (group, m) in _mirrors.items():
        if m.label == "world":
            rebuilt[gid] = (group, _world)
    for number, (parent_id, color, key, sub) in enumerate(_splits, start=1):
        parent = rebuilt[parent_id][1] if parent_id in rebuilt else _world
        rebuilt[id(sub)] = (sub, _split_mirror(parent, color, key, number))
    _mirrors.clear()
    _mirrors.update(rebuilt)

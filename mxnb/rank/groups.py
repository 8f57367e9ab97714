"""One record per MLX group: its label, its members, and its private twin communicator.

MLX groups expose only ``rank()`` and ``size()``.  Reports must name a split
subgroup and its members, and checked mode must exchange small metadata
messages without touching the user's traffic.  So every MLX group gets a
:class:`GroupInfo`: a label every member derives the same way, the members'
world ranks in group order, and a *mirror*, an mpi4py communicator with the
same members and order, made by splitting mxnb's duplicate of
``COMM_WORLD`` as MLX split its group.

Labels: ``world``, then ``split #k color c`` for the group of colour ``c``
made by the k-th split of its parent (nested splits are joined by `` / ``).
``split`` is collective over the parent, so every member counts the same k.

MLX initialises MPI before mpi4py is imported (see ``python -m mxnb.rank``),
so mpi4py finds MPI running and neither initialises nor finalises it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mxnb.errors import UnknownGroup
from mxnb.protocol.wording import group_text
from mxnb.rank import backend

__all__ = ["GroupInfo", "Groups"]


@dataclass
class GroupInfo:
    """An MLX group as mxnb names it, with its mpi4py twin."""

    label: str
    ranks: tuple[int, ...]  # world rank of each member, in group rank order
    #: makes the twin when first needed: the world's costs an MPI call that
    #: a rank which never checks an op need not make
    make_comm: Callable[[], Any] | None = None
    _comm: Any = field(default=None, repr=False)

    @property
    def comm(self) -> Any:
        """The mpi4py communicator with the same members and rank order."""
        if self._comm is None:
            assert self.make_comm is not None
            self._comm = self.make_comm()
        return self._comm

    def describe(self) -> str:
        return group_text(self.label, self.ranks)


def _world_dup() -> Any:
    from mpi4py import MPI

    return MPI.COMM_WORLD.Dup()


@dataclass
class _Split:
    parent: Any  # the MLX group that was split
    color: int
    key: int
    child: Any  # the MLX group it made (kept alive: its id names it)


class Groups:
    """Every group this rank is a member of; installs the ``Group.split`` hook."""

    def __init__(self, world: Any) -> None:
        self.world_group = world
        self.rank = world.rank()  # this process's world rank
        self._world: GroupInfo | None = None
        # id(MLX group) -> (group, info): the group is kept so its id is not reused
        self._infos: dict[int, tuple[Any, GroupInfo]] = {}
        self._splits: list[_Split] = []
        self._real_split: Any = None

    @property
    def world(self) -> GroupInfo:
        """The world's record; its communicator is made on first use."""
        if self._world is None:
            ranks = tuple(range(self.world_group.size()))
            self._world = GroupInfo("world", ranks, _world_dup)
            self._infos[id(self.world_group)] = (self.world_group, self._world)
        return self._world

    def of(self, group: Any) -> GroupInfo:
        """The record of an MLX group (``None`` means the world)."""
        if group is None:
            return self._world if self._world is not None else self.world
        entry = self._infos.get(id(group))
        if entry is not None and entry[0] is group:
            return entry[1]
        if group.size() == len(self.world.ranks):
            return self.world
        raise UnknownGroup(
            "this MLX group was not made by world.split() on this cluster's ranks: "
            "make groups with world.split(color, key) in a %%mxdist cell"
        )

    def memberships(self) -> dict[str, tuple[int, ...]]:
        """label -> world ranks of every group this rank belongs to."""
        out = {"world": self.world.ranks}
        for _, info in self._infos.values():
            out[info.label] = info.ranks
        return out

    # -- the split hook ---------------------------------------------------

    def install(self) -> None:
        """Make ``Group.split`` also split the mirror, with the same color and key.

        The world's twin is made here, while every rank starts: duplicating
        ``COMM_WORLD`` is collective, and made lazily by the first checked op
        it would block a rank whose peers never call one.
        """
        import mlx.core as mx

        cls = mx.distributed.Group
        if self._real_split is not None:
            return
        _ = self.world.comm
        real = self._real_split = getattr(cls.split, "__mxnb_original__", cls.split)
        groups = self

        def split(self: Any, color: int, key: int = -1) -> Any:
            __tracebackhide__ = True
            backend.refuse("split")
            sub = real(self, color, key)
            groups._add(self, color, key, sub)
            return sub

        split.__doc__ = real.__doc__
        split.__mxnb_original__ = real  # type: ignore[attr-defined]
        cls.split = split

    def uninstall(self) -> None:
        import mlx.core as mx

        if self._real_split is not None:
            mx.distributed.Group.split = self._real_split
            self._real_split = None

    def _add(self, parent: Any, color: int, key: int, child: Any) -> None:
        split = _Split(parent, color, key, child)
        self._splits.append(split)
        self._infos[id(child)] = (child, self._mirror(split, self.of(parent)))

    def _mirror(self, split: _Split, parent: GroupInfo) -> GroupInfo:
        k = sum(1 for s in self._splits if s.parent is split.parent)
        head = "" if parent.label == "world" else parent.label + " / "
        label = f"{head}split #{k} color {split.color}"
        # MLX orders a subgroup by key, then by parent rank; key -1 keeps the order
        my_key = parent.comm.Get_rank() if split.key < 0 else split.key
        comm = parent.comm.Split(split.color, my_key)
        ranks = tuple(comm.allgather(self.rank))
        return GroupInfo(label, ranks, _comm=comm)

    def reset(self) -> None:
        """Fresh communicators after a wait was abandoned (collective on all ranks).

        An abandoned nonblocking exchange would otherwise pair with the next one.
        """
        self._world = GroupInfo("world", tuple(range(self.world_group.size())), _world_dup)
        _ = self._world.comm  # collective: every rank resets together
        splits, self._splits = self._splits, []
        self._infos = {id(self.world_group): (self.world_group, self._world)}
        for s in splits:
            self._splits.append(s)
            self._infos[id(s.child)] = (s.child, self._mirror(s, self.of(s.parent)))

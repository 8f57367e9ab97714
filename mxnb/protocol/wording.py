"""The words every report uses for ranks, ops and array types.

One function per wording, used by both sides: a rank's checked-mode error,
the kernel's hang report, the trace summary, the widget and the picture all
say ``ranks 0-3`` and ``send #2 to rank 1 of float32[4]`` the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

#: What MLX's ring needs to form, said when it did not (by a rank or the kernel).
RING_NEEDS = (
    "every rank must reach its neighbours at the addresses in MLX_HOSTFILE, "
    "and no other program may answer there"
)

__all__ = [
    "RING_NEEDS",
    "group_text",
    "hosts_text",
    "op_text",
    "rank_on",
    "ranks_text",
    "shape_text",
    "typed_text",
]


def ranks_text(ranks: Iterable[int]) -> str:
    """``rank 2``, ``ranks 0, 1``, ``ranks 0-3``, ``ranks 0, 2, 3``, ``no ranks``.

    Runs of three or more are shortened: ``0-1`` would read as a subtraction
    where ``0, 1`` reads as two ranks.
    """
    rs = sorted(set(ranks))
    if not rs:
        return "no ranks"
    if len(rs) == 1:
        return f"rank {rs[0]}"
    if len(rs) > 2 and rs == list(range(rs[0], rs[-1] + 1)):
        return f"ranks {rs[0]}-{rs[-1]}"
    return "ranks " + ", ".join(map(str, rs))


def shape_text(shape: Sequence[int]) -> str:
    """A shape as Python writes a tuple: ``(4,)``, ``(2, 3)``, ``()``."""
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def typed_text(dtype: str, shape: Sequence[int]) -> str:
    """``float32[2,3]``: an array's type where a sentence needs it short."""
    return f"{dtype}[{','.join(map(str, shape))}]"


def op_text(op: str, seq: int, peer: int | None, dtype: str, shape: Sequence[int]) -> str:
    """``all_sum #3 of float32[4]``, ``send #1 to rank 1 of int32[2,2]``.

    ``seq`` counts the ops of the cell on that rank; ``peer`` is a world rank.
    """
    target = ""
    if op == "send":
        target = f" to rank {peer}"
    elif op in ("recv", "recv_like"):
        target = f" from rank {peer}"
    return f"{op} #{seq}{target} of {typed_text(dtype, shape)}"


def group_text(label: str, ranks: Sequence[int]) -> str:
    """``world (ranks 0-3)``, ``split #1 color 1 (world ranks 0, 2)``.

    A split group's members are named by their world ranks, the numbers the
    user sees in every ``[rank r]`` prefix.
    """
    if label == "world":
        return f"world ({ranks_text(ranks)})"
    return f"{label} (world {ranks_text(ranks)})"


def rank_on(rank: int, host: str = "") -> str:
    """``rank 3``, or ``rank 3 on node2`` when the ranks span hosts (``host`` given)."""
    return f"rank {rank} on {host}" if host else f"rank {rank}"


def hosts_text(hosts: dict[int, str]) -> str:
    """``node1 (ranks 0, 1), node2 (ranks 2, 3)``: which ranks run where (rank -> host)."""
    by_host: dict[str, list[int]] = {}
    for rank in sorted(hosts):
        by_host.setdefault(hosts[rank], []).append(rank)
    return ", ".join(f"{h} ({ranks_text(r)})" for h, r in by_host.items())

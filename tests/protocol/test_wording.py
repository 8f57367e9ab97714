"""One wording per thing: ranks, ops, groups and types read the same in every report."""

from __future__ import annotations

from mxnb.protocol.wording import group_text, op_text, ranks_text, shape_text, typed_text


def test_ranks_text_shortens_runs_of_three_or_more():
    assert ranks_text([]) == "no ranks"
    assert ranks_text([2]) == "rank 2"
    assert ranks_text([1, 0]) == "ranks 0, 1"
    assert ranks_text([3, 1, 2, 0]) == "ranks 0-3"
    assert ranks_text([0, 2, 3]) == "ranks 0, 2, 3"
    assert ranks_text([2, 2, 1]) == "ranks 1, 2"  # a set of ranks: repeats count once


def test_op_text_names_the_peer_of_point_to_point_ops():
    assert op_text("all_sum", 3, None, "float32", (4,)) == "all_sum #3 of float32[4]"
    assert op_text("send", 1, 2, "int32", (2, 2)) == "send #1 to rank 2 of int32[2,2]"
    assert op_text("recv", 2, 0, "float32", ()) == "recv #2 from rank 0 of float32[]"
    assert op_text("recv_like", 2, 0, "float32", ()) == "recv_like #2 from rank 0 of float32[]"


def test_groups_are_named_by_label_and_world_ranks():
    assert group_text("world", (0, 1, 2, 3)) == "world (ranks 0-3)"
    assert group_text("split #1 color 1", (1, 3)) == "split #1 color 1 (world ranks 1, 3)"
    assert group_text("split #2 color 0", (2,)) == "split #2 color 0 (world rank 2)"


def test_shapes_and_types():
    assert shape_text([4]) == "(4,)"
    assert shape_text([2, 3]) == "(2, 3)"
    assert shape_text([]) == "()"
    assert typed_text("bfloat16", (2, 3)) == "bfloat16[2,3]"

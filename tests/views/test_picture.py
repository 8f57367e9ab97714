"""The static picture of a trace (Pillow): size, colours, frames, clipping, layout.

No OCR here: the checks look at the pixels where :func:`render` says it drew
each op and panel, for colours that only one kind of mark uses (a red frame,
a rank's identity colour, the value colour map).
"""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image
from test_widget import SUM, X, sample_trace

from mxnb.trace import Trace
from mxnb.trace.view import trace_view
from mxnb.views.palette import STATES
from mxnb.views.picture import (
    CLIP_INK,
    HATCH,
    MARGIN,
    MAX_OPS,
    RANK_COLORS,
    RED,
    WIDTH,
    render,
    render_trace,
)
from mxnb.views.scale import COLORMAP, op_scale, robust_range
from mxnb.views.widget import TraceWidget
from trace_reports import op, report

GARBAGE = np.float32(-2139095036.0)  # an int32's bytes read as float32, and the like


def collective(name: str, xs: list, ys: list, **kw) -> dict[int, dict]:
    """One op per rank, as a {rank: op record} map."""
    n = len(xs)
    return {r: op(1, name, r, xs[r], ys[r], n=n, **kw) for r in range(n)}


def trace_of(*ops_by_rank: dict[int, dict]) -> Trace:
    """A trace whose k-th op on each rank is the k-th map's record for that rank."""
    n = len(ops_by_rank[0])
    reps = []
    for r in range(n):
        ops = [m[r] | {"seq": k} for k, m in enumerate(ops_by_rank, start=1)]
        reps.append(report(r, ops, n=n))
    return Trace(reps)


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB")).astype(int)


def crop(px: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return px[y0 : y1 + 1, x0 : x1 + 1]


def is_color(px: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    return np.all(px == color, axis=-1)


def value_colors(px: np.ndarray) -> set[tuple[int, ...]]:
    """The colour-map colours in a region: chromatic pixels that are not red marks."""
    flat = px.reshape(-1, 3)
    chroma = flat.max(axis=1) - flat.min(axis=1)
    keep = (chroma > 40) & ~is_color(flat, RED)
    return {tuple(c) for c in flat[keep]}


def four_ranks() -> Trace:
    """all_sum of 1-D arrays, all_gather of 2-D ones, an all_max never evaluated."""
    xs = [np.arange(8, dtype=np.float32) * (r + 1) - 3 for r in range(4)]
    ms = [np.arange(12, dtype=np.float32).reshape(3, 4) + r for r in range(4)]
    return trace_of(
        collective("all_sum", xs, [sum(xs)] * 4, line=2, code="y = all_sum(x)"),
        collective("all_gather", ms, [np.concatenate(ms)] * 4, line=3, code="g = all_gather(m)"),
        collective("all_max", xs, xs, line=4, code="z = all_max(x)", states={"after": "lazy"}),
    )


def garbage_trace() -> Trace:
    """An all_sum where rank 3 passed int32: garbage in ranks 1 and 3's results."""
    xs = [np.linspace(0, 10, 6).astype(np.float32) for _ in range(3)]
    xs.append(np.arange(6, dtype=np.int32))
    good = xs[0] * 3
    bad = good.copy()
    bad[[1, 4]] = [GARBAGE, 1.1e9]
    worse = np.array([0, -2139095036, 12, 18, 24, 30], np.int32)
    return trace_of(collective("all_sum", xs, [good, bad, good, worse]))


def test_png_is_the_rendered_picture():
    t = sample_trace()
    png = TraceWidget(t).png()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.mode == "RGB"
    np.testing.assert_array_equal(pixels(img), pixels(render_trace(t)))


def test_size_is_a_readable_page():
    img, layout = render(four_ranks())
    assert 900 <= img.width <= 1100 and img.width == WIDTH
    assert 1500 <= img.height <= 2300, img.size  # 12 rank rows, 48 numbers per gather
    assert list(layout.ops) == [1, 2, 3]
    tops = [layout.ops[k][1] for k in (1, 2, 3)]
    assert tops == sorted(tops) and layout.ops[3][3] < img.height
    # one row per rank: before left of after, rows top to bottom in rank order
    for k in (1, 2, 3):
        rows = [(layout.panels[(k, r, "before")], layout.panels[(k, r, "after")]) for r in range(4)]
        for before, after in rows:
            assert before[2] < after[0] and before[1] == after[1]
        assert all(a[0][3] < b[0][1] for a, b in itertools.pairwise(rows))


def test_only_the_disagreeing_rank_is_framed_in_red():
    xs = [X[0], X[1], X[0]]
    right = xs[0] + xs[1] + xs[2]
    bad = np.array([0, 3, 7, 9], np.float32)  # in range: no clipped-value marks
    ys = [right, bad, right]
    t = trace_of(collective("all_sum", xs, ys))
    assert t.steps[0].mismatch == [1]
    img, layout = render(t)
    red = is_color(pixels(img), RED)
    x0, y0, x1, y1 = layout.panels[(1, 1, "after")]
    assert red[y0, x0 : x1 + 1].all() and red[y0 : y1 + 1, x0].all()  # its whole frame
    for r, side in [(0, "after"), (2, "after"), (0, "before"), (1, "before")]:
        assert not crop(red, layout.panels[(1, r, side)]).any(), (r, side)
    # the words in red under the op: below the panels, inside its block
    below = red[y1 + 1 : layout.ops[1][3]]
    assert below.any()
    ok = trace_of(collective("all_sum", xs, [right] * 3))
    img, layout = render(ok)
    _, top, _, bottom = layout.ops[1]
    assert not is_color(pixels(img)[top:bottom], RED).any()  # (the legend has a red sample)


def test_each_rank_has_its_identity_colour_in_its_lane():
    img, layout = render(four_ranks())
    px = pixels(img)
    for k in (1, 2):
        for r in range(4):
            _, y0, _, y1 = layout.panels[(k, r, "before")]
            lane = px[y0 : y1 + 1, : layout.panels[(k, r, "before")][0]]
            assert is_color(lane, RANK_COLORS[r]).sum() > 200, (k, r)
            others = [c for q, c in enumerate(RANK_COLORS) if q != r]
            assert not any(is_color(lane, c).any() for c in others), (k, r)
    assert len(set(RANK_COLORS)) == len(RANK_COLORS) and RED not in RANK_COLORS


def test_garbage_values_are_clipped_not_blanking_the_picture():
    t = garbage_trace()
    scale = op_scale(trace_view(t).steps[0])
    assert (scale.lo, scale.hi) == (0.0, 30.0) and scale.under and scale.over
    assert scale.note.startswith("colour scale clipped to [0, 30]; outliers: 3 values")
    assert "-2.139e+09 to 1.1e+09 in rank 1 after, rank 3 after" in scale.note
    img, layout = render(t)
    px = pixels(img)
    for r in range(4):
        seen = value_colors(crop(px, layout.panels[(1, r, "after")]))
        assert len(seen) >= 6, (r, len(seen))  # six values, six colours: not one flat colour
    _, _, _, panels_end = layout.panels[(1, 3, "after")]
    assert is_color(px[panels_end : layout.ops[1][3]], CLIP_INK).any()  # the note is written
    # the -2.1e9 bars stick out below zero in the lowest colour (not a 1-pixel sliver)
    for r in (1, 3):
        assert is_color(crop(px, layout.panels[(1, r, "after")]), COLORMAP[0]).sum() > 300
    # saturated bars get a red notch: inside the clipped ranks' panels only (every
    # rank's result is wrong, so all four frames are red: look inside them)
    red = is_color(px, RED)
    for r in (0, 2):
        x0, y0, x1, y1 = layout.panels[(1, r, "after")]
        assert not crop(red, (x0 + 4, y0 + 4, x1 - 4, y1 - 4)).any()


@pytest.mark.parametrize(
    ("values", "expect"),
    [
        (np.r_[np.arange(11.0), GARBAGE], (0.0, 10.0)),
        (np.r_[np.arange(12.0), [GARBAGE, 1.1e9, 3e9, -1e10]], (0.0, 11.0)),  # 25% garbage
        (np.random.default_rng(0).standard_normal(4096), None),  # heavy enough tails: kept
        (np.eye(8).ravel(), None),  # mostly zeros: the ones are not outliers
        (np.full(10, 3.0), None),
        (np.r_[np.full(9, 5.0), 1e9], None),  # one value besides a constant: nothing to zoom on
        (np.r_[np.arange(10.0), 40.0], None),  # far, but not far enough to matter
    ],
)
def test_robust_range(values, expect):
    assert robust_range(values) == expect


def test_values_not_there_are_said_on_a_hatched_box():
    img, layout = render(four_ranks())
    px = pixels(img)
    for r in range(4):
        after = crop(px, layout.panels[(3, r, "after")])
        assert not value_colors(after)
        assert is_color(after, HATCH).sum() > 100
        rows = np.nonzero(is_color(after, HATCH).sum(axis=1) > 10)[0]  # the hatched box
        dark = after[rows[0] : rows[-1]].max(axis=-1) < 120  # the words (grey ink) on it
        assert dark.sum() > 100
        assert value_colors(crop(px, layout.panels[(3, r, "before")]))


def test_heatmap_spans_the_colour_map():
    eye = np.eye(8, dtype=np.float32)
    img, layout = render(trace_of(collective("all_sum", [eye], [eye])))
    seen = value_colors(crop(pixels(img), layout.panels[(1, 0, "after")]))
    assert tuple(COLORMAP[0]) in seen and tuple(COLORMAP[-1]) in seen


@pytest.mark.parametrize(
    "shape", [(256, 256), (2, 3, 4), (1, 5000), (5000, 1), (9, 9), (40,), (5000,), (), (0,)]
)
def test_every_shape_stays_in_its_box(shape):
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal(shape).astype(np.float32) for _ in range(2)]
    img, layout = render(trace_of(collective("all_sum", xs, [xs[0] + xs[1]] * 2)))
    px = pixels(img)
    assert img.width == WIDTH and img.height < 1000
    ink = px.min(axis=-1) < 250
    boxes = [layout.panels[(1, r, s)] for r in range(2) for s in ("before", "after")]
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 < img.width and 0 <= y0 < y1 < img.height
        # just outside the box on the right: nothing spilled (the arrow sits lower down)
        assert not ink[y0 : y0 + 15, x1 + 1 : x1 + 5].any()
    first, last = boxes[0][1], boxes[-1][3]
    inside = np.zeros_like(ink)
    for x0, y0, x1, y1 in boxes:
        inside[y0 : y1 + 1, x0 : x1 + 1] = True
    panel_area = ink[first : last + 1, boxes[0][0] :]
    gap = slice(boxes[0][2] + 1 - boxes[0][0], boxes[1][0] - boxes[0][0])  # the arrows
    panel_area[:, gap] = False
    assert not (panel_area & ~inside[first : last + 1, boxes[0][0] :]).any()
    if int(np.prod(shape)) > 1:
        assert value_colors(crop(px, boxes[1]))


def test_long_traces_stop_after_twelve_ops():
    ops = [
        collective("all_sum", X, [SUM, SUM], line=k, code=f"y{k} = all_sum(x)") for k in range(14)
    ]
    img, layout = render(trace_of(*ops))
    assert list(layout.ops) == list(range(1, MAX_OPS + 1))
    assert img.height > layout.ops[MAX_OPS][3] + 20  # "... 2 more ops" and the legend


def test_transfer_notes_are_red_under_the_op():
    a = np.ones(4, np.float32)
    t = Trace(
        [
            report(0, [op(1, "send", 0, a, a, peer=1, line=1)]),
            report(1, [op(1, "recv", 1, None, a.astype(np.int32), peer=0, line=2)]),
        ]
    )
    assert t.steps[0].transfers[0].note == "sent float32 (4,) but received int32 (4,)"
    img, layout = render(t)
    px = pixels(img)
    end = max(b[3] for b in layout.panels.values())
    block = px[end + 1 : layout.ops[1][3]]
    assert is_color(block, RED).any()  # the note
    assert is_color(block, RANK_COLORS[0]).any() and is_color(block, RANK_COLORS[1]).any()
    assert not is_color(px[layout.ops[1][1] : end + 1], RED).any()  # and no panel framed
    assert MARGIN < img.width


def test_empty_trace_is_a_line_of_text():
    img, layout = render(Trace([report(0, [])]))
    assert img.width == WIDTH and img.height < 100 and not layout.ops


def _loop(n: int, bad_at: int | None, distinct: bool = False) -> Trace:
    """``n`` all_sums on 4 ranks (from one line, or each from its own); one wrong on rank 3."""
    xs = [np.arange(4, dtype=np.float32) * (r + 1) for r in range(4)]
    total = sum(xs)
    reps = []
    for r in range(4):
        ops = []
        for k in range(n):
            y = total + 1 if (k == bad_at and r == 3) else total
            line = k + 1 if distinct else 3
            ops.append(op(k + 1, "all_sum", r, xs[r], y, n=4, line=line))
        reps.append(report(r, ops, n=4))
    return Trace(reps)


def test_the_picture_starts_with_the_timeline_and_draws_the_wrong_op_in_full():
    img, layout = render(_loop(40, bad_at=30))
    px = pixels(img)
    first = min(box[1] for box in layout.ops.values())
    strip = px[:first]
    # the timeline: every rank's lane colour, one wrong cell, and the loop's count
    for r in range(4):
        assert is_color(strip, RANK_COLORS[r]).any()
    wrong = is_color(strip, STATES["wrong"][0])
    assert wrong.any() and wrong.sum() < 1000  # one small cell, not a panel
    # op #31 went wrong, late in the cell: it is among the ops drawn in full, framed
    assert 31 in layout.ops
    x0, y0, x1, _ = layout.panels[(31, 3, "after")]
    assert is_color(px[y0, x0 : x1 + 1], RED).all()
    assert list(layout.ops) == sorted(layout.ops)  # in call order


def test_a_thousand_op_cell_gives_a_picture_of_bounded_size():
    img, _ = render(_loop(1000, bad_at=None, distinct=True))
    assert img.width == WIDTH and img.height < 4000, img.size


def test_op_names_over_the_picture_s_timeline_stand_apart():
    """Each column's name is its own run of ink in the head band, apart from
    its neighbours by a space wider than any between a name's letters."""
    from mxnb.views.pen import font
    from mxnb.views.strip import HEAD_H, draw_strips

    gin = [np.arange(6, dtype=np.float32) + 10 * r for r in range(2)]
    gathered = [np.concatenate(gin)] * 2
    halves = [SUM[:2], SUM[2:]]
    t = trace_of(*[collective("all_gather", gin, gathered, line=k) for k in range(2)],
                 collective("sum_scatter", X, halves, line=3),
                 collective("all_sum", X, [SUM, SUM], line=4))  # fmt: skip
    strips, _ = draw_strips(trace_view(t), WIDTH - 2 * MARGIN, font)
    head = pixels(strips[0])[: HEAD_H - 4]
    xs = np.flatnonzero((head < 200).any(axis=(0, 2)))  # columns of pixels with ink
    words = 1 + int((np.diff(xs) > 5).sum())
    assert words == 4, xs  # gather, gather, scatter, sum


def test_a_long_reason_on_a_hatched_box_is_wrapped_not_cut():
    refused = {"states": {"after": "refused"}, "eval_s": None, "note": "refused"}
    xs = [np.ones(r + 1, np.float32) for r in range(2)]
    img, layout = render(trace_of(collective("all_sum", xs, xs, **refused)))
    after = crop(pixels(img), layout.panels[(1, 0, "after")])
    rows = np.nonzero(is_color(after, HATCH).sum(axis=1) > 10)[0]  # the hatched box
    words = (after[rows[0] : rows[-1]].max(axis=-1) < 120).any(axis=1)  # rows with grey ink
    starts = np.flatnonzero(words[1:] & ~words[:-1])
    assert len(starts) + int(words[0]) == 2  # two lines of words, the second not lost


def test_a_gathered_heatmap_has_each_ranks_rows_marked_beside_it():
    from mxnb.views.palette import rank_color

    xs = [np.arange(80, dtype=np.float32).reshape(16, 5) + 100 * r for r in range(4)]
    img, layout = render(trace_of(collective("all_gather", xs, [np.concatenate(xs)] * 4)))
    px = pixels(img)
    for r in range(4):
        after = crop(px, layout.panels[(1, r, "after")])
        for k in range(4):  # a bar in rank k's colour beside its 16 rows
            assert is_color(after, rank_color(k)).sum() > 50, (r, k)

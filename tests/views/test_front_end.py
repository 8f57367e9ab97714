"""The widget's front end in real Chromium, read as a person reads it.

Hand-made traces (every number known) rendered by the real ES module in a
bare page (``harness.py``); the same module inside JupyterLab and Notebook 7,
with real ranks, is tested in ``tests/test_browser.py``.  Screenshots go to
``test-artifacts/``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from harness import write_page
from test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

from mxnb.trace import Trace
from mxnb.views.widget import TraceWidget
from trace_reports import op, report

N = 4
X = [np.arange(4, dtype=np.float32) * (r + 1) for r in range(N)]
SUM = sum(X)
GIN = [np.arange(6, dtype=np.float32).reshape(2, 3) + 10 * r for r in range(N)]
GATHER = np.concatenate(GIN)
MIN = [np.array([r, 3 - r, (r * 7) % 5, 1], np.float32) for r in range(N)]
MAX = np.max(MIN, axis=0)
GARBAGE = np.array([0, -2139095036, 6, 9], np.float32)


def lesson(loop: int = 0, bad: bool = False) -> Trace:
    """all_sum (rank 3 wrong if ``bad``), all_gather of 2x3, all_max, then a loop."""
    reps = []
    for r in range(N):
        ops = [
            op(1, "all_sum", r, X[r], GARBAGE if bad and r == 3 else SUM, n=N, line=2),
            op(2, "all_gather", r, GIN[r], GATHER, n=N, line=3),
            op(3, "all_max", r, MIN[r], MAX, n=N, line=4),
        ]
        ops += [op(4 + k, "all_sum", r, X[r], SUM, n=N, line=6) for k in range(loop)]
        reps.append(report(r, ops, n=N))
    return Trace(reps)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def show(browser: Any, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """show(trace) -> a page with its widget rendered; a screenshot is kept."""
    pages = []

    def open_page(trace: Trace) -> Any:
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(write_page(TraceWidget(trace), tmp_path / "w.html").as_uri())
        page.wait_for_function("window.mxnbRenderMs !== undefined")
        assert not errors, errors
        pages.append((page, errors))
        return page

    yield open_page
    ARTIFACTS.mkdir(exist_ok=True)
    for page, errors in pages:
        page.screenshot(path=str(ARTIFACTS / f"front-end-{request.node.name}.png"), full_page=True)
        assert not errors, errors
        page.close()


def cells(scope: Any) -> list[str]:
    return [t.strip() for t in scope.locator(".mxnb-cell").all_inner_texts()]


def side(page: Any, rank: int, which: str) -> Any:
    return page.locator(f".mxnb-side.mxnb-{which}[data-rank='{rank}']")


def numbers(a: np.ndarray) -> list[str]:
    return [str(int(v)) if float(v).is_integer() else str(v) for v in np.ravel(a)]


def test_every_ranks_input_and_result_are_on_screen_together(show):
    page = show(lesson())
    for r in range(N):
        before, after = side(page, r, "before"), side(page, r, "after")
        assert cells(before) == numbers(X[r]) and cells(after) == numbers(SUM)
        for box in (before.bounding_box(), after.bounding_box()):  # no scrolling, no clicking
            assert box is not None and box["y"] + box["height"] <= 900
    # the rank's colour is the same in the timeline lane and in its row
    chip = page.locator(".mxnb-rankchip.mxnb-row-2").evaluate(
        "e => getComputedStyle(e).backgroundColor"
    )
    lane = page.locator("svg rect[rx='9']").nth(2).get_attribute("fill")
    assert chip == "rgb({}, {}, {})".format(*(int(lane[i : i + 2], 16) for i in (1, 3, 5)))


def test_an_all_sum_element_shows_its_terms(show):
    page = show(lesson())
    side(page, 1, "after").locator(".mxnb-cell").nth(2).hover()
    want = " + ".join(f"{numbers(X[r])[2]} (rank {r})" for r in range(N))
    assert (
        page.locator(".mxnb-terms")
        .inner_text()
        .startswith(f"element [2]: {want}; ranks 0-3 hold {numbers(SUM)[2]}")
    )
    pointed = page.locator(".mxnb-before .mxnb-cell.mxnb-pointed")
    assert pointed.all_inner_texts() == [numbers(X[r])[2] for r in range(N)]


def test_each_gathered_block_names_and_colours_its_source_rank(show):
    page = show(lesson())
    page.locator(".mxnb-trace").focus()
    page.keyboard.press("ArrowRight")
    assert "all_gather" in page.locator(".mxnb-op-title").inner_text()
    blocks = side(page, 2, "after").locator(".mxnb-block")
    assert blocks.count() == N
    for k in range(N):
        b = blocks.nth(k)
        assert b.locator(".mxnb-tag").inner_text() == f"from rank {k}"
        assert cells(b) == numbers(GIN[k])
        chip = page.locator(f".mxnb-rankchip.mxnb-row-{k}")
        colour = chip.evaluate("e => getComputedStyle(e).backgroundColor")
        assert b.evaluate("e => getComputedStyle(e).borderTopColor") == colour


def test_max_marks_the_winning_rank_of_every_element(show):
    page = show(lesson())
    page.locator(".mxnb-trace").focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    side(page, 0, "after").locator(".mxnb-cell").nth(0).hover()
    winner = int(np.argmax([m[0] for m in MIN]))
    assert f"rank {winner}'s value wins" in page.locator(".mxnb-terms").inner_text()
    won = side(page, winner, "before").locator(".mxnb-cell").nth(0)
    assert "mxnb-won" in won.get_attribute("class")


def test_a_garbage_result_is_framed_with_what_it_should_hold(show):
    page = show(lesson(bad=True))
    wrong = side(page, 3, "after")
    assert "mxnb-wrong" in wrong.get_attribute("class")
    assert cells(wrong.locator(".mxnb-expected")) == numbers(SUM)
    assert page.locator(".mxnb-wrong").count() == 1  # ranks 0-2 are right, and not framed
    assert "rank 3 holds a wrong result" in page.locator(".mxnb-mismatch").inner_text()
    assert page.locator(".mxnb-clipped").inner_text().startswith("colour scale clipped")
    lane = page.locator("svg .mxnb-st-wrong")
    assert lane.count() == 1 and lane.get_attribute("data-rank") == "3"


def test_the_ring_algorithm_steps_through_the_ranks_data(show):
    page = show(lesson())
    page.locator(".mxnb-trace").focus()
    page.keyboard.press("r")
    assert "textbook ring algorithm" in page.locator(".mxnb-ring-honesty").inner_text()
    # after reduce-scatter round 1, rank 1 has added rank 0's chunk 0 to its own
    page.keyboard.press("ArrowDown")
    assert "reduce-scatter round 1 of 3" in page.locator(".mxnb-ring-step").inner_text()
    got = page.locator(".mxnb-chunk[data-rank='1'][data-chunk='0']")
    assert got.locator(".mxnb-chunk-values").inner_text() == numbers(X[0][:1] + X[1][:1])[0]
    assert got.locator(".mxnb-tag").inner_text() == "+ from rank 0"
    # its dots: the inputs it now holds, rank 0's and its own, in their colours
    dots = got.locator(".mxnb-dot")
    assert [dots.nth(i).get_attribute("data-rank") for i in range(dots.count())] == ["0", "1"]
    assert "A dot per rank whose input" in page.locator(".mxnb-ring-honesty").inner_text()
    for _ in range(5):
        page.keyboard.press("ArrowDown")
    assert "step 6 of 6: all-gather round 3 of 3" in page.locator(".mxnb-ring-step").inner_text()
    # worded as the still picture words it (one wording, from the ring model)
    titles = lesson().ring(1).titles()
    assert page.locator(".mxnb-ring-step").inner_text() == f"step 6 of 6: {titles[6]}"
    for r in range(N):
        held = page.locator(f".mxnb-chunk[data-rank='{r}'] .mxnb-chunk-values").all_inner_texts()
        assert held == numbers(SUM)
    checks = page.locator(".mxnb-ring-check").all_inner_texts()
    assert checks == [f"= what rank {r} got \u2713" for r in range(N)]
    # at the end every chunk on every rank holds every rank's input
    assert page.locator(".mxnb-dot").count() == N * N * N


def test_a_200_op_loop_is_one_folded_column_with_its_repeats(show):
    page = show(lesson(loop=200))
    assert page.locator(".mxnb-fold").text_content() == "\u00d7200"
    assert page.locator("svg .mxnb-col").count() == 4  # sum, gather, max, the loop once
    page.locator(".mxnb-trace").focus()
    page.keyboard.press("End")
    assert page.locator(".mxnb-iter").inner_text() == "repeat 1 of 200 (a loop, folded)"
    assert "#4 all_sum" in page.locator(".mxnb-op-title").inner_text()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert page.locator(".mxnb-iter").inner_text() == "repeat 3 of 200 (a loop, folded)"
    assert "#6 all_sum" in page.locator(".mxnb-op-title").inner_text()
    assert cells(side(page, 0, "after")) == numbers(SUM)


def test_op_names_over_the_timeline_do_not_run_into_each_other(show):
    reps = [
        report(r, [op(1, "all_gather", r, GIN[r], GATHER, n=N, line=2),
                   op(2, "all_gather", r, GIN[r], GATHER, n=N, line=3),
                   op(3, "all_sum", r, X[r], SUM, n=N, line=4)], n=N)
        for r in range(N)
    ]  # fmt: skip
    names = show(Trace(reps)).locator("svg .mxnb-colname")
    assert names.all_text_contents() == ["gather", "gather", "sum"]
    boxes = [b.bounding_box() for b in names.all()]
    for left, right in itertools.pairwise(boxes):
        assert left["x"] + left["width"] + 2 <= right["x"], (left, right)


def test_a_send_the_check_refused_says_nothing_was_sent(show):
    a = np.ones(4, np.float32)
    refused = {"states": {"after": "refused"}, "eval_s": None, "note": "refused"}
    reps = [
        report(0, [op(1, "send", 0, a, a, peer=1, **refused)]),
        report(1, [op(1, "recv", 1, None, a.astype(np.int32), peer=0, **refused)]),
    ]
    page = show(Trace(reps))
    assert page.locator("svg .mxnb-mark").all_text_contents() == ["!", "!"]
    for r in (0, 1):
        said = side(page, r, "after").inner_text()
        assert "never ran" in said and "sent" not in said, said
    assert "mxnb's check stopped both" in page.locator(".mxnb-trace").inner_text()


def test_a_refused_all_sum_offers_no_terms_to_point_at(show):
    refused = {"states": {"after": "refused"}, "eval_s": None, "note": "refused"}
    x = [np.ones(r + 1, np.float32) for r in range(N)]  # a different size on every rank
    page = show(Trace([report(r, [op(1, "all_sum", r, x[r], x[r], n=N, **refused)], n=N)
                       for r in range(N)]))  # fmt: skip
    assert page.locator(".mxnb-mark").all_text_contents() == ["!"] * N
    assert page.locator(".mxnb-terms").count() == 0
    assert "inputs differ" in page.locator(".mxnb-inputs").inner_text()


def test_the_front_ends_rank_ranges_are_worded_as_everywhere_else(show):
    from mxnb.protocol.wording import ranks_text

    page = show(lesson())
    cases = [[0], [0, 1], [0, 1, 2], [0, 2, 3], [1, 2, 3, 4], [0, 1, 3], [5, 6, 7, 8, 9]]
    got = page.evaluate("cs => cs.map(c => window.mxnbModule.wording.ranksText(c))", cases)
    assert got == [ranks_text(c) for c in cases]


def test_ranks_on_several_hosts_carry_their_host_under_the_chip(show):
    assert show(lesson()).locator(".mxnb-host").count() == 0  # one host: no host line
    reps = [
        {**report(r, [op(1, "all_sum", r, X[r], SUM, n=N, line=2)], n=N),
         "host": "node1" if r < 2 else "node2"}
        for r in range(N)
    ]  # fmt: skip
    page = show(Trace(reps))
    hosts = page.locator(".mxnb-rankchip .mxnb-host").all_inner_texts()
    assert hosts == ["node1", "node1", "node2", "node2"]
    chip = page.locator(".mxnb-rankchip.mxnb-row-3")
    assert chip.inner_text().split() == ["rank", "3", "node2"]
    assert "on 2 hosts: node1 (ranks 0, 1), node2 (ranks 2, 3)" in page.content()


@pytest.mark.parametrize("shape", [(16, 5), (40,)])
def test_every_part_of_a_plotted_gather_names_its_rank_in_full(show, shape):
    # too many values for numbered cells: a heatmap (2-D) or bars (1-D) with a
    # stripe of rank colours; each part's words are whole, never cut mid-word
    xs = [np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + 100 * r for r in range(N)]
    page = show(Trace([report(r, [op(1, "all_gather", r, xs[r], np.concatenate(xs), n=N)], n=N)
                       for r in range(N)]))  # fmt: skip
    parts = side(page, 0, "after").locator(".mxnb-stripe-part")
    assert parts.count() == N
    for k in range(N):
        part = parts.nth(k)
        assert part.inner_text() in (f"from rank {k}", f"rank {k}")
        whole = "e => e.scrollWidth <= e.clientWidth && e.scrollHeight <= e.clientHeight"
        assert part.evaluate(whole)


def test_a_step_of_two_different_collectives_is_named_after_both(show):
    refused = {"states": {"after": "refused"}, "eval_s": None, "note": "refused"}
    called = ["all_sum" if r % 2 == 0 else "all_gather" for r in range(N)]
    reps = [
        report(r, [op(1, called[r], r, X[r], X[r], n=N, **refused),
                   op(2, "all_max", r, MIN[r], MAX, n=N, line=3)], n=N)
        for r in range(N)
    ]  # fmt: skip
    page = show(Trace(reps))
    names = page.locator("svg .mxnb-colname")
    assert names.all_text_contents() == ["sum/gather", "max"]
    left, right = (b.bounding_box() for b in names.all())
    assert left["x"] + left["width"] + 2 <= right["x"], (left, right)
    assert page.locator(".mxnb-opname").inner_text() == "#1 all_sum / all_gather"


def test_a_send_says_sent_only_once_it_was_evaluated(show):
    from mxnb.trace.text import sent_text

    a = np.ones(4, np.float32)
    lazy = {"states": {"after": "lazy"}}
    reps = [
        report(0, [op(1, "send", 0, a, a, peer=1, line=2), op(2, "send", 0, a, a, peer=1, line=3,
                                                              **lazy)]),
        report(1, [op(1, "recv", 1, None, a, peer=0, line=4)]),
    ]  # fmt: skip
    page = show(Trace(reps))
    assert side(page, 0, "after").inner_text().splitlines()[-1] == sent_text(1, True)
    page.locator(".mxnb-trace").focus()
    page.keyboard.press("ArrowRight")  # the send no recv took, never evaluated
    said = side(page, 0, "after").inner_text()
    assert "sent" not in said and "(not evaluated by the cell)" in said, said


def test_values_past_the_exact_limit_say_how_they_are_shown(show):
    """4,810 values (a small model's gradient): every one drawn, rounded to 16
    bits, so the view says rounded, not 'downsampled 4810 -> 4810'; 40,000
    values are block means, and say so."""
    from mxnb.trace.text import sampled_text

    for n, says in ((4810, "every value, rounded"), (40_000, "downsampled 40000 to ")):
        xs = [np.linspace(-1, 1, n, dtype=np.float32) * (r + 1) for r in range(N)]
        t = Trace([report(r, [op(1, "all_sum", r, xs[r], sum(xs), n=N)], n=N) for r in range(N)])
        page = show(t)
        said = side(page, 0, "after").locator(".mxnb-sampled").inner_text()
        assert said.startswith(says) and "4810 to 4810" not in said, said
        assert said == sampled_text(t.steps[0].snap(0, "after")[0])
        assert said in t.text()
        # no terms to point at: the line says why, without asking to point
        terms = page.locator(".mxnb-terms").inner_text().strip()
        assert terms == "the terms need every rank's exact input (arrays up to 4096 elements)"


def test_collectives_run_in_different_orders_are_said_under_the_op(show):
    """Rank 1 ran #2 before #1: the op says so, under its wrong results."""
    xs = [np.array([1.0, 2.0], np.float32) * (r + 1) for r in range(2)]
    got = {0: ([21.0, 42.0], [12.0, 24.0]), 1: ([12.0, 24.0], [21.0, 42.0])}
    reps = []
    for r in range(2):
        a = op(1, "all_sum", r, xs[r], np.array(got[r][0], np.float32), line=2)
        b = op(2, "all_sum", r, xs[r] * 10, np.array(got[r][1], np.float32), line=3)
        a["eval_no"], b["eval_no"] = (1, 2) if r == 0 else (2, 1)
        reps.append(report(r, [a, b]))
    page = show(Trace(reps))
    said = page.locator(".mxnb-order").inner_text()
    assert said.startswith("ranks 0, 1 ran #1 and #2 in different orders (rank 0 ran #1 first")
    assert "hold a wrong result" in page.locator(".mxnb-mismatch").inner_text()

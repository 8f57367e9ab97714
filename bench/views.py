"""What the views cost: a 1,000-op cell's widget state, its render in Chromium,
and a live-strip update against the probe round that feeds it.

The cells run on a real 4-rank cluster; the widget's real ES module renders
their traces in headless Chromium (the page of ``tests/views/harness.py``),
timed inside the page from the module's ``render`` call to its return.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "views"))

#: A loop: one call site, folded by the timeline.
LOOP = "x = mx.ones((4,)) * rank\nfor i in range({n}):\n    mx.eval(mx.distributed.all_sum(x))\n"
STATE_MAX = 2 * 2**20
RENDER_MAX = 1.0


def distinct(n: int) -> str:
    """``n`` all_sums, each on its own line: nothing to fold (the worst case)."""
    return "x = mx.ones((4,)) * rank\n" + "".join(
        f"y{i} = mx.distributed.all_sum(x); mx.eval(y{i})\n" for i in range(n)
    )


def _state_bytes(widget: Any) -> int:
    import json

    from ipywidgets.widgets.widget import _remove_buffers

    state, _, buffers = _remove_buffers(widget.get_state())
    return len(json.dumps(state)) + sum(len(b) for b in buffers)


def _render_ms(widget: Any, browser: Any) -> float:
    from harness import write_page

    with tempfile.TemporaryDirectory() as tmp:
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        try:
            page.goto(write_page(widget, Path(tmp) / "w.html").as_uri())
            page.wait_for_function("window.mxnbRenderMs !== undefined", timeout=60_000)
            return float(page.evaluate("window.mxnbRenderMs"))
        finally:
            page.close()


def views(shell: Any, quick: bool, row: Any) -> list[dict[str, Any]]:
    """Rows for the bench table (``row`` is bench/run.py's)."""
    from playwright.sync_api import sync_playwright

    import mxnb
    from mxnb.views.widget import TraceWidget

    n = 100 if quick else 1000
    out = []
    with contextlib.redirect_stdout(io.StringIO()):
        shell.start(4)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox", "--disable-gpu",
                                          "--disable-dev-shm-usage"])  # fmt: skip
        try:
            for label, code in (("a loop", LOOP.format(n=n)), ("distinct lines", distinct(n))):
                with contextlib.redirect_stdout(io.StringIO()):
                    shell.cell(code)
                widget = TraceWidget(mxnb.last_trace())
                nbytes = _state_bytes(widget)
                out.append(row(f"widget state, {n}-op cell ({label}), 4 ranks", nbytes,
                               STATE_MAX, "bytes", "<= 2 MB", nbytes <= STATE_MAX))  # fmt: skip
                ms = statistics.median(_render_ms(widget, browser) for _ in range(3))
                out.append(row(f"render in Chromium, {n}-op cell ({label})", ms / 1e3,
                               RENDER_MAX, "s", "<= 1 s", ms / 1e3 <= RENDER_MAX))  # fmt: skip
        finally:
            browser.close()
    out.append(live_strip_cost(shell, row))
    return out


def live_strip_cost(shell: Any, row: Any) -> dict[str, Any]:
    """Building one live-strip update from a probe round, against the round itself."""
    from mxnb.kernel.live import _html
    from mxnb.kernel.waitgraph import wait_graph

    cluster = shell.session.cluster
    status = dict.fromkeys(range(cluster.n), "running")
    probe, strip = [], []
    for _ in range(50):
        t = time.perf_counter()
        states = cluster.ask_probes()
        probe.append(time.perf_counter() - t)
        t = time.perf_counter()
        _html(wait_graph(states, status), 2.0)
        strip.append(time.perf_counter() - t)
    p, s = statistics.median(probe), statistics.median(strip)
    return row("live strip update, 4 ranks (vs the probe round it reads)", s, p, "s",
               "<= 1.0x", s <= p)  # fmt: skip

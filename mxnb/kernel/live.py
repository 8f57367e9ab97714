"""The live strip: what each rank is doing while a cell runs, and the hang picture.

A cell that runs longer than :data:`LIVE_AFTER` seconds gets one output that
is updated in place about once a second from the probes the hang watch
reads anyway: each rank's op and whether it computes or waits, and on whom.
When the cell finishes, the strip is emptied; when it cannot finish, it
becomes the picture of who waits for whom (:mod:`mxnb.views.waits`), which
stays in the notebook.
"""

from __future__ import annotations

import base64
import html
from typing import Any

from mxnb.kernel.waitgraph import WaitGraph
from mxnb.views.palette import hex_color, rank_color

__all__ = ["LIVE_AFTER", "LiveStrip"]

#: Seconds a cell runs before the strip appears.
LIVE_AFTER = 1.0


def _html(graph: WaitGraph, elapsed: float) -> str:
    rows = []
    for r in graph.ranks:
        c = rank_color(r.rank)
        ink = "#111" if 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] > 145 else "#fff"
        chip = (
            f'<span style="background:{hex_color(c)};color:{ink};border-radius:9px;'
            f'padding:0 7px;font-weight:bold">rank {r.rank}</span>'
        )
        if r.host:  # the ranks span hosts: say where this one runs
            chip += f' <span class="mxnb-host" style="color:#666">{html.escape(r.host)}</span>'

        words = html.escape(r.text().split(": ", 1)[1])
        waiting = bool(r.waits_on)
        colour = "#b26a00" if waiting else "inherit"
        rows.append(
            f'<div class="mxnb-live-rank" data-rank="{r.rank}" '
            f'data-waits="{" ".join(map(str, r.waits_on))}">{chip} '
            f'<span style="color:{colour}">{words}</span></div>'
        )
    head = f"<div><b>running for {elapsed:.0f} s</b> (live, from the ranks' probes)</div>"
    return (
        f'<div class="mxnb-live" style="font-size:12px;line-height:1.7">{head}{"".join(rows)}</div>'
    )


class LiveStrip:
    """One updatable output per cell (an IPython display handle), created on first use."""

    def __init__(self) -> None:
        self.handle: Any = None

    def _show(self, data: dict[str, str]) -> None:
        from IPython.display import display

        if self.handle is None:
            self.handle = display(data, raw=True, display_id=True)
        else:
            self.handle.update(data, raw=True)

    def update(self, graph: WaitGraph, elapsed: float) -> None:
        text = f"running for {elapsed:.0f} s:\n{graph.text()}"
        self._show({"text/html": _html(graph, elapsed), "text/plain": text})

    def done(self) -> None:
        """The cell finished: the strip has nothing more to say."""
        if self.handle is not None:
            self.handle.update({"text/plain": ""}, raw=True)

    def hang(self, graph: WaitGraph, cause: str) -> None:
        """The cell cannot finish: the picture of who waits for whom, kept in the output."""
        from mxnb.views.waits import waits_png

        png = base64.b64encode(waits_png(graph, cause)).decode("ascii")
        text = graph.text() + (f"\nLikely cause: {cause}" if cause else "")
        self._show({"image/png": png, "text/plain": text})

"""The widget's front end in a bare page: its real ES module and a stand-in model.

For fast real-browser checks of the drawing (and the bench's render timing)
without a Jupyter server.  The model stand-in only serves the synced state,
as anywidget's does after ipywidgets has turned buffers into DataViews; the
full path through JupyterLab and Notebook 7 is tested in ``test_browser.py``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from mxnb.views.widget import TraceWidget

PAGE = """<!doctype html><html><head><meta charset="utf-8"><style>{css}</style></head>
<body style="margin:16px;font-family:sans-serif">
<div id="host"></div>
<script type="module">
const state = {state};
function revive(v) {{
  if (v && typeof v === "object" && "__bytes__" in v) {{
    const raw = atob(v.__bytes__);
    const a = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) a[i] = raw.charCodeAt(i);
    return new DataView(a.buffer);
  }}
  if (Array.isArray(v)) return v.map(revive);
  if (v && typeof v === "object") {{
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, revive(x)]));
  }}
  return v;
}}
const values = revive(state);
const model = {{ get: (k) => values[k], set() {{}}, save_changes() {{}}, on() {{}}, off() {{}} }};
const url = URL.createObjectURL(new Blob([{esm}], {{ type: "text/javascript" }}));
const mod = await import(url);
window.mxnbModule = mod;
const t0 = performance.now();
mod.default.render({{ model, el: document.getElementById("host") }});
window.mxnbRenderMs = performance.now() - t0;
</script></body></html>
"""


def _plain(v: Any) -> Any:
    if isinstance(v, bytes | bytearray | memoryview):
        return {"__bytes__": base64.b64encode(bytes(v)).decode("ascii")}
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def write_page(widget: TraceWidget, path: Path) -> Path:
    state = {"trace": widget.trace, "png_tail": ""}
    path.write_text(
        PAGE.format(
            css=str(widget._css),  # anywidget has read the file into the class
            state=json.dumps(_plain(state)),
            esm=json.dumps(str(widget._esm)),
        )
    )
    return path

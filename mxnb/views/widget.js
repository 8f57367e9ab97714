// mxnb trace widget: what every rank held before and after each mx.distributed op.
// A plain ES module for anywidget (no build step). Snapshots arrive as binary
// buffers (DataView); see mxnb/snapshot.py for the encodings.

const CMAP = [[24, 32, 84], [35, 100, 160], [40, 160, 150], [150, 205, 95], [250, 235, 150]];
const QMAX = 65534;
const QNAN = 65535;
const PANEL_W = 220;
const GAP = 12;
const PLOT = 190;
const TABLE_MAX = 64;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function bufferOf(data) {
  if (!data) return new ArrayBuffer(0);
  if (data instanceof ArrayBuffer) return data;
  if (ArrayBuffer.isView(data)) {
    return data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
  }
  return new ArrayBuffer(0);
}

function fmt(v, dtype) {
  if (dtype === "bool") return v ? "True" : "False";
  if (typeof v === "string") return v;
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(6)));
}

// -> {nums: Float64Array (for drawing), texts: string[] (exact display), shape}
function decode(snap) {
  const buf = bufferOf(snap.data);
  const n = snap.dshape.reduce((a, b) => a * b, 1);
  let nums;
  let texts = null;
  if (snap.enc === "f8") {
    nums = new Float64Array(buf);
  } else if (snap.enc === "i8" || snap.enc === "u8") {
    const big = snap.enc === "i8" ? new BigInt64Array(buf) : new BigUint64Array(buf);
    nums = Float64Array.from(big, Number);
    texts = Array.from(big, String);
  } else if (snap.enc === "c8") {
    const f = new Float32Array(buf);
    nums = new Float64Array(n);
    texts = [];
    for (let i = 0; i < n; i++) {
      const re = f[2 * i];
      const im = f[2 * i + 1];
      nums[i] = Math.hypot(re, im);
      texts.push(`${fmt(re)}${im < 0 ? "-" : "+"}${fmt(Math.abs(im))}j`);
    }
  } else {
    const q = new Uint16Array(buf);
    const step = (snap.hi - snap.lo) / QMAX;
    nums = new Float64Array(n);
    for (let i = 0; i < n; i++) nums[i] = q[i] === QNAN ? NaN : snap.lo + q[i] * step;
  }
  if (!texts) texts = Array.from(nums, (v) => fmt(v, snap.dtype));
  return { nums, texts, shape: snap.dshape };
}

function color(v, lo, hi) {
  if (!Number.isFinite(v)) return [190, 190, 190];
  let t = hi > lo ? (v - lo) / (hi - lo) : 0;
  t = Math.min(1, Math.max(0, t)) * (CMAP.length - 1);
  const i = Math.min(Math.floor(t), CMAP.length - 2);
  const f = t - i;
  return CMAP[i].map((c, k) => Math.round(c * (1 - f) + CMAP[i + 1][k] * f));
}

function shapeText(shape) {
  return `(${shape.join(", ")}${shape.length === 1 ? "," : ""})`;
}

// The 2-D (or 1-D) slice of a decoded array picked by `index` on leading axes.
function slice(dec, index) {
  const shape = dec.shape;
  if (shape.length <= 2) return { ...dec, offset: 0 };
  const inner = shape[shape.length - 2] * shape[shape.length - 1];
  let offset = 0;
  let stride = inner;
  for (let a = shape.length - 3; a >= 0; a--) {
    offset += Math.min(index[a] || 0, shape[a] - 1) * stride;
    stride *= shape[a];
  }
  return { nums: dec.nums.subarray(offset, offset + inner), texts: dec.texts.slice(offset, offset + inner), shape: shape.slice(-2), offset };
}

function heatmap(view, snap, lo, hi, readout) {
  const [h, w] = view.shape;
  const canvas = el("canvas", "mxnb-plot");
  canvas.width = w;
  canvas.height = h;
  const scale = PLOT / Math.max(h, w);
  canvas.style.width = `${Math.max(1, Math.round(w * scale))}px`;
  canvas.style.height = `${Math.max(1, Math.round(h * scale))}px`;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    const [r, g, b] = color(view.nums[i], lo, hi);
    img.data.set([r, g, b, 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
  canvas.addEventListener("mousemove", (ev) => {
    const box = canvas.getBoundingClientRect();
    const j = Math.min(w - 1, Math.floor(((ev.clientX - box.left) / box.width) * w));
    const i = Math.min(h - 1, Math.floor(((ev.clientY - box.top) / box.height) * h));
    const v = view.texts[i * w + j];
    const [fr, fc] = snap.factors.slice(-2);
    readout.textContent = snap.exact
      ? `[${i}, ${j}] = ${v}`
      : `rows ${i * fr}-${(i + 1) * fr - 1}, cols ${j * fc}-${(j + 1) * fc - 1}: mean ${v}`;
  });
  return canvas;
}

function bars(view, snap, lo, hi, readout) {
  const n = view.nums.length;
  const canvas = el("canvas", "mxnb-plot");
  canvas.width = PLOT;
  canvas.height = 90;
  const ctx = canvas.getContext("2d");
  const base = Math.min(Math.max(0, lo), hi);
  const span = hi - lo || 1;
  const y = (v) => ((hi - v) / span) * (canvas.height - 2) + 1;
  const bw = canvas.width / n;
  for (let k = 0; k < n; k++) {
    const v = view.nums[k];
    if (!Number.isFinite(v)) continue;
    const [r, g, b] = color(v, lo, hi);
    ctx.fillStyle = `rgb(${r},${g},${b})`;
    const clamp = (u) => Math.min(hi, Math.max(lo, u)); // outliers: to the edge, not off it
    const top = y(clamp(Math.max(v, base)));
    ctx.fillRect(k * bw, top, Math.max(1, bw - (bw > 3 ? 1 : 0)), Math.max(1, y(clamp(Math.min(v, base))) - top));
  }
  canvas.addEventListener("mousemove", (ev) => {
    const box = canvas.getBoundingClientRect();
    const k = Math.min(n - 1, Math.floor(((ev.clientX - box.left) / box.width) * n));
    const f = snap.factors[snap.factors.length - 1];
    readout.textContent = snap.exact ? `[${k}] = ${view.texts[k]}` : `${k * f}-${(k + 1) * f - 1}: mean ${view.texts[k]}`;
  });
  return canvas;
}

function table(view, dtype) {
  const t = el("table", "mxnb-values");
  const [rows, cols] = view.shape.length === 2 ? view.shape : [1, view.texts.length];
  for (let i = 0; i < rows; i++) {
    const tr = el("tr");
    for (let j = 0; j < cols; j++) tr.appendChild(el("td", "", view.texts[i * cols + j]));
    t.appendChild(tr);
  }
  t.dataset.dtype = dtype;
  const wrap = el("div", "mxnb-values-wrap"); // wide numbers scroll inside the panel
  wrap.appendChild(t);
  return wrap;
}

function sideView(panel, side, ctx) {
  const box = el("div", `mxnb-side mxnb-${side}`);
  const snap = panel[side];
  const state = panel[`${side}_state`];
  box.appendChild(el("div", "mxnb-label", `${side}: ${side === "before" ? panel.in : panel.out}`));
  if (!snap) {
    box.appendChild(el("div", `mxnb-state mxnb-state-${state}`, panel[`${side}_text`]));
    return box;
  }
  const st = snap.stats;
  const dec = decode(snap);
  const readout = el("div", "mxnb-readout", "");
  const n = dec.nums.length;
  if (snap.shape.length === 0 || (n === 1 && snap.exact)) {
    box.appendChild(el("div", "mxnb-scalar", dec.texts[0]));
  } else if (snap.shape.length === 1) {
    box.appendChild(bars(dec, snap, ctx.lo, ctx.hi, readout));
  } else {
    box.appendChild(heatmap(slice(dec, ctx.index), snap, ctx.lo, ctx.hi, readout));
  }
  if (snap.shape.length > 0) box.appendChild(readout);
  if (!snap.exact) {
    box.appendChild(el("div", "mxnb-sampled", `downsampled ${snap.shape.join("x")} -> ${snap.dshape.join("x")} (block means)`));
  }
  if (st.min !== null && n > 1) {
    box.appendChild(el("div", "mxnb-stats", `min ${fmt(st.min)} max ${fmt(st.max)} mean ${fmt(st.mean)} (exact)`));
  }
  if (st.nan || st.inf) box.appendChild(el("div", "mxnb-stats", `${st.nan} nan, ${st.inf} inf`));
  if (snap.exact && n > 1 && n <= TABLE_MAX) box.appendChild(table(snap.shape.length > 2 ? slice(dec, ctx.index) : dec, snap.dtype));
  return box;
}

// One colour scale for all ranks and both sides of a step, over the values
// drawn: exact extremes, or the range of the block means when downsampled.
function scaleOf(step) {
  // the kernel's robust scale (outliers clipped and named), the same as the picture's
  if (step.scale) return [step.scale.lo, step.scale.hi];
  let lo = Infinity;
  let hi = -Infinity;
  for (const p of step.panels) {
    if (!p) continue;
    for (const side of ["before", "after"]) {
      const s = p[side];
      if (!s || s.stats.min === null) continue;
      lo = Math.min(lo, s.exact ? s.stats.min : s.lo);
      hi = Math.max(hi, s.exact ? s.stats.max : s.hi);
    }
  }
  return Number.isFinite(lo) ? [lo, hi] : [0, 1];
}

function arrows(step, ranks) {
  const ns = "http://www.w3.org/2000/svg";
  const width = ranks.length * (PANEL_W + GAP);
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "mxnb-arrows");
  svg.setAttribute("width", width);
  svg.setAttribute("height", step.transfers.length ? 56 : 0);
  const defs = document.createElementNS(ns, "defs");
  defs.innerHTML = '<marker id="mxnb-head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="currentColor"/></marker>';
  svg.appendChild(defs);
  const x = (r) => ranks.indexOf(r) * (PANEL_W + GAP) + PANEL_W / 2;
  step.transfers.forEach((t, k) => {
    if (t.src === null || t.dst === null || ranks.indexOf(t.src) < 0 || ranks.indexOf(t.dst) < 0) return;
    const x1 = x(t.src) + 6;
    const x2 = x(t.dst) - 6;
    const lift = 12 + (k % 3) * 10;
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", `M${x1},54 C${x1},${54 - lift * 2} ${x2},${54 - lift * 2} ${x2},54`);
    path.setAttribute("class", `mxnb-arrow${t.note ? " mxnb-arrow-bad" : ""}`);
    path.setAttribute("marker-end", "url(#mxnb-head)");
    path.dataset.src = t.src;
    path.dataset.dst = t.dst;
    const title = document.createElementNS(ns, "title");
    title.textContent = `rank ${t.src} -> rank ${t.dst}: ${t.what}${t.note ? ` (${t.note})` : ""}`;
    path.appendChild(title);
    svg.appendChild(path);
  });
  return svg;
}

// The picture and the text summary displayed just before this widget (see
// trace_widget.py) are for viewers without a kernel; the live view replaces
// them. Only outputs that are exactly ours are hidden: the summary's text and
// the end of the PNG's base64 must match.
function hideStatic(host, model) {
  const tail = model.get("png_tail");
  const summary = ((model.get("trace") || {}).summary || "").trim();
  const child = host.closest(".jp-OutputArea-child, .output_area");
  if (!child || !tail) return false;
  const text = child.previousElementSibling;
  const pic = text && text.previousElementSibling;
  const pre = text && text.querySelector("pre");
  const img = pic && pic.querySelector("img");
  if (!pre || !img || pre.textContent.trim() !== summary) return false;
  if (!(img.getAttribute("src") || "").replace(/\s/g, "").endsWith(tail)) return false;
  for (const node of [pic, text]) {
    node.style.display = "none";
    node.dataset.mxnbHidden = "static";
  }
  return true;
}

function render({ model, el: host }) {
  const root = el("div", "mxnb-trace");
  host.appendChild(root);
  // the view may be attached to the page only after render() returns
  let tries = 0;
  const hide = () => {
    if (!hideStatic(host, model) && ++tries < 8) setTimeout(hide, 50 * 2 ** tries);
  };
  hide();
  let timer = null;
  const index = [];

  function set(name, value) {
    model.set(name, value);
    model.save_changes();
  }

  function draw() {
    const data = model.get("trace") || {};
    const steps = data.steps || [];
    const ranks = data.ranks || [];
    root.replaceChildren();
    if (!data.enabled) {
      root.appendChild(el("div", "mxnb-empty", "Recording was off for this cell (--no-trace)."));
      return;
    }
    if (!steps.length) {
      root.appendChild(el("div", "mxnb-empty", "This cell called no mx.distributed operation."));
      return;
    }
    const k = Math.min(Math.max(0, model.get("step")), steps.length - 1);
    const phase = model.get("phase");
    const step = steps[k];

    const bar = el("div", "mxnb-toolbar");
    const prev = el("button", "mxnb-prev", "\u25C0");
    const next = el("button", "mxnb-next", "\u25B6");
    prev.disabled = k === 0;
    next.disabled = k === steps.length - 1;
    prev.onclick = () => set("step", k - 1);
    next.onclick = () => set("step", k + 1);
    const pick = el("select", "mxnb-pick");
    steps.forEach((s, i) => {
      const o = el("option", "", `#${s.index} ${s.op} - ${s.site}`.slice(0, 90));
      o.value = i;
      o.selected = i === k;
      pick.appendChild(o);
    });
    pick.onchange = () => set("step", Number(pick.value));
    bar.append(prev, el("span", "mxnb-count", `op ${k + 1} of ${steps.length}`), next, pick);
    for (const p of ["before", "after"]) {
      const b = el("button", `mxnb-phase mxnb-phase-${p}${phase === p ? " mxnb-on" : ""}`, p);
      b.onclick = () => set("phase", p);
      bar.appendChild(b);
    }
    const anim = el("button", `mxnb-animate${timer ? " mxnb-on" : ""}`, timer ? "stop" : "animate");
    anim.onclick = () => {
      if (timer) {
        clearInterval(timer);
        timer = null;
        draw();
      } else {
        timer = setInterval(() => set("phase", model.get("phase") === "before" ? "after" : "before"), 1100);
        set("phase", "before");
      }
    };
    bar.appendChild(anim);
    root.appendChild(bar);

    const info = el("div", "mxnb-info");
    info.appendChild(el("span", "mxnb-op", `#${step.index} ${step.op}`));
    info.appendChild(el("span", "mxnb-group", ` on ${step.group_text}`));
    info.appendChild(el("div", "mxnb-site", step.site));
    for (const t of step.transfers) {
      const line = `rank ${t.src} \u2192 rank ${t.dst}: ${t.what}${t.note ? ` \u2014 ${t.note}` : ""}`;
      info.appendChild(el("div", `mxnb-transfer${t.note ? " mxnb-bad" : ""}`, line));
    }
    if (step.inputs_note) info.appendChild(el("div", "mxnb-bad mxnb-inputs", step.inputs_note));
    if (step.mismatch.length) info.appendChild(el("div", "mxnb-bad mxnb-mismatch", step.mismatch_text));
    root.appendChild(info);

    const shapes = step.panels.filter((p) => p && p[phase]).map((p) => p[phase].dshape);
    const nd = shapes.find((s) => s.length > 2);
    if (nd) {
      const sel = el("div", "mxnb-slices");
      for (let a = 0; a < nd.length - 2; a++) {
        const lab = el("label", "", `axis ${a}: `);
        const inp = el("input");
        inp.type = "range";
        inp.min = 0;
        inp.max = nd[a] - 1;
        inp.value = index[a] || 0;
        inp.oninput = () => {
          index[a] = Number(inp.value);
          draw();
        };
        lab.append(inp, el("span", "", ` ${index[a] || 0}`));
        sel.appendChild(lab);
      }
      root.appendChild(sel);
    }

    const [lo, hi] = scaleOf(step);
    const stage = el("div", "mxnb-stage");
    stage.appendChild(arrows(step, ranks));
    const panels = el("div", "mxnb-panels");
    panels.style.gap = `${GAP}px`;
    ranks.forEach((r, i) => {
      const p = step.panels[i];
      const box = el("div", "mxnb-rank");
      box.dataset.rank = r;
      box.style.width = `${PANEL_W}px`;
      box.appendChild(el("div", "mxnb-rank-title", `rank ${r}`));
      if (!p) {
        box.classList.add("mxnb-absent");
        const why = step.members.includes(r) ? "no part in this op" : "not in this group";
        box.appendChild(el("div", "mxnb-state", why));
      } else {
        // the call only builds MLX's lazy graph; the data moves in the evaluation
        box.appendChild(el("div", "mxnb-opname", `${p.op} \u00b7 call ${p.call_ms} ms`));
        box.appendChild(el("div", `mxnb-time${p.eval_ms === null ? " mxnb-untimed" : ""}`, p.time_text));
        if (step.mismatch.includes(r)) box.classList.add("mxnb-differs");
        box.appendChild(sideView(p, phase, { lo, hi, index }));
        if (p.expected_text) box.appendChild(el("div", "mxnb-expected", `expected ${p.expected_text}`));
      }
      panels.appendChild(box);
    });
    stage.appendChild(panels);
    root.appendChild(stage);
    root.appendChild(el("div", "mxnb-scale", `colour scale ${fmt(lo)} \u2026 ${fmt(hi)} (shared by all ranks in this op)`));
    if (step.scale && step.scale.note) root.appendChild(el("div", "mxnb-scale mxnb-clipped", step.scale.note));
    for (const note of data.notes || []) root.appendChild(el("div", "mxnb-note", note));
  }

  const redraw = () => draw();
  model.on("change:step", redraw);
  model.on("change:phase", redraw);
  model.on("change:trace", redraw);
  draw();
  return () => {
    tries = Infinity; // stop looking for the static outputs
    if (timer) clearInterval(timer);
    model.off("change:step", redraw);
    model.off("change:phase", redraw);
    model.off("change:trace", redraw);
  };
}

export default { render };

// Values: snapshots decoded from their binary buffers and drawn as numbered
// cells (small exact arrays) or as a heatmap / bars (large or downsampled).
// Colours come from the kernel's palette (mxnb/views/palette.py).

const QMAX = 65534;
const QNAN = 65535;
const GRID_MAX = 64; // elements drawn as numbered cells
const PLOT = 200; // px of a heatmap's longer side, or of the bars

// A wording from Python (data.words) with its {names} filled in.
function fill(template, at) {
  return template.replace(/\{(\w+)\}/g, (_, k) => String(at[k]));
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function bufferOf(data) {
  if (!data) return new ArrayBuffer(0);
  if (data instanceof ArrayBuffer) return data;
  if (ArrayBuffer.isView(data)) return data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
  return new ArrayBuffer(0);
}

function fmt(v, dtype) {
  if (dtype === "bool") return v ? "True" : "False";
  if (typeof v === "string") return v;
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(6)));
}

const decoded = new WeakMap(); // a snapshot is decoded once, whatever is redrawn

// -> {nums: Float64Array (for drawing), texts: string[] (exact display), shape}
function decode(snap) {
  if (decoded.has(snap)) return decoded.get(snap);
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
  const out = { nums, texts, shape: snap.dshape };
  decoded.set(snap, out);
  return out;
}

function hexRgb(h) {
  return [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16));
}

// value -> [r, g, b] on the palette's ramp; NaN grey; out of range saturates
function valueColor(v, scale, ramp) {
  if (!Number.isFinite(v)) return [190, 190, 190];
  let t = scale.hi > scale.lo ? (v - scale.lo) / (scale.hi - scale.lo) : 0.5;
  t = Math.min(1, Math.max(0, t)) * (ramp.length - 1);
  const i = Math.min(Math.floor(t), ramp.length - 2);
  const f = t - i;
  return ramp[i].map((c, k) => Math.round(c * (1 - f) + ramp[i + 1][k] * f));
}

function inkOn([r, g, b]) {
  return 0.299 * r + 0.587 * g + 0.114 * b < 140 ? "#fff" : "#111";
}

// Rows of the first axis: a 1-D array's elements, a 2-D array's rows.
function rowsOf(shape) {
  return shape.length === 0 ? 1 : shape[0];
}

// Cells with numbers, split into tagged blocks (provenance) along the first axis.
// blocks: [{rank, start, end, tag}] in rows of the array; opts.cell(i, cellEl) hooks hover.
function grid(snap, ctx, blocks, opts) {
  const dec = decode(snap);
  const shape = snap.shape;
  // more than 2-D: the first axis by the rest, so that every value is in sight
  const per = shape.length >= 2 ? dec.nums.length / rowsOf(shape) : 1; // elements per row
  const wrap = el("div", `mxnb-grid mxnb-grid-${shape.length >= 2 ? "2d" : "1d"}`);
  const parts = blocks.length ? blocks : [{ rank: null, start: 0, end: rowsOf(shape), tag: "" }];
  for (const b of parts) {
    const box = el("div", "mxnb-block");
    if (b.rank !== null) {
      box.style.borderColor = ctx.rankColor(b.rank);
      box.dataset.rank = b.rank;
      const tag = el("span", "mxnb-tag", b.tag);
      tag.style.background = ctx.rankColor(b.rank);
      box.appendChild(tag);
    }
    const cells = el("div", "mxnb-cells");
    // 2-D: a real grid, never squeezed below its numbers (the rows scroll sideways);
    // 1-D: the cells wrap onto more lines instead (widget.css)
    if (shape.length >= 2) cells.style.gridTemplateColumns = `repeat(${per}, max-content)`;
    for (let i = b.start * per; i < b.end * per; i++) {
      const rgb = valueColor(dec.nums[i], ctx.scale, ctx.ramp);
      const c = el("div", "mxnb-cell", dec.texts[i]);
      c.style.background = `rgb(${rgb.join(",")})`;
      c.style.color = inkOn(rgb);
      c.dataset.i = i;
      if (opts && opts.cell) opts.cell(i, c);
      cells.appendChild(c);
    }
    box.appendChild(cells);
    wrap.appendChild(box);
  }
  return wrap;
}

// A provenance part's words in `px` of stripe: never cut, shortened, or left to
// its tooltip.  Beside a heatmap (`tall`) the stripe is as wide as its words,
// so only the part's height limits them.
function stripeLabel(b, px, tall) {
  if (tall) return px >= 11 ? b.tag : "";
  const words = [b.tag, `rank ${b.rank}`, `${b.rank}`];
  const fits = words.find((w) => w.length * 5.5 + 6 <= px);
  return fits === undefined ? "" : fits;
}

// A heatmap (>= 2-D: its first 2-D slice) or bars (1-D), with a readout on hover
// and a stripe of rank colours beside it for provenance blocks.
function plot(snap, ctx, blocks) {
  const dec = decode(snap);
  const rounded = (snap.factors || []).every((f) => f === 1); // all values, at 16 bits
  const box = el("div", "mxnb-plotbox");
  const readout = el("div", "mxnb-readout", "point at the values");
  const canvas = el("canvas", "mxnb-plot");
  const shape = dec.shape;
  const two = shape.length >= 2;
  const h = two ? shape[0] : 60; // more than 2-D: the first axis by the rest
  const w = two ? dec.nums.length / shape[0] : dec.nums.length;
  canvas.width = w;
  canvas.height = h;
  const g = canvas.getContext("2d");
  const img = g.createImageData(w, h);
  if (two) {
    for (let i = 0; i < h * w; i++) img.data.set([...valueColor(dec.nums[i], ctx.scale, ctx.ramp), 255], 4 * i);
  } else {
    const { lo, hi } = ctx.scale;
    const y = (v) => Math.round(((hi - Math.min(hi, Math.max(lo, v))) / (hi - lo || 1)) * (h - 1));
    const base = y(Math.min(Math.max(0, lo), hi));
    for (let j = 0; j < w; j++) {
      const v = dec.nums[j];
      if (!Number.isFinite(v)) continue;
      const rgb = valueColor(v, ctx.scale, ctx.ramp);
      const [a, b] = [y(v), base].sort((p, q) => p - q);
      for (let i = a; i <= b; i++) img.data.set([...rgb, 255], 4 * (i * w + j));
    }
  }
  g.putImageData(img, 0, 0);
  const k = PLOT / Math.max(h, w);
  canvas.style.width = `${Math.max(40, Math.round(w * (two ? k : PLOT / w)))}px`;
  canvas.style.height = `${Math.max(8, Math.round(two ? h * k : 60))}px`;
  canvas.addEventListener("mousemove", (ev) => {
    const r = canvas.getBoundingClientRect();
    const j = Math.min(w - 1, Math.floor(((ev.clientX - r.left) / r.width) * w));
    const i = two ? Math.min(h - 1, Math.floor(((ev.clientY - r.top) / r.height) * h)) : 0;
    const f = snap.factors || [];
    const at = two ? `[${i}, ${j}]` : `[${j}]`;
    if (snap.exact) readout.textContent = `${at} = ${dec.texts[i * w + j]}`;
    else if (rounded) readout.textContent = `${at} \u2248 ${dec.texts[i * w + j]}`;
    else readout.textContent = `block ${at} of ${snap.shape.join("x")}: mean ${dec.texts[i * w + j]} (each cell averages ${f.join("x")})`;
  });
  const row = el("div", "mxnb-plotrow");
  if (blocks.length) {
    const stripe = el("div", two ? "mxnb-stripe" : "mxnb-stripe mxnb-stripe-h");
    const total = rowsOf(snap.shape);
    const along = parseInt(two ? canvas.style.height : canvas.style.width, 10);
    for (const b of blocks) {
      const s = el("div", "mxnb-stripe-part", stripeLabel(b, (along * (b.end - b.start)) / total, two));
      s.style.flex = `${b.end - b.start} 0 0`;
      s.style.background = ctx.rankColor(b.rank);
      s.title = `${b.tag}: rows ${b.start}-${b.end - 1} of ${total}`;
      stripe.appendChild(s);
    }
    if (two) stripe.style.height = canvas.style.height;
    else stripe.style.width = canvas.style.width;
    row.append(two ? stripe : canvas, two ? canvas : stripe);
  } else {
    row.appendChild(canvas);
  }
  box.append(row, readout);
  const st = snap.stats;
  if (!snap.exact) {
    const said = rounded ? fill(ctx.sampled.rounded, ctx.sampled) : fill(ctx.sampled.blocks, { shape: snap.shape.join("x"), dshape: snap.dshape.join("x") });
    box.appendChild(el("div", "mxnb-sampled", said)); // words: SAMPLED_TEXT (mxnb/trace/text.py)
  }
  if (st.min !== null) box.appendChild(el("div", "mxnb-stats", `min ${fmt(st.min)} \u00b7 max ${fmt(st.max)} \u00b7 mean ${fmt(st.mean)} (exact)`));
  if (st.nan || st.inf) box.appendChild(el("div", "mxnb-stats", `${st.nan} nan, ${st.inf} inf`));
  return box;
}

// One side of one rank: numbered cells when few and exact, else a plot.
function valueView(snap, ctx, blocks, opts) {
  const n = snap.shape.reduce((a, b) => a * b, 1);
  if (snap.exact && n <= GRID_MAX) return grid(snap, ctx, blocks, opts);
  return plot(snap, ctx, blocks);
}

// mxnb trace widget: the whole cell as a timeline, and the selected op as a
// row per rank (input, result, provenance, expected), with the ring algorithm
// step by step. A plain ES module for anywidget, concatenated from
// values.js, timeline.js, opview.js, ring.js and this file (no build step).
// What is selected lives here in the browser: no kernel round trip.

function context(data) {
  const pal = data.palette;
  const ranks = pal.ranks.map(hexRgb);
  return {
    ramp: pal.values.map(hexRgb),
    states: pal.states,
    laneWords: Object.fromEntries(data.words.lanes),
    laneOrder: data.words.lanes.map(([st]) => st),
    sampled: data.words.sampled,
    rankColor: (r) => pal.ranks[((r % ranks.length) + ranks.length) % ranks.length],
    inkOnRank: (r) => inkOn(ranks[((r % ranks.length) + ranks.length) % ranks.length]),
  };
}

// The picture and text summary displayed just before this widget are for
// viewers without a kernel; the live view hides them. Only outputs that are
// exactly ours: the summary's length and ends, and the PNG's last bytes.
function hideStatic(host, model) {
  const tail = model.get("png_tail");
  const data = model.get("trace") || {};
  const child = host.closest(".jp-OutputArea-child, .output_area");
  if (!child || !tail || !data.summary_ends) return false;
  const text = child.previousElementSibling;
  const pic = text && text.previousElementSibling;
  const pre = text && text.querySelector("pre");
  const img = pic && pic.querySelector("img");
  if (!pre || !img) return false;
  const said = pre.textContent.trim();
  const [head, end] = data.summary_ends;
  if (said.length !== data.summary_len || !said.startsWith(head) || !said.endsWith(end)) return false;
  if (!(img.getAttribute("src") || "").replace(/\s/g, "").endsWith(tail)) return false;
  for (const node of [pic, text]) {
    node.style.display = "none";
    node.dataset.mxnbHidden = "static";
  }
  return true;
}

function legend(ctx) {
  const box = el("div", "mxnb-legend");
  for (const st of ctx.laneOrder) {
    const words = ctx.laneWords[st];
    const [fill, ink, mark] = ctx.states[st];
    const sw = el("span", `mxnb-swatch mxnb-st-${st}`, mark || "\u00a0");
    sw.style.background = fill;
    sw.style.color = ink;
    const item = el("span", "mxnb-legend-item");
    item.append(sw, el("span", "", ` ${words.split(" (")[0]}`));
    box.appendChild(item);
  }
  return box;
}

function render({ model, el: host }) {
  const root = el("div", "mxnb-trace");
  root.tabIndex = 0;
  root.dataset.lmSuppressShortcuts = "true"; // arrows step the view, not the notebook
  host.appendChild(root);
  let tries = 0;
  const hide = () => {
    if (!hideStatic(host, model) && ++tries < 8) setTimeout(hide, 50 * 2 ** tries);
  };
  hide();
  const view = { k: 0, iter: 0, point: null, ring: false, round: 0 }; // point: null = a telling element
  let data;
  let ctx;
  let line;
  let opHost;
  let opNode;

  function shownAt(k) {
    const [c, f] = data.timeline.shown[k];
    const fold = f >= 0 ? data.timeline.folds[f] : null;
    const iter = fold ? Math.min(view.iter, fold[2] - 1) : 0;
    return { col: data.timeline.columns[c + (fold ? iter * fold[1] : 0)], fold, iter };
  }

  function drawOp() {
    const { col, fold, iter } = shownAt(view.k);
    const steps = col.steps.map((i) => data.steps[i]);
    const nav = el("div", "mxnb-nav");
    const prev = el("button", "mxnb-prev", "\u25C0 op");
    const next = el("button", "mxnb-next", "op \u25B6");
    prev.disabled = view.k === 0;
    next.disabled = view.k === data.timeline.shown.length - 1;
    prev.onclick = () => select(view.k - 1);
    next.onclick = () => select(view.k + 1);
    nav.append(prev, next, el("span", "mxnb-count", `op ${view.k + 1} of ${data.timeline.shown.length} in the timeline`));
    if (fold) {
      const up = el("button", "mxnb-iter-prev", "\u25B2");
      const down = el("button", "mxnb-iter-next", "\u25BC");
      up.disabled = iter === 0;
      down.disabled = iter === fold[2] - 1;
      up.onclick = () => iterate(-1);
      down.onclick = () => iterate(1);
      nav.append(up, down, el("span", "mxnb-iter", `repeat ${iter + 1} of ${fold[2]} (a loop, folded)`));
    }
    const ringStep = steps.find((s) => s.ring);
    if (ringStep) {
      const b = el("button", `mxnb-ring-toggle${view.ring ? " mxnb-on" : ""}`, view.ring ? "hide the ring algorithm" : "ring algorithm, step by step (r)");
      b.onclick = () => toggleRing();
      nav.appendChild(b);
    }
    const ov = opView(data, steps, ctx, view, (i) => {
      view.point = i;
      ov.point(i);
    });
    const parts = [nav, ov.node];
    if (ringStep && view.ring) {
      view.round = Math.min(view.round, ringStep.ring.rounds.length);
      parts.push(ringView(data, ringStep, ctx, view.round, (k) => { view.round = k; drawOp(); }));
    }
    const scale = steps[0].scale;
    parts.push(el("div", "mxnb-scale", `value colours: ${fmt(scale.lo)} (dark) \u2026 ${fmt(scale.hi)} (light), one scale for every rank in this op`));
    if (scale.note) parts.push(el("div", "mxnb-scale mxnb-clipped", scale.note));
    const node = el("div", "mxnb-opview");
    node.append(...parts);
    if (opNode) opNode.replaceWith(node);
    else opHost.appendChild(node);
    opNode = node;
  }

  function select(k) {
    const n = data.timeline.shown.length;
    k = Math.max(0, Math.min(n - 1, k));
    const sameFold = data.timeline.shown[k][1] >= 0 && data.timeline.shown[k][1] === data.timeline.shown[view.k][1];
    if (!sameFold) view.iter = 0;
    if (k !== view.k) {
      view.round = 0;
      view.point = null;
    }
    view.k = k;
    line.select(k);
    drawOp();
  }

  function iterate(d) {
    const { fold } = shownAt(view.k);
    if (!fold) return;
    view.iter = Math.max(0, Math.min(fold[2] - 1, view.iter + d));
    drawOp();
  }

  function toggleRing() {
    view.ring = !view.ring;
    drawOp();
  }

  function build() {
    data = model.get("trace") || {};
    ctx = context(data);
    root.replaceChildren();
    opNode = null;
    root.appendChild(el("div", "mxnb-headline", data.headline || "mxnb trace"));
    if (!data.enabled || !(data.steps || []).length) {
      root.appendChild(el("div", "mxnb-empty", data.enabled ? "This cell called no mx.distributed operation." : "Recording was off for this cell (--no-trace)."));
      return;
    }
    line = timeline(data, ctx, (k) => select(k));
    opHost = el("div", "mxnb-ophost");
    root.append(line.node, legend(ctx), opHost);
    for (const note of data.notes || []) root.appendChild(el("div", "mxnb-note", note));
    root.appendChild(el("div", "mxnb-keys", "keys (click the view first): \u2190 \u2192 op \u00b7 \u2191 \u2193 repeat of a loop, or ring step \u00b7 r ring algorithm \u00b7 Home / End"));
    select(Math.min(view.k, data.timeline.shown.length - 1));
  }

  root.addEventListener("keydown", (ev) => {
    if (!data || !line || ev.target.tagName === "INPUT") return;
    const ringOn = view.ring && shownAt(view.k).col.steps.some((i) => data.steps[i].ring);
    const keys = {
      ArrowLeft: () => select(view.k - 1),
      ArrowRight: () => select(view.k + 1),
      Home: () => select(0),
      End: () => select(data.timeline.shown.length - 1),
      ArrowUp: () => (ringOn ? ((view.round = Math.max(0, view.round - 1)), drawOp()) : iterate(-1)),
      ArrowDown: () => (ringOn ? ((view.round += 1), drawOp()) : iterate(1)),
      r: () => toggleRing(),
    };
    const act = keys[ev.key];
    if (!act) return;
    ev.preventDefault();
    ev.stopPropagation();
    act();
  });
  const rebuild = () => build();
  model.on("change:trace", rebuild);
  build();
  return () => {
    tries = Infinity; // stop looking for the static outputs
    model.off("change:trace", rebuild);
  };
}

// the rank-range wording, for the test that holds it to mxnb.protocol.wording's
export const wording = { ranksText };
export default { render };

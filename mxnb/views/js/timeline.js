// The timeline: ranks as lanes, ops in call order as columns, repeats folded.
// Drawn once per trace as one SVG string; selecting an op only moves the
// highlight.

const LANE_H = 24;
const MIN_COL_W = 30; // wider when an op's name needs it (see colWidth)
const CHAR_W = 6.2; // px per character of a 10 px column name, rounded up
const LABEL_W = 64;
const TOP = 22;
const FOOT = 22;

function esc(s) {
  return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

// One width for every column of a trace, wide enough for its longest op name:
// "gather" must not run into the name beside it.
function colWidth(names) {
  let most = 0;
  for (const n of names) most = Math.max(most, n.length);
  return Math.max(MIN_COL_W, Math.ceil(most * CHAR_W) + 6);
}

// data.timeline.shown: [[column, fold or -1]]; returns {node, select(k), width}
function timeline(data, ctx, onPick) {
  const tl = data.timeline;
  const nameOf = (c) => data.steps[tl.columns[c].steps[0]].head;
  const colW = colWidth(tl.shown.map(([c]) => nameOf(c)));
  const ranks = data.ranks;
  const lane = new Map(ranks.map((r, i) => [r, TOP + i * LANE_H]));
  const width = LABEL_W + tl.shown.length * colW + 8;
  const height = TOP + ranks.length * LANE_H + FOOT;
  const out = [];
  out.push(`<rect class="mxnb-sel" x="-100" y="2" width="${colW}" height="${height - 4}" rx="4"/>`);
  ranks.forEach((r) => {
    const y = lane.get(r);
    out.push(`<line x1="${LABEL_W - 4}" x2="${width}" y1="${y + LANE_H / 2}" y2="${y + LANE_H / 2}" stroke="${ctx.rankColor(r)}" stroke-opacity="0.35"/>`);
    out.push(`<rect x="2" y="${y + 3}" width="${LABEL_W - 10}" height="${LANE_H - 6}" rx="9" fill="${ctx.rankColor(r)}"/>`);
    out.push(`<text class="mxnb-lane" x="${(LABEL_W - 6) / 2}" y="${y + LANE_H / 2 + 4}" fill="${ctx.inkOnRank(r)}">rank ${r}</text>`);
  });
  tl.shown.forEach(([c, f], k) => {
    const col = tl.columns[c];
    const x = LABEL_W + k * colW;
    const steps = col.steps.map((i) => data.steps[i]);
    const parts = [];
    const w = (colW - 6) / steps.length;
    steps.forEach((s, j) => {
      const cx = x + 3 + j * w;
      const lanes = Object.entries(s.lanes).map(([r, st]) => [Number(r), st]);
      const ys = lanes.map(([r]) => lane.get(r)).filter((y) => y !== undefined);
      if (!s.transfers.length && ys.length > 1) {
        const y0 = Math.min(...ys);
        const y1 = Math.max(...ys) + LANE_H;
        parts.push(`<rect class="mxnb-span" x="${cx}" y="${y0 + 1}" width="${w}" height="${y1 - y0 - 2}" rx="5"/>`);
      }
      for (const [r, st] of lanes) {
        const y = lane.get(r);
        if (y === undefined) continue;
        const [fill, ink, mark] = ctx.states[st];
        const dash = st === "missing" ? ' stroke-dasharray="3 2"' : "";
        parts.push(`<rect class="mxnb-cellst mxnb-st-${st}" data-rank="${r}" x="${cx + 2}" y="${y + 4}" width="${w - 4}" height="${LANE_H - 8}" rx="3" fill="${fill}"${dash}/>`);
        if (mark) parts.push(`<text class="mxnb-mark" x="${cx + w / 2}" y="${y + LANE_H / 2 + 4}" fill="${ink}">${esc(mark)}</text>`);
      }
      const drawn = s.transfers.filter((t) => t.drawn); // each message once, where it lands
      drawn.forEach((t, n) => {
        if (!lane.has(t.src) || !lane.has(t.dst)) return;
        const ax = cx + w / 2 + (n - (drawn.length - 1) / 2) * Math.min(5, w / (drawn.length + 1));
        const y0 = lane.get(t.src) + LANE_H / 2;
        const y1 = lane.get(t.dst) + LANE_H / 2;
        const dir = y1 > y0 ? 1 : -1;
        const bad = t.note ? ' stroke-dasharray="4 3"' : "";
        const ink = t.note ? ctx.states.wrong[0] : ctx.rankColor(t.src);
        const tip = y1 - dir * 5;
        parts.push(`<g class="mxnb-tarrow" data-src="${t.src}" data-dst="${t.dst}"><line x1="${ax}" y1="${y0 + dir * 6}" x2="${ax}" y2="${tip - dir * 5}" stroke="${ink}" stroke-width="2"${bad}/>`
          + `<path d="M${ax - 4},${tip - dir * 6} L${ax + 4},${tip - dir * 6} L${ax},${tip} z" fill="${ink}"/></g>`);
      });
    });
    const fold = f >= 0 ? tl.folds[f] : null;
    const times = fold ? ` \u2014 ran ${fold[2]} times (a loop, folded)` : "";
    const title = `#${steps.map((s) => s.index).join(", #")} ${col.name}, ${col.site}: ${ctx.laneWords[col.state]}${times}`;
    out.push(`<g class="mxnb-col mxnb-col-${col.state}" data-k="${k}" data-col="${c}"><title>${esc(title)}</title>`);
    out.push(`<rect x="${x}" y="0" width="${colW}" height="${height}" fill="transparent"/>`);
    out.push(`<text class="mxnb-colname" x="${x + colW / 2}" y="14">${esc(nameOf(c))}</text>`);
    out.push(parts.join(""), "</g>");
  });
  // folds: a bracket under the columns of one iteration, with the count
  let k = 0;
  while (k < tl.shown.length) {
    const f = tl.shown[k][1];
    if (f < 0) { k++; continue; }
    let e = k;
    while (e + 1 < tl.shown.length && tl.shown[e + 1][1] === f) e++;
    const x0 = LABEL_W + k * colW + 2;
    const x1 = LABEL_W + (e + 1) * colW - 2;
    const y = TOP + ranks.length * LANE_H + 4;
    out.push(`<path class="mxnb-bracket" d="M${x0},${y} v5 H${x1} v-5"/>`);
    out.push(`<text class="mxnb-fold" data-fold="${f}" x="${(x0 + x1) / 2}" y="${y + 16}">\u00d7${tl.folds[f][2]}</text>`);
    k = e + 1;
  }
  const box = el("div", "mxnb-timeline");
  box.innerHTML = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" role="img" aria-label="timeline of ${tl.columns.length} ops">`
    + out.join("") + "</svg>";
  const svg = box.firstChild;
  svg.addEventListener("click", (ev) => {
    const g = ev.target.closest("[data-k]");
    if (g) onPick(Number(g.dataset.k));
  });
  const sel = svg.querySelector(".mxnb-sel");
  return {
    node: box,
    select(k) {
      sel.setAttribute("x", LABEL_W + k * colW);
      const left = LABEL_W + k * colW;
      if (left < box.scrollLeft + LABEL_W || left + colW > box.scrollLeft + box.clientWidth) {
        box.scrollLeft = Math.max(0, left - box.clientWidth / 2);
      }
      for (const g of svg.querySelectorAll(".mxnb-col.mxnb-on")) g.classList.remove("mxnb-on");
      const g = svg.querySelector(`[data-k="${k}"]`);
      if (g) g.classList.add("mxnb-on");
    },
  };
}

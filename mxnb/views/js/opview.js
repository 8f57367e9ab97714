// One op (a timeline column) at a glance: a row per rank, its input on the
// left and its result on the right, with where every value came from.

const REDUCE = { all_sum: "+", all_max: "max", all_min: "min" };
const COLLECTIVE = new Set(["all_sum", "all_max", "all_min", "all_gather", "sum_scatter"]);

function unravel(i, shape) {
  if (shape.length <= 1) return `[${i}]`;
  const idx = [];
  for (let a = shape.length - 1; a >= 0; a--) {
    idx.unshift(i % shape[a]);
    i = Math.floor(i / shape[a]);
  }
  return `[${idx.join(", ")}]`;
}

function rowsIn(snapOrType) {
  const shape = snapOrType.shape;
  return shape.length ? shape[0] : 1;
}

// The step (of a column's subgroup steps) in which rank r takes part, and its panel.
function partOf(steps, data, r) {
  const at = data.ranks.indexOf(r);
  for (const s of steps) if (s.panels[at]) return [s, s.panels[at]];
  return [steps.find((s) => s.members.includes(r)) || steps[0], null];
}

function sentTo(step, r) {
  return step.transfers.filter((t) => t.src === r);
}

function gotFrom(step, r) {
  return step.transfers.filter((t) => t.dst === r);
}

// A provenance tag in the words of words.tags (mxnb/trace/text.py TAG_TEXT).
function tag(data, kind, at) {
  return fill(data.words.tags[kind], at);
}

function blocksFor(data, step, r, side, snap) {
  const all = step.blocks.map(([rank, start, end]) => ({ rank, start, end }));
  const whole = (rank, text) => [{ rank, start: 0, end: rowsIn(snap), tag: text }];
  if (step.op === "all_gather" && side === "after") return all.map((b) => ({ ...b, tag: tag(data, "gathered", b) }));
  if (step.op === "sum_scatter" && side === "before") return all.map((b) => ({ ...b, tag: tag(data, "scattered", b) }));
  if (step.op === "sum_scatter" && side === "after") {
    const b = all.find((x) => x.rank === r);
    return b ? whole(r, tag(data, "sum_rows", { first: b.start, last: b.end - 1 })) : [];
  }
  const out = side === "before" ? sentTo(step, r) : gotFrom(step, r);
  if (out.length === 1) {
    const t = out[0];
    return side === "before" ? whole(t.dst, tag(data, "sent", { rank: t.dst })) : whole(t.src, tag(data, "received", { rank: t.src }));
  }
  return [];
}

const NO_TERMS = "the terms need every rank's exact input (arrays up to 4096 elements)";

// The readout for one element of a reduction: every rank's term, who won, who holds what.
function termsText(step, data, i) {
  const parts = [];
  let shape = null;
  for (const r of step.members) {
    const p = step.panels[data.ranks.indexOf(r)];
    if (!p || !p.before || !p.before.exact) return NO_TERMS;
    shape = p.before.shape;
    const v = decode(p.before).texts[i];
    const won = step.winners && step.winners[i] === r ? " \u2605" : "";
    parts.push(`${v} (rank ${r}${won})`);
  }
  const held = new Map();
  for (const r of step.members) {
    const p = step.panels[data.ranks.indexOf(r)];
    if (!p || !p.after) continue;
    const v = decode(p.after).texts[i];
    held.set(v, [...(held.get(v) || []), r]);
  }
  const holds = [...held].map(([v, rs]) => `${ranksText(rs)} ${rs.length > 1 ? "hold" : "holds"} ${v}`).join("; ");
  const at = unravel(i, shape);
  if (step.op === "all_sum") return `element ${at}: ${parts.join(" + ")}; ${holds}`;
  const w = step.winners ? step.winners[i] : null;
  const won = w === null ? "" : ` \u2192 rank ${w}'s value wins`;
  return `element ${at}: ${step.op.slice(4)} of ${parts.join(", ")}${won}; ${holds}`;
}

function ranksText(rs) {
  if (rs.length === 1) return `rank ${rs[0]}`;
  const run = rs.length > 2 && rs.every((r, k) => k === 0 || r === rs[k - 1] + 1);
  return run ? `ranks ${rs[0]}-${rs[rs.length - 1]}` : `ranks ${rs.join(", ")}`;
}

// The first element whose terms differ between ranks: a sum of zeros teaches nothing.
function telling(steps, data) {
  const s = steps[0];
  const ins = s.members.map((r) => s.panels[data.ranks.indexOf(r)]).filter((p) => p && p.before && p.before.exact);
  if (ins.length < 2) return 0;
  const texts = ins.map((p) => decode(p.before).texts);
  const i = texts[0].findIndex((_, k) => texts.some((t) => t[k] !== texts[0][k]));
  return i < 0 ? 0 : i;
}

// The rows of a column; view = {point, ring, round}; returns the element and a
// function that marks the pointed element without redrawing.
function opView(data, steps, ctx, view, onPoint) {
  const root = el("div", "mxnb-op");
  const head = steps[0];
  const title = el("div", "mxnb-op-title");
  title.appendChild(el("span", "mxnb-opname", `#${steps.map((s) => s.index).join(", #")} ${head.name}`));
  title.appendChild(el("span", "mxnb-group", ` on ${steps.map((s) => s.group_text).join(" and ")}`));
  title.appendChild(el("div", "mxnb-site", head.site));
  root.appendChild(title);
  for (const s of steps) {
    for (const t of s.transfers) {
      const line = el("div", `mxnb-transfer${t.note ? " mxnb-bad" : ""}`);
      const a = el("span", "mxnb-chip", `rank ${t.src}`);
      a.style.background = ctx.rankColor(t.src);
      a.style.color = ctx.inkOnRank(t.src);
      const b = el("span", "mxnb-chip", `rank ${t.dst}`);
      b.style.background = ctx.rankColor(t.dst);
      b.style.color = ctx.inkOnRank(t.dst);
      const arrow = el("span", "mxnb-flow", ` \u2500\u2500 ${t.what} \u2500\u2500\u25B6 `);
      arrow.style.color = t.note ? ctx.states.wrong[0] : ctx.rankColor(t.src);
      line.append(a, arrow, b);
      if (t.note) line.appendChild(el("span", "", ` \u2014 ${t.note}`));
      root.appendChild(line);
    }
    if (s.inputs_note) root.appendChild(el("div", "mxnb-bad mxnb-inputs", s.inputs_note));
    if (s.mismatch.length) root.appendChild(el("div", "mxnb-bad mxnb-mismatch", s.mismatch_text));
    if (s.order_note) root.appendChild(el("div", "mxnb-bad mxnb-order", s.order_note));
  }
  // a result to point at: none where the op never ran (refused, or not evaluated)
  const reduce = steps.every((s) => REDUCE[s.op]) && steps.some((s) => s.panels.some((p) => p && p.after));
  const terms = el("div", "mxnb-terms", "");
  if (reduce) root.appendChild(terms);

  const rows = el("div", "mxnb-rows");
  rows.appendChild(el("div", "mxnb-colhead", ""));
  rows.appendChild(el("div", "mxnb-colhead", "input"));
  rows.appendChild(el("div", "mxnb-colhead", ""));
  rows.appendChild(el("div", "mxnb-colhead", "result"));
  rows.appendChild(el("div", "mxnb-colhead", "evaluation"));
  const cellsAt = []; // [element, index, side, rank]
  for (const r of data.ranks) {
    const [step, p] = partOf(steps, data, r);
    const sc = { ...ctx, scale: step.scale };
    const chip = el("div", "mxnb-rankchip", `rank ${r}`);
    chip.style.background = ctx.rankColor(r);
    chip.style.color = ctx.inkOnRank(r);
    const host = (data.hosts || [])[data.ranks.indexOf(r)];
    if (host) chip.appendChild(el("div", "mxnb-host", host)); // ranks on several hosts
    const row = [chip];
    const cls = `mxnb-row mxnb-row-${r}`;
    if (!p) {
      // the cases of StepView.absence (mxnb/trace/view.py), words from Python
      const absence = !step.members.includes(r) ? "outside" : COLLECTIVE.has(step.op) ? "missing" : "apart";
      const why = data.words.absent[absence];
      row.push(el("div", "mxnb-none", why), el("div", ""), el("div", ""), el("div", ""));
    } else {
      for (const side of ["before", "after"]) {
        const box = el("div", `mxnb-side mxnb-${side}`);
        box.dataset.rank = r;
        box.appendChild(el("div", "mxnb-type", side === "before" ? p.in : p.out));
        const snap = p[side];
        const st = p[`${side}_state`];
        if (snap) {
          const hook = (i, c) => cellsAt.push([c, i, side, r]);
          box.appendChild(valueView(snap, sc, blocksFor(data, step, r, side, snap), { cell: hook }));
        } else {
          box.appendChild(el("div", "mxnb-none", p[`${side}_text`] || data.words.states[st] || `(${st})`));
        }
        if (side === "after" && step.mismatch.includes(r)) {
          box.classList.add("mxnb-wrong");
          if (p.expected) {
            const want = el("div", "mxnb-expected");
            want.appendChild(el("div", "mxnb-type", "expected"));
            want.appendChild(valueView(p.expected, sc, [], {}));
            box.appendChild(want);
          }
        }
        row.push(box);
        if (side === "before") row.push(el("div", "mxnb-arrow", "\u2192"));
      }
    }
    const call = p && p.call_ms != null ? ` \u00b7 call ${p.call_ms} ms` : "";
    if (p) row.push(el("div", "mxnb-time", `${p.time || "not timed"}${call}`));
    for (const c of row) {
      c.classList.add(...cls.split(" "));
      rows.appendChild(c);
    }
  }
  root.appendChild(rows);

  function point(i) {
    if (!reduce) return;
    const step = steps.find((s) => s.panels.some((p) => p && p.after)) || head;
    const said = termsText(step, data, i);
    // the hint only where pointing shows something
    terms.textContent = said === NO_TERMS ? said : `${said}  (point at a result to see its terms)`;
    for (const [c, k, side, r] of cellsAt) {
      c.classList.toggle("mxnb-pointed", k === i);
      const w = step.winners ? step.winners[k] : null;
      c.classList.toggle("mxnb-won", side === "before" && w === r);
      if (side === "after" && w !== null && w !== undefined) c.style.boxShadow = `inset 0 -4px 0 ${ctx.rankColor(w)}`;
    }
  }
  for (const [c, i, side] of cellsAt) {
    if (!reduce) break;
    c.addEventListener("mouseenter", () => onPoint(i));
    if (side === "after") c.tabIndex = -1;
  }
  point(view.point === null ? telling(steps, data) : view.point);
  return { node: root, point };
}

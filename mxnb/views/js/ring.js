// The textbook ring algorithm step by step on the ranks' own data (computed
// by mxnb/trace/ring.py): what each rank holds after each round, which chunk
// just arrived and which one it sends next.

function numText(v) {
  return typeof v === "number" ? fmt(v) : String(v);
}

function ringView(data, step, ctx, k, onRound) {
  const ring = step.ring;
  const n = ring.ranks.length;
  const last = ring.rounds.length;
  const root = el("div", "mxnb-ring");
  const bar = el("div", "mxnb-ring-bar");
  const prev = el("button", "mxnb-ring-prev", "\u25C0");
  const next = el("button", "mxnb-ring-next", "\u25B6");
  prev.disabled = k === 0;
  next.disabled = k === last;
  prev.onclick = () => onRound(k - 1);
  next.onclick = () => onRound(k + 1);
  const slider = el("input", "mxnb-ring-slider");
  slider.type = "range";
  slider.min = 0;
  slider.max = last;
  slider.value = k;
  slider.oninput = () => onRound(Number(slider.value));
  const rnd = k > 0 ? ring.rounds[k - 1] : null;
  const what = ring.titles[k]; // worded once, by the ring model
  bar.append(prev, slider, next, el("span", "mxnb-ring-step", `step ${k} of ${last}: ${what}`));
  root.append(bar, el("div", "mxnb-ring-honesty", `${ring.honesty}. ${ring.key}`));
  const held = k === 0 ? ring.start : rnd.held;
  const holders = k === 0 ? ring.start_holders : rnd.holders;
  const incoming = rnd ? rnd.passes : [];
  const outgoing = k < last ? ring.rounds[k].passes : [];
  const table = el("div", "mxnb-ring-rows");
  ring.ranks.forEach((r, i) => {
    const chip = el("div", "mxnb-rankchip", `rank ${r}`);
    chip.style.background = ctx.rankColor(r);
    chip.style.color = ctx.inkOnRank(r);
    const chunks = el("div", "mxnb-chunks");
    held[i].forEach((c, j) => {
      const box = el("div", `mxnb-chunk${c === null ? " mxnb-chunk-empty" : ""}`);
      box.dataset.rank = r;
      box.dataset.chunk = j;
      box.appendChild(el("div", "mxnb-chunk-name", `chunk ${j}`));
      box.appendChild(el("div", "mxnb-chunk-values", c === null ? "\u2014" : c.map(numText).join(" ")));
      // a dot per rank whose input this chunk already holds: they gather, then spread
      const dots = el("div", "mxnb-chunk-dots");
      dots.title = holders[i][j].length ? `holds the input of rank ${holders[i][j].join(", ")}` : "";
      for (const who of holders[i][j]) {
        const dot = el("span", "mxnb-dot");
        dot.dataset.rank = who;
        dot.style.background = ctx.rankColor(who);
        dots.appendChild(dot);
      }
      box.appendChild(dots);
      const got = incoming.find(([, d, ch]) => d === r && ch === j);
      if (got) {
        box.classList.add("mxnb-chunk-in");
        box.style.borderColor = ctx.rankColor(got[0]);
        const verb = rnd.phase === "reduce-scatter" ? `+ from rank ${got[0]}` : `from rank ${got[0]}`;
        const tag = el("span", "mxnb-tag", verb);
        tag.style.background = ctx.rankColor(got[0]);
        box.appendChild(tag);
      }
      const out = outgoing.find(([s, , ch]) => s === r && ch === j);
      if (out) {
        box.classList.add("mxnb-chunk-out");
        box.appendChild(el("div", "mxnb-chunk-next", `next: \u2192 rank ${out[1]}`));
      }
      chunks.appendChild(box);
    });
    const row = el("div", "mxnb-ring-row");
    row.append(chip, chunks);
    if (k === last) row.appendChild(el("div", "mxnb-ring-check", ringCheck(data, step, r, held[i])));
    table.appendChild(row);
  });
  root.appendChild(table);
  return root;
}

// The last round against what the rank really got.
function ringCheck(data, step, r, chunks) {
  const p = step.panels[data.ranks.indexOf(r)];
  if (!p || !p.after || !p.after.exact) return "";
  const got = decode(p.after).nums;
  const want = chunks.flatMap((c) => c || []).map(Number);
  const same = want.length === got.length && want.every((v, i) => Math.abs(v - got[i]) <= 1e-5 * Math.max(1, Math.abs(v)) || (Number.isNaN(v) && Number.isNaN(got[i])));
  return same ? `= what rank ${r} got \u2713` : `\u2260 what rank ${r} got \u2717`;
}

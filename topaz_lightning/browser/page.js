
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("tzl-data").textContent);
  const M = D.micrographs;
  const hasTruth = D.curve !== null;
  const $ = (id) => document.getElementById(id);
  const state = { threshold: D.threshold, topk: 0, page: 0 };

  // per micrograph: scores are sorted descending; prefix sums of matched picks
  for (const m of M) {
    if (m.annotated) {
      const c = new Int32Array(m.score.length + 1);
      for (let i = 0; i < m.score.length; i++) c[i + 1] = c[i] + m.matched[i];
      m.cumMatched = c;
    }
  }
  const allScores = [];
  for (const m of M) for (const s of m.score) allScores.push(s);
  allScores.sort((a, b) => b - a);
  const lo = allScores.length ? allScores[allScores.length - 1] : 0;
  const hi = allScores.length ? allScores[0] : 1;
  const span = Math.max(hi - lo, 1e-3);
  const step = Math.pow(10, Math.floor(Math.log10(span / 500)));
  const decimals = Math.max(0, -Math.round(Math.log10(step)));
  const sliderMin = Math.floor(lo / step) * step;
  const sliderMax = Math.ceil(hi / step) * step;

  // number of picks of m with score >= t (binary search on descending scores), then top-k
  function shown(m) {
    const s = m.score;
    let a = 0, b = s.length;
    while (a < b) { const mid = (a + b) >> 1; if (s[mid] >= state.threshold) a = mid + 1; else b = mid; }
    return state.topk > 0 ? Math.min(a, state.topk) : a;
  }
  function counts(m, n) {
    if (!m.annotated) return null;
    const matched = m.cumMatched[n];
    return { matched: matched, false: n - matched, missed: m.truth_x.length - matched };
  }

  function text(el, value) { el.textContent = value; return el; }
  function make(tag, cls) { const el = document.createElement(tag); if (cls) el.className = cls; return el; }
  const svgNS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const el = document.createElementNS(svgNS, tag);
    for (const k in attrs) el.setAttribute(k, attrs[k]);
    return el;
  }
  function fmt(v) { return Number.isInteger(v) ? String(v) : v.toFixed(1); }

  // header
  text($("title"), D.title);
  text($("description"), D.description || "");
  text($("settings"), "particle diameter " + fmt(D.particle_diameter_px) + " px" +
    (D.match_distance_px !== null ? "; match distance " + fmt(D.match_distance_px) + " px" : "") +
    "; " + M.length + " micrographs, " + allScores.length + " picks");

  if (D.unreadable.length) {
    text($("unreadable"), D.unreadable.length + " micrograph(s) could not be read and are not shown: " +
      D.unreadable.slice(0, 5).join(", ") + (D.unreadable.length > 5 ? ", ..." : ""));
  }

  // legend
  const legend = $("legend");
  const items = hasTruth
    ? [["matched pick", D.colors.matched], ["false pick", D.colors.false],
       ["missed particle", D.colors.missed], ["pick (no truth)", D.colors.pick]]
    : [["pick", D.colors.pick]];
  for (const [label, color] of items) {
    const s = make("span"); const i = make("i"); i.style.borderColor = color;
    s.appendChild(i); s.appendChild(document.createTextNode(label)); legend.appendChild(s);
  }

  // controls
  const slider = $("threshold"), box = $("threshold-value"), topk = $("topk");
  slider.min = sliderMin.toFixed(decimals); slider.max = sliderMax.toFixed(decimals);
  slider.step = step.toFixed(decimals); box.step = step.toFixed(decimals);
  function setThreshold(t, from) {
    if (!Number.isFinite(t)) return;
    state.threshold = t;
    if (from !== slider) slider.value = t;
    if (from !== box) box.value = Number(t.toFixed(Math.max(decimals, 4)));
    update();
  }
  slider.addEventListener("input", () => setThreshold(parseFloat(slider.value), slider));
  box.addEventListener("input", () => setThreshold(parseFloat(box.value), box));
  topk.addEventListener("input", () => {
    const k = parseInt(topk.value, 10);
    state.topk = Number.isFinite(k) && k > 0 ? k : 0;
    update();
  });
  $("btn-all").addEventListener("click", () => setThreshold(sliderMin, null));
  const expectedTotal = M.reduce((a, m) => a + (m.expected === null ? 0 : m.expected), 0);
  const haveExpected = M.some((m) => m.expected !== null);
  $("btn-expected").disabled = !(haveExpected && allScores.length);
  $("btn-expected").addEventListener("click", () => {
    const k = Math.min(allScores.length, Math.max(1, Math.round(expectedTotal)));
    setThreshold(allScores[k - 1], null);
  });
  $("btn-best-f1").disabled = !(hasTruth && D.curve.best_f1_threshold !== null);
  $("btn-best-f1").addEventListener("click", () => setThreshold(D.curve.best_f1_threshold, null));

  // histogram
  const H = D.histogram, hist = $("histogram");
  const HW = 420, HH = 170, HL = 36, HB = 20, HT = 6, HR = 6;
  const hx = (v) => HL + (v - H.edges[0]) / ((H.edges[H.edges.length - 1] - H.edges[0]) || 1) * (HW - HL - HR);
  let thresholdLine = null;
  if (H.edges.length) {
    const peak = Math.max(1, ...H.all);
    const hy = (c) => HH - HB - c / peak * (HH - HB - HT);
    // nested bars from the bottom: all picks (grey), on annotated micrographs (false colour),
    // matched (matched colour)
    const layers = [[H.all, "#888"]];
    if (H.annotated) layers.push([H.annotated, D.colors.false], [H.matched, D.colors.matched]);
    for (let i = 0; i < H.all.length; i++) {
      const x0 = hx(H.edges[i]), x1 = hx(H.edges[i + 1]);
      for (const [values, fill] of layers) {
        hist.appendChild(svg("rect", { x: x0, y: hy(values[i]), width: Math.max(x1 - x0 - 0.5, 0.5),
          height: HH - HB - hy(values[i]), fill: fill }));
      }
    }
    hist.appendChild(svg("line", { x1: HL, x2: HW - HR, y1: HH - HB, y2: HH - HB, stroke: "#444" }));
    const ends = [H.edges[0], (H.edges[0] + H.edges[H.edges.length - 1]) / 2, H.edges[H.edges.length - 1]];
    ends.forEach((v, i) => {
      const anchor = ["start", "middle", "end"][i];
      const t = svg("text", { x: hx(v), y: HH - 5, "font-size": 10, "text-anchor": anchor });
      hist.appendChild(text(t, v.toFixed(2)));
    });
    hist.appendChild(text(svg("text", { x: 2, y: HT + 8, "font-size": 10 }), String(peak)));
    thresholdLine = svg("line", { y1: HT, y2: HH - HB, stroke: "#0a0", "stroke-width": 2 });
    hist.appendChild(thresholdLine);
    hist.addEventListener("click", (ev) => {
      const r = hist.getBoundingClientRect();
      const x = (ev.clientX - r.left) * HW / r.width;
      const v = H.edges[0] + (x - HL) / (HW - HL - HR) * (H.edges[H.edges.length - 1] - H.edges[0]);
      setThreshold(Math.min(sliderMax, Math.max(sliderMin, Number(v.toFixed(decimals)))), null);
    });
  }

  // precision-recall curve
  let prMarker = null;
  const PW = 240, PH = 170, PL = 30, PB = 22, PT = 6, PR = 8;
  const px = (r) => PL + r * (PW - PL - PR), py = (p) => PH - PB - p * (PH - PB - PT);
  if (hasTruth) {
    const pr = $("pr-curve"), C = D.curve;
    pr.appendChild(svg("rect", { x: PL, y: PT, width: PW - PL - PR, height: PH - PB - PT, fill: "none", stroke: "#ccc" }));
    const pts = C.recall.map((r, i) => px(r).toFixed(1) + "," + py(C.precision[i]).toFixed(1)).join(" ");
    pr.appendChild(svg("polyline", { points: pts, fill: "none", stroke: "#333", "stroke-width": 1.5 }));
    pr.appendChild(text(svg("text", { x: PL + (PW - PL - PR) / 2, y: PH - 5, "font-size": 10, "text-anchor": "middle" }), "recall"));
    pr.appendChild(text(svg("text", { x: 2, y: PT + 8, "font-size": 10 }), "1"));
    pr.appendChild(text(svg("text", { x: 2, y: PH - PB, "font-size": 10 }), "0"));
    prMarker = svg("circle", { r: 5, fill: "#0a0", stroke: "#fff" });
    pr.appendChild(prMarker);
    text($("pr-caption"), "precision (y) vs recall, " + C.n_true + " true particles; AUPR " +
      (C.aupr === null ? "-" : C.aupr.toFixed(3)) + ", best F1 " +
      (C.best_f1 === null ? "-" : C.best_f1.toFixed(3)) + "; dot: current setting");
  } else {
    $("pr-figure").style.display = "none";
  }

  // thumbnails: one page at a time; images are decoded only for the page shown
  const grid = $("grid");
  // the micrographs listed, in order: filtered by name, sorted at the setting when chosen
  let view = M.map((m, i) => i), pages = 1;
  function makeView() {
    const needle = $("filter").value.toLowerCase();
    view = [];
    for (let i = 0; i < M.length; i++) if (M[i].name.toLowerCase().includes(needle)) view.push(i);
    const how = $("sort").value;
    if (how !== "given") {
      const key = (i) => {
        const n = shown(M[i]), c = counts(M[i], n);
        if (how === "picks-desc") return -n;
        if (how === "picks-asc") return n;
        if (!c) return Infinity;  // unannotated micrographs last
        return how === "false-desc" ? -c.false : -c.missed;
      };
      const keys = new Map(view.map((i) => [i, key(i)]));
      view.sort((a, b) => keys.get(a) - keys.get(b) || a - b);
    }
    pages = Math.max(1, Math.ceil(view.length / D.page_size));
    state.page = 0;
  }
  let cards = [];
  function draw(card) {
    const m = card.m, ctx = card.canvas.getContext("2d");
    if (!card.img.complete || !card.img.naturalWidth) return;
    ctx.drawImage(card.img, 0, 0);
    const f = m.factor, r = D.particle_diameter_px / 2 / f, n = shown(m);
    ctx.lineWidth = Math.max(1.5, card.canvas.width / 250);
    // one path per colour: thousands of circles stroke in one call
    const stroke = (color, xs, ys, keep) => {
      ctx.beginPath(); ctx.strokeStyle = color;
      for (let i = 0; i < xs.length; i++) {
        if (!keep(i)) continue;
        const cx = (xs[i] + 0.5) / f, cy = (ys[i] + 0.5) / f;
        ctx.moveTo(cx + r, cy); ctx.arc(cx, cy, r, 0, 2 * Math.PI);
      }
      ctx.stroke();
    };
    if (m.annotated) {
      stroke(D.colors.missed, m.truth_x, m.truth_y, (j) => m.truth_rank[j] < 0 || m.truth_rank[j] >= n);
      stroke(D.colors.matched, m.x, m.y, (i) => i < n && m.matched[i] === 1);
      stroke(D.colors.false, m.x, m.y, (i) => i < n && m.matched[i] === 0);
    } else {
      stroke(D.colors.pick, m.x, m.y, (i) => i < n);
    }
  }
  function caption(card) {
    const m = card.m, n = shown(m), c = counts(m, n);
    let s = n + " picks";
    if (m.expected !== null) s += " (expected " + fmt(m.expected) + ")";
    if (c) s += "; matched " + c.matched + ", false " + c.false + ", missed " + c.missed;
    text(card.count, s);
    card.count.dataset.count = n;
  }
  function renderPage() {
    grid.replaceChildren();
    cards = [];
    document.body.dataset.loaded = 0;
    const start = state.page * D.page_size;
    for (let k = start; k < Math.min(view.length, start + D.page_size); k++) {
      const i = view[k], m = M[i], el = make("div", "card");
      el.dataset.index = i;
      el.title = "click to enlarge / shrink";
      el.addEventListener("click", () => el.classList.toggle("wide"));
      const canvas = make("canvas");
      canvas.width = Math.floor(m.width / m.factor); canvas.height = Math.floor(m.height / m.factor);
      const name = text(make("div", "name"), m.name);
      const count = make("div", "count"); count.id = "count-" + i;
      el.append(canvas, name, count);
      grid.appendChild(el);
      const img = new Image();
      const card = { m: m, canvas: canvas, count: count, img: img };
      img.onload = () => {
        card.loaded = true;
        draw(card);
        document.body.dataset.loaded = cards.filter((c) => c.loaded).length;
      };
      img.src = m.thumb;
      cards.push(card);
    }
    text($("page-label"), "page " + (state.page + 1) + " / " + pages + " (" +
      (view.length ? start + 1 : 0) + "-" + Math.min(view.length, start + D.page_size) + " of " +
      view.length + (view.length < M.length ? " listed, " + M.length + " in all)" : ")"));
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= pages - 1;
    for (const card of cards) caption(card);
  }
  $("sort").addEventListener("change", () => { makeView(); renderPage(); });
  $("filter").addEventListener("input", () => { makeView(); renderPage(); });
  if (!hasTruth) for (const v of ["false-desc", "missed-desc"]) $("sort").querySelector("option[value=" + v + "]").remove();
  $("prev").addEventListener("click", () => { if (state.page > 0) { state.page--; renderPage(); } });
  $("next").addEventListener("click", () => { if (state.page < pages - 1) { state.page++; renderPage(); } });

  let drawPending = false;
  function update() {
    const started = performance.now();
    let total = 0, matched = 0, falses = 0, missed = 0, truthTotal = 0;
    for (const m of M) {
      const n = shown(m);
      total += n;
      const c = counts(m, n);
      if (c) { matched += c.matched; falses += c.false; missed += c.missed; truthTotal += m.truth_x.length; }
    }
    const totalEl = $("total-picks");
    text(totalEl, total + " picks on " + M.length + " micrographs");
    totalEl.dataset.count = total;
    const expEl = $("total-expected");
    text(expEl, haveExpected ? "(expected " + fmt(expectedTotal) + " from " + D.expected_source + ")" : "");
    if (hasTruth) {
      const precision = matched + falses > 0 ? matched / (matched + falses) : 1;
      const recall = truthTotal > 0 ? matched / truthTotal : 0;
      const tEl = $("total-truth");
      text(tEl, "matched " + matched + ", false " + falses + ", missed " + missed +
        "; precision " + precision.toFixed(3) + ", recall " + recall.toFixed(3));
      tEl.dataset.matched = matched; tEl.dataset.false = falses; tEl.dataset.missed = missed;
      prMarker.setAttribute("cx", px(recall)); prMarker.setAttribute("cy", py(precision));
    }
    if (thresholdLine) {
      const x = Math.min(HW - HR, Math.max(HL, hx(state.threshold)));
      thresholdLine.setAttribute("x1", x); thresholdLine.setAttribute("x2", x);
    }
    for (const card of cards) caption(card);
    document.body.dataset.threshold = state.threshold;
    document.body.dataset.topk = state.topk;
    document.body.dataset.countMs = (performance.now() - started).toFixed(1);
    // the counts above are current at once; the drawing waits for the next frame, once per frame
    // however many events a dragged slider sends
    if (!drawPending) {
      drawPending = true;
      requestAnimationFrame(() => {
        const t0 = performance.now();
        for (const card of cards) draw(card);
        drawPending = false;
        document.body.dataset.drawMs = (performance.now() - t0).toFixed(1);
        document.body.dataset.drawn = state.threshold + "/" + state.topk;
      });
    }
  }

  makeView();
  renderPage();
  setThreshold(state.threshold, null);
  document.body.dataset.ready = "1";
})();

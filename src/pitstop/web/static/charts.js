// Pitstop dashboard charts: own SVG, no dependencies. Every chart is role="img" with an aria-label.
(function () {
  "use strict";
  const P = (window.Pitstop = window.Pitstop || {});
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const ok = (v) => v !== null && v !== undefined && typeof v === "number" && isFinite(v);
  const INK = "#555e6e", GRID = "#e6e9ee", LINE = "#1c5ba3", BAND = "#1c5ba3", THRESHOLD = "#b42318";
  const r1 = (v) => Math.round(v * 10) / 10;
  const tick = (v, span) => (Math.abs(span) < 5 ? v.toFixed(2) : Math.abs(span) < 50 ? v.toFixed(1) : Math.round(v).toLocaleString());

  // points of a series, broken into runs at missing values
  function runs(xs, ys, X, Y) {
    const out = [];
    let cur = [];
    for (let i = 0; i < xs.length; i++) {
      if (ok(xs[i]) && ok(ys[i])) cur.push(`${r1(X(xs[i]))},${r1(Y(ys[i]))}`);
      else if (cur.length) { out.push(cur); cur = []; }
    }
    if (cur.length) out.push(cur);
    return out;
  }

  /** A line chart into `svg`: series [{ys, color, name}], opts {label, band: [lower[], upper[]],
   *  hline: number, hlineLabel, zero, xlabel, ylabel}. */
  function lineChart(svg, xs, series, opts = {}) {
    xs = Array.isArray(xs) ? xs : [];
    series = (series || []).filter((s) => s && Array.isArray(s.ys));
    const W = Math.max(200, Math.round(svg.clientWidth || svg.getBoundingClientRect().width || 600));
    const H = Math.max(80, Math.round(svg.clientHeight || svg.getBoundingClientRect().height || 180));
    const Pd = { l: 46, r: 12, t: 10, b: 22 };
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("role", "img");
    const band = opts.band && Array.isArray(opts.band[0]) && Array.isArray(opts.band[1]) ? opts.band : null;
    const all = series.flatMap((s) => s.ys).concat(band ? band[0].concat(band[1]) : []).filter(ok);
    if (ok(opts.hline)) all.push(opts.hline);
    const xok = xs.filter(ok);
    if (!xok.length || !series.some((s) => s.ys.some(ok))) {
      svg.setAttribute("aria-label", `${opts.label || "chart"}: no data yet`);
      svg.innerHTML = `<text x="${W / 2}" y="${H / 2}" text-anchor="middle" font-size="12" fill="${INK}">no data yet</text>`;
      return;
    }
    let lo = Math.min(...all), hi = Math.max(...all);
    if (opts.zero) lo = Math.min(0, lo);
    if (hi === lo) { hi += 1; lo -= 1; }
    const pad = (hi - lo) * 0.04;
    hi += pad; if (!opts.zero || lo < 0) lo -= pad;
    const x0 = Math.min(...xok), x1r = Math.max(...xok), x1 = x1r === x0 ? x0 + 1 : x1r;
    const X = (x) => Pd.l + ((x - x0) / (x1 - x0)) * (W - Pd.l - Pd.r);
    const Y = (y) => H - Pd.b - ((y - lo) / (hi - lo)) * (H - Pd.t - Pd.b);
    let out = "";
    for (let i = 0; i <= 4; i++) {
      const v = lo + ((hi - lo) * i) / 4, y = r1(Y(v));
      out += `<line x1="${Pd.l}" x2="${W - Pd.r}" y1="${y}" y2="${y}" stroke="${GRID}"/>`;
      out += `<text x="${Pd.l - 5}" y="${y + 4}" text-anchor="end" font-size="10" fill="${INK}">${tick(v, hi - lo)}</text>`;
    }
    out += `<text x="${Pd.l}" y="${H - 6}" font-size="10" fill="${INK}">${esc(x0)}</text>`;
    out += `<text x="${W - Pd.r}" y="${H - 6}" text-anchor="end" font-size="10" fill="${INK}">${esc(x1r)}${opts.xlabel ? ` ${esc(opts.xlabel)}` : ""}</text>`;
    if (opts.ylabel) out += `<text x="${Pd.l + 4}" y="${Pd.t + 9}" font-size="10" fill="${INK}">${esc(opts.ylabel)}</text>`;
    if (band) {
      // one polygon per run where both bounds are present
      let top = [], bot = [];
      const flush = () => {
        if (top.length) out += `<polygon points="${top.concat(bot.reverse()).join(" ")}" fill="${BAND}" fill-opacity="0.14" stroke="none"/>`;
        top = []; bot = [];
      };
      for (let i = 0; i < xs.length; i++) {
        if (ok(xs[i]) && ok(band[0][i]) && ok(band[1][i])) {
          top.push(`${r1(X(xs[i]))},${r1(Y(band[1][i]))}`);
          bot.push(`${r1(X(xs[i]))},${r1(Y(band[0][i]))}`);
        } else flush();
      }
      flush();
    }
    if (ok(opts.hline)) {
      const y = r1(Y(opts.hline));
      out += `<line x1="${Pd.l}" x2="${W - Pd.r}" y1="${y}" y2="${y}" stroke="${THRESHOLD}" stroke-dasharray="5 4" stroke-width="1.2"/>`;
      if (opts.hlineLabel) out += `<text x="${W - Pd.r - 2}" y="${y - 4}" text-anchor="end" font-size="10" fill="${THRESHOLD}">${esc(opts.hlineLabel)}</text>`;
    }
    for (const s of series) {
      for (const run of runs(xs, s.ys, X, Y)) {
        out += run.length === 1
          ? `<circle cx="${run[0].split(",")[0]}" cy="${run[0].split(",")[1]}" r="2" fill="${s.color || LINE}"/>`
          : `<polyline points="${run.join(" ")}" fill="none" stroke="${s.color || LINE}" stroke-width="1.6" stroke-linejoin="round"/>`;
      }
    }
    const last = series[0].ys.filter(ok);
    const summary = last.length ? `, latest ${tick(last[last.length - 1], hi - lo)}${opts.unit ? ` ${opts.unit}` : ""}, range ${tick(Math.min(...last), hi - lo)} to ${tick(Math.max(...last), hi - lo)}` : "";
    svg.setAttribute("aria-label", `${opts.label || "chart"}: ${xok.length} points${summary}`);
    svg.innerHTML = out;
  }

  /** A sparkline as an SVG string (for table cells). */
  function sparkline(values, opts = {}) {
    const w = opts.width || 96, h = opts.height || 22;
    const ys = (Array.isArray(values) ? values : []).filter(ok);
    const name = opts.label || "trend";
    if (ys.length < 2) {
      return `<svg class="spark" viewBox="0 0 ${w} ${h}" role="img" aria-label="${esc(name)}: not enough data"><line x1="2" x2="${w - 2}" y1="${h / 2}" y2="${h / 2}" stroke="${GRID}" stroke-dasharray="2 3"/></svg>`;
    }
    let lo = Math.min(...ys), hi = Math.max(...ys);
    if (ok(opts.threshold)) { lo = Math.min(lo, opts.threshold); hi = Math.max(hi, opts.threshold); }
    if (hi === lo) { hi += 1; lo -= 1; }
    const X = (i) => 2 + (i / (ys.length - 1)) * (w - 4);
    const Y = (y) => h - 2 - ((y - lo) / (hi - lo)) * (h - 4);
    const pts = ys.map((y, i) => `${r1(X(i))},${r1(Y(y))}`).join(" ");
    const color = opts.color || LINE;
    let thr = "";
    if (ok(opts.threshold)) thr = `<line x1="0" x2="${w}" y1="${r1(Y(opts.threshold))}" y2="${r1(Y(opts.threshold))}" stroke="${THRESHOLD}" stroke-width="0.8" stroke-dasharray="2 2"/>`;
    const first = ys[0], last = ys[ys.length - 1];
    const aria = `${name}: from ${Math.round(first)} to ${Math.round(last)}`;
    return `<svg class="spark" viewBox="0 0 ${w} ${h}" role="img" aria-label="${esc(aria)}">${thr}<polyline points="${pts}" fill="none" stroke="${color}" stroke-width="1.4" stroke-linejoin="round"/><circle cx="${r1(X(ys.length - 1))}" cy="${r1(Y(last))}" r="1.8" fill="${color}"/></svg>`;
  }

  /** Horizontal bars as an SVG string: items [{label, value}]; signed values get a centre axis. */
  function bars(items, opts = {}) {
    items = (items || []).filter((it) => it && ok(Number(it.value)));
    const name = opts.label || "bars";
    if (!items.length) return `<p class="muted">${esc(opts.empty || "nothing to show")}</p>`;
    const row = 22, labelW = opts.labelWidth || 110, valueW = 60, w = opts.width || 420;
    const h = items.length * row + 4;
    const vals = items.map((it) => Number(it.value));
    const max = Math.max(...vals.map(Math.abs)) || 1;
    // mixed signs get a centre axis; all one sign are drawn by size from the left
    const signed = vals.some((v) => v < 0) && vals.some((v) => v > 0);
    const plotW = w - labelW - valueW;
    const zero = signed ? labelW + plotW / 2 : labelW;
    const scale = signed ? plotW / 2 / max : plotW / max;
    let out = "";
    items.forEach((it, i) => {
      const v = Number(it.value), y = 2 + i * row;
      const x = !signed || v >= 0 ? zero : zero + v * scale;
      out += `<text x="${labelW - 8}" y="${y + 15}" text-anchor="end" font-size="12" fill="#1b2130">${esc(it.label)}</text>`;
      out += `<rect x="${r1(x)}" y="${y + 4}" width="${r1(Math.max(1, Math.abs(v) * scale))}" height="${row - 8}" rx="2" fill="${v >= 0 || !signed ? (opts.color || LINE) : "#8a94a6"}"/>`;
      out += `<text x="${w - 4}" y="${y + 15}" text-anchor="end" font-size="11" fill="${INK}">${esc(it.text ?? (Math.abs(v) < 10 ? v.toFixed(2) : Math.round(v)))}</text>`;
    });
    if (signed) out += `<line x1="${zero}" x2="${zero}" y1="0" y2="${h}" stroke="${INK}" stroke-width="0.8"/>`;
    const aria = `${name}: ${items.map((it) => `${it.label} ${it.text ?? Number(it.value).toFixed(2)}`).join(", ")}`;
    return `<svg class="bars" viewBox="0 0 ${w} ${h}" width="100%" height="${h}" role="img" aria-label="${esc(aria)}">${out}</svg>`;
  }

  Object.assign(P, { lineChart, sparkline, bars });
})();

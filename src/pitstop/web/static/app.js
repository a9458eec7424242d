// Pitstop dashboard: plain JS, no dependencies. Polls the JSON API and draws SVG charts.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;","'":"&#39;"}[c]));
  const fmt = (x, d = 0) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));
  const due = (iso) => {
    if (!iso) return "";
    const h = (new Date(iso) - Date.now()) / 3.6e6;
    const when = Math.abs(h) < 48 ? `${Math.round(Math.abs(h))} h` : `${Math.round(Math.abs(h) / 24)} d`;
    return h >= 0 ? `due in ${when}` : `<span class="error">overdue ${when}</span>`;
  };
  const ago = (iso) => {
    if (!iso) return "–";
    const s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
    return s < 60 ? `${s.toFixed(0)} s ago` : s < 3600 ? `${(s / 60).toFixed(0)} min ago` : new Date(iso).toLocaleString();
  };
  const badge = (v) => `<span class="badge b-${esc(v)}">${esc(String(v).replace("_", " "))}</span>`;
  async function get(url) {
    const r = await fetch(url, { headers: { Accept: "application/json" } });
    if (!r.ok) throw new Error(`${url}: ${r.status}`);
    return r.json();
  }
  async function status() {
    try {
      const st = await get("/api/v1/status");
      $("meta").textContent = `model ${st.model.name} v${st.model.version} · bus lag ${st.bus.lag ?? "–"} · lake v${st.lake.telemetry_version}`;
      return st;
    } catch (e) { $("meta").textContent = "API unreachable"; return null; }
  }

  function lineChart(svg, xs, series, opts = {}) {
    const W = svg.clientWidth || 600, H = svg.clientHeight || 180, P = { l: 48, r: 10, t: 10, b: 22 };
    const all = series.flatMap((s) => s.ys).filter((v) => v !== null && v !== undefined && isFinite(v));
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    if (!xs.length || !all.length) { svg.innerHTML = `<text x="${W / 2}" y="${H / 2}" text-anchor="middle" fill="#687083">no data yet</text>`; return; }
    let lo = Math.min(...all), hi = Math.max(...all);
    if (opts.zero) lo = Math.min(0, lo);
    if (hi === lo) { hi += 1; lo -= 1; }
    const x0 = xs[0], x1 = xs[xs.length - 1] === x0 ? x0 + 1 : xs[xs.length - 1];
    const X = (x) => P.l + ((x - x0) / (x1 - x0)) * (W - P.l - P.r);
    const Y = (y) => H - P.b - ((y - lo) / (hi - lo)) * (H - P.t - P.b);
    let out = "";
    for (let i = 0; i <= 4; i++) {
      const v = lo + ((hi - lo) * i) / 4, y = Y(v);
      out += `<line x1="${P.l}" x2="${W - P.r}" y1="${y}" y2="${y}" stroke="#e3e6ec"/>`;
      out += `<text x="${P.l - 6}" y="${y + 4}" text-anchor="end" font-size="10" fill="#687083">${Math.abs(hi - lo) < 5 ? v.toFixed(2) : v.toFixed(0)}</text>`;
    }
    out += `<text x="${P.l}" y="${H - 6}" font-size="10" fill="#687083">${x0}</text><text x="${W - P.r}" y="${H - 6}" text-anchor="end" font-size="10" fill="#687083">${x1} ${esc(opts.xlabel || "")}</text>`;
    if (opts.band) {
      const [lw, up] = opts.band;
      const top = xs.map((x, i) => `${X(x)},${Y(up[i])}`), bot = xs.map((x, i) => `${X(x)},${Y(lw[i])}`).reverse();
      out += `<polygon points="${top.concat(bot).join(" ")}" fill="#2b6cb0" opacity="0.12"/>`;
    }
    if (opts.hline !== undefined) out += `<line x1="${P.l}" x2="${W - P.r}" y1="${Y(opts.hline)}" y2="${Y(opts.hline)}" stroke="#c53030" stroke-dasharray="4 3"/>`;
    for (const s of series) {
      const pts = xs.map((x, i) => (s.ys[i] === null ? null : `${X(x)},${Y(s.ys[i])}`)).filter(Boolean);
      out += `<polyline points="${pts.join(" ")}" fill="none" stroke="${s.color || "#2b6cb0"}" stroke-width="1.6"/>`;
    }
    svg.innerHTML = out;
  }

  async function fleetPage() {
    async function refresh() {
      const st = await status();
      try {
        const [fleet, orders] = await Promise.all([get("/api/v1/machines"), get("/api/v1/work-orders?status=open")]);
        const ms = fleet.machines;
        ms.sort((a, b) => (a.predicted_rul ?? 1e9) - (b.predicted_rul ?? 1e9));
        $("c-machines").textContent = ms.length;
        $("c-risk").textContent = ms.filter((m) => m.status === "at_risk").length;
        $("c-orders").textContent = orders.count;
        if (st) { $("c-readings").textContent = st.readings_processed.toLocaleString(); $("c-model").textContent = `v${st.model.version}`; }
        $("fleet-note").textContent = `· a work order opens when the RUL interval's lower bound < ${fleet.threshold}`;
        document.querySelector("#fleet tbody").innerHTML = ms.map((m) => `<tr>
          <td><a href="/machines/${encodeURIComponent(m.machine_id)}">${esc(m.machine_id)}</a></td>
          <td>${badge(m.status)}</td><td class="num">${fmt(m.predicted_rul)}</td>
          <td class="num">${m.rul_interval ? `${fmt(m.rul_interval[0])}–${fmt(m.rul_interval[1])}` : "–"}</td>
          <td class="num">${m.readings}</td><td>${ago(m.last_reading_ts)}</td>
          <td>${m.open_work_order_id ? `#${m.open_work_order_id}` : ""}</td></tr>`).join("");
        document.querySelector("#orders tbody").innerHTML = orders.work_orders.map((o) => `<tr>
          <td>#${o.id}</td><td><a href="${esc(o.machine_url)}">${esc(o.machine_id)}</a></td><td>${badge(o.priority)}</td>
          <td class="num">${fmt(o.predicted_rul)}</td><td>${esc(o.component ?? "")}</td><td>${due(o.due_at)}</td>
          <td>${ago(o.opened_at)}</td></tr>`).join("") || `<tr><td colspan="7" class="muted">none</td></tr>`;
      } catch (e) { console.error(e); }
    }
    $("ask-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const question = $("ask-q").value.trim();
      if (!question) return;
      $("ask-answer").textContent = "…";
      const r = await fetch("/api/v1/assistant/ask", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ question }),
      });
      const body = await r.json();
      if (!r.ok) { $("ask-answer").textContent = body.error ? body.error.message : r.statusText; return; }
      $("ask-answer").textContent = body.answer;
      $("ask-sources").innerHTML = body.sources.length ? "Sources: " + body.sources.map((s) =>
        s.url ? `<a href="${esc(s.url)}">${esc(s.kind)}:${esc(s.id)}</a>` : `${esc(s.kind)}:${esc(s.id)}`).join(", ") : "";
    });
    await refresh();
    setInterval(refresh, 3000);
  }

  async function machinePage() {
    const id = decodeURIComponent(location.pathname.split("/").pop());
    document.title = `Pitstop — ${id}`;
    $("title").textContent = id;
    let sensorsBuilt = false;
    let shownOrders = "";
    const NEXT = { open: ["acknowledged", "in_progress", "cancelled"], acknowledged: ["in_progress", "cancelled"], in_progress: ["done", "cancelled"] };
    const FINDINGS = ["fault_confirmed", "no_fault_found", "other"];
    const LABELS = { acknowledged: "acknowledge", in_progress: "start", cancelled: "cancel" };
    function actions(o) {
      return (NEXT[o.status] || []).map((to) => to === "done"
        ? `<select class="finding" data-order="${o.id}"><option value="">finding…</option>${FINDINGS.map((f) => `<option>${f}</option>`).join("")}</select>
           <button data-order="${o.id}" data-to="done">done</button>`
        : `<button data-order="${o.id}" data-to="${to}">${LABELS[to]}</button>`).join(" ");
    }
    function orderRow(o) {
      const why = (o.explanation?.top_sensors || []).map((t) => `${esc(t.sensor)} (${fmt(t.contribution)})`).join(", ");
      const closed = o.finding ? `${esc(o.finding.replace(/_/g, " "))}${o.note ? `: ${esc(o.note)}` : ""}` : "";
      return `<tr><td>#${o.id}</td><td>${badge(o.status)}</td><td>${badge(o.priority)}</td>
        <td>${esc(o.component ?? "")}<div class="muted">${esc(o.procedure ?? "")}</div></td>
        <td>${why}<div class="muted">${esc(o.reason)}</div></td>
        <td>${due(o.due_at)}<div class="muted">opened ${ago(o.opened_at)}</div></td>
        <td>${actions(o)}<div class="muted">${closed}</div><div class="error" id="err-${o.id}"></div></td></tr>`;
    }
    document.querySelector("#m-orders").addEventListener("click", async (ev) => {
      const button = ev.target.closest("button[data-to]");
      if (!button) return;
      const order = button.dataset.order;
      const body = { status: button.dataset.to };
      if (body.status === "done") body.finding = document.querySelector(`select.finding[data-order="${order}"]`).value || null;
      const r = await fetch(`/api/v1/work-orders/${order}/transition`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      if (!r.ok) {
        const err = await r.json().catch(() => ({}));
        $(`err-${order}`).textContent = err.error ? err.error.message : r.statusText;
        return;
      }
      shownOrders = "";
      await refresh();
    });
    async function refresh() {
      await status();
      try {
        const [m, preds, tel] = await Promise.all([
          get(`/api/v1/machines/${encodeURIComponent(id)}`),
          get(`/api/v1/machines/${encodeURIComponent(id)}/predictions`),
          get(`/api/v1/machines/${encodeURIComponent(id)}/telemetry`),
        ]);
        $("m-status").innerHTML = badge(m.status);
        $("m-rul").textContent = fmt(m.predicted_rul);
        $("m-interval").textContent = m.rul_interval ? `${fmt(m.rul_interval[0])}–${fmt(m.rul_interval[1])}` : "–";
        $("m-readings").textContent = m.readings;
        $("m-model").textContent = m.model_version ? `v${m.model_version}` : "–";
        lineChart($("rul-chart"), preds.seq, [{ ys: preds.rul }], { band: [preds.rul_lower, preds.rul_upper], zero: true, xlabel: "seq" });
        const names = Object.keys(tel.values);
        if (!sensorsBuilt) {
          $("sensor-charts").innerHTML = names.map((n) => `<div class="chart"><h3>${esc(n)}</h3><svg id="s-${esc(n)}"></svg></div>`).join("");
          sensorsBuilt = true;
        }
        for (const n of names) lineChart($(`s-${n}`), tel.seq, [{ ys: tel.values[n], color: "#4a5568" }], { xlabel: "seq" });
        const ordersJson = JSON.stringify(m.work_orders);
        if (ordersJson !== shownOrders) {  // re-render only on change, so a chosen finding stays
          shownOrders = ordersJson;
          document.querySelector("#m-orders tbody").innerHTML = m.work_orders.map(orderRow).join("")
            || `<tr><td colspan="7" class="muted">none</td></tr>`;
        }
      } catch (e) { console.error(e); }
    }
    await refresh();
    setInterval(refresh, 5000);
  }

  window.Pitstop = { fleetPage, machinePage, lineChart };
})();

// Fleet page: every machine, sortable, filterable, searchable; re-rendered only when something changed.
(function () {
  "use strict";
  const P = window.Pitstop;
  const { $, esc, fmt, badge, label, unit, interval, time, isNum } = P;

  const STATUS_RANK = { at_risk: 0, ok: 1, no_data: 2, retired: 3 };
  const PRIORITY_RANK = { urgent: 0, critical: 0, high: 1, medium: 2, normal: 3, low: 4 };
  const state = { sort: "risk", dir: 1, search: "", type: "", status: "", machines: [], threshold: null, dataKey: "", shownKey: "" };

  const risk = (m) => (Array.isArray(m.rul_interval) && isNum(m.rul_interval[0]) ? m.rul_interval[0] : isNum(m.predicted_rul) ? m.predicted_rul : null);
  const slope = (m) => {
    const t = (Array.isArray(m.trend) ? m.trend : []).filter(isNum);
    return t.length >= 2 ? t[t.length - 1] - t[0] : null;
  };
  const ts = (m) => {
    const d = P.toDate(m.last_reading_ts);
    return d ? d.getTime() : null;
  };
  const KEYS = {
    machine_id: (m) => (m.machine_id == null ? null : String(m.machine_id)),
    machine_type: (m) => (m.machine_type == null ? null : String(m.machine_type)),
    status: (m) => (m.status in STATUS_RANK ? STATUS_RANK[m.status] : 9),
    predicted_rul: (m) => (isNum(m.predicted_rul) ? m.predicted_rul : null),
    risk,
    trend: slope,
    work_order: (m) => (m.open_work_order_id == null ? null : (PRIORITY_RANK[m.open_work_order_priority] ?? 5) * 1e9 + Number(m.open_work_order_id || 0)),
    last_reading_ts: ts,
  };
  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
  function compare(a, b) {
    const key = KEYS[state.sort] || risk;
    const va = key(a), vb = key(b);
    // missing values always sort last, whichever the direction
    if (va === null && vb !== null) return 1;
    if (vb === null && va !== null) return -1;
    let c = 0;
    if (va !== null && vb !== null) c = typeof va === "string" || typeof vb === "string" ? collator.compare(String(va), String(vb)) : va - vb;
    if (c === 0) return collator.compare(String(a.machine_id ?? ""), String(b.machine_id ?? ""));
    return c * state.dir;
  }

  function row(m) {
    const id = String(m.machine_id ?? "");
    const href = `/machines/${encodeURIComponent(id)}`;
    const u = m.time_unit || "";
    const status = m.status || "no_data";
    const wo = m.open_work_order_id != null
      ? `<a href="${href}#open-order">#${esc(m.open_work_order_id)}</a> ${badge(m.open_work_order_priority)}`
      : `<span class="muted">none</span>`;
    const spark = P.sparkline(m.trend, { label: `RUL trend of ${id}`, color: status === "at_risk" ? "#b42318" : "#1c5ba3" });
    return `<tr data-machine-id="${esc(id)}" class="st-${P.cls(status)}">`
      + `<td><a href="${href}">${esc(id)}</a></td>`
      + `<td>${esc(m.machine_type ?? "–")}</td>`
      + `<td>${badge(status)}</td>`
      + `<td class="num">${unit(m.predicted_rul, u)}</td>`
      + `<td class="num">${interval(m.rul_interval, u)}</td>`
      + `<td class="spark">${spark}</td>`
      + `<td>${wo}</td>`
      + `<td>${time(m.last_reading_ts)}</td></tr>`;
  }

  function visible() {
    const q = state.search.trim().toLowerCase();
    return state.machines.filter((m) =>
      (!state.type || m.machine_type === state.type)
      && (!state.status || (m.status || "no_data") === state.status)
      && (!q || String(m.machine_id ?? "").toLowerCase().includes(q)));
  }

  function render(force) {
    const key = `${state.dataKey}|${state.sort}|${state.dir}|${state.search}|${state.type}|${state.status}`;
    const body = $("fleet-body");
    if (!force && key === state.shownKey) {
      // nothing changed: only the "x s ago" texts age
      body.querySelectorAll("time[datetime]").forEach((t) => { t.textContent = P.ago(t.getAttribute("datetime")); });
      return;
    }
    state.shownKey = key;
    const rows = visible().sort(compare);
    body.innerHTML = rows.length
      ? rows.map(row).join("")
      : `<tr class="empty"><td colspan="8">${state.machines.length ? "No machine matches these filters." : "No machines registered yet."}</td></tr>`;
    $("fleet-count").textContent = `Showing ${rows.length.toLocaleString()} of ${state.machines.length.toLocaleString()} machines`;
    document.querySelectorAll("#fleet th").forEach((th) => {
      const b = th.querySelector("button.sort");
      if (!b) return;
      const on = b.dataset.sort === state.sort;
      if (on) th.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
      b.querySelector(".arrow").textContent = on ? (state.dir > 0 ? "▲" : "▼") : "";
    });
  }

  function typeOptions() {
    const sel = $("filter-type");
    const types = [...new Set(state.machines.map((m) => m.machine_type).filter((t) => t != null))].sort();
    const have = [...sel.options].slice(1).map((o) => o.value);
    if (types.join("\n") === have.join("\n")) return;
    const cur = sel.value;
    sel.innerHTML = `<option value="">All types</option>` + types.map((t) => `<option value="${esc(t)}">${esc(t)}</option>`).join("");
    if (types.includes(cur)) sel.value = cur;
    else if (cur) { sel.value = ""; state.type = ""; }
  }

  async function refresh() {
    const [fleet, status] = await Promise.all([
      P.api("/machines"),
      P.api("/status").catch(() => null),
    ]);
    const machines = Array.isArray(fleet.machines) ? fleet.machines.filter((m) => m && typeof m === "object") : [];
    state.machines = machines;
    state.threshold = isNum(fleet.threshold) ? fleet.threshold : null;
    state.dataKey = JSON.stringify(machines);
    const atRisk = machines.filter((m) => m.status === "at_risk").length;
    $("c-machines").textContent = machines.length.toLocaleString();
    $("c-risk").textContent = atRisk.toLocaleString();
    $("c-nodata").textContent = machines.filter((m) => !m.status || m.status === "no_data").length.toLocaleString();
    const open = status && isNum(status.work_orders_open) ? status.work_orders_open : machines.filter((m) => m.open_work_order_id != null).length;
    $("c-orders").textContent = open.toLocaleString();
    $("c-readings").textContent = status && isNum(status.readings_processed) ? fmt(status.readings_processed) : "–";
    $("fleet-note").textContent = state.threshold !== null
      ? `A work order opens when the lower end of the RUL interval falls below ${fmt(state.threshold)}. Sorted riskiest first by default.`
      : "";
    typeOptions();
    render(false);
  }

  // sorting, filters, search
  document.querySelector("#fleet thead").addEventListener("click", (ev) => {
    const b = ev.target.closest("button.sort");
    if (!b) return;
    if (state.sort === b.dataset.sort) state.dir = -state.dir;
    else { state.sort = b.dataset.sort; state.dir = 1; }
    render(true);
  });
  let pending = 0;
  const schedule = () => { cancelAnimationFrame(pending); pending = requestAnimationFrame(() => render(false)); };
  $("search").addEventListener("input", (ev) => { state.search = ev.target.value; schedule(); });
  $("filter-type").addEventListener("change", (ev) => { state.type = ev.target.value; render(false); });
  $("filter-status").addEventListener("change", (ev) => { state.status = ev.target.value; render(false); });
  $("fleet-filters").addEventListener("submit", (ev) => ev.preventDefault());

  P.start("fleet", refresh);
})();

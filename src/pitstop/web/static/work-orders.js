// Work-order board: one column per state, filters by priority, machine type, due date and machine.
(function () {
  "use strict";
  const P = window.Pitstop;
  const { $, esc, fmt, badge, label, unit, interval, time, isNum } = P;
  const RANK = P.orders.PRIORITY_RANK;
  const COLUMNS = ["open", "acknowledged", "in_progress", "done", "cancelled"];
  const RECENT = 25; // closed orders shown per column
  const filters = { priority: "", type: "", due: "", machine: "" };
  const shown = {};
  let orders = [];
  let machines = {}; // machine id -> {machine_type, time_unit}, for servers whose orders lack them
  let machinesAt = 0;

  async function loadMachines(force) {
    if (!force && Date.now() - machinesAt < 60000) return;
    machinesAt = Date.now();
    try {
      const fleet = await P.api("/machines");
      machines = {};
      for (const m of Array.isArray(fleet.machines) ? fleet.machines : []) {
        if (m && m.machine_id != null) machines[m.machine_id] = { machine_type: m.machine_type, time_unit: m.time_unit };
      }
    } catch (e) { /* types and units stay unknown */ }
  }
  const typeOf = (o) => o.machine_type ?? (machines[o.machine_id] || {}).machine_type ?? null;
  const unitOf = (o) => o.time_unit ?? (machines[o.machine_id] || {}).time_unit ?? "";
  const rank = (o) => RANK[o.priority] ?? 5;
  const dueMs = (o) => { const d = P.toDate(o.due_at); return d ? d.getTime() : Infinity; };
  const closedMs = (o) => { const d = P.toDate(o.closed_at) || P.toDate(o.opened_at); return d ? d.getTime() : 0; };

  function card(o) {
    const u = unitOf(o);
    const ex = o.explanation && typeof o.explanation === "object" ? o.explanation : {};
    const mid = String(o.machine_id ?? "");
    const closed = o.status === "done" || o.status === "cancelled";
    let html = `<article class="wo p-${P.cls(o.priority)}" data-work-order-id="${esc(o.id)}" aria-labelledby="wo-${esc(o.id)}-title">`
      + `<div class="row"><h3 id="wo-${esc(o.id)}-title"><a href="/machines/${encodeURIComponent(mid)}">${esc(mid || "?")}</a> · #${esc(o.id)}</h3>${badge(o.priority)}</div>`
      + `<div class="row muted small">${esc(typeOf(o) ?? "")}${typeOf(o) ? " · " : ""}RUL ${unit(o.predicted_rul, u)} (${interval(o.rul_interval, u)})</div>`;
    const component = o.component ?? ex.component;
    if (component) html += `<div class="row small">${esc(component)}</div>`;
    if (closed) {
      html += `<div class="row small">${o.status === "done" ? "closed" : "cancelled"} ${time(o.closed_at)}${o.technician ? ` by ${esc(o.technician)}` : ""}</div>`;
      if (o.finding) html += `<div class="row small">Finding: ${esc(label(o.finding))}</div>`;
      if (o.note) html += `<div class="row small muted">${esc(o.note)}</div>`;
    } else {
      html += `<div class="row small">${P.due(o.due_at)} · opened ${time(o.opened_at)}</div>`;
      html += P.orders.controls(o, `-${o.id}`);
    }
    return html + `</article>`;
  }

  function passes(o) {
    if (filters.priority && o.priority !== filters.priority) return false;
    if (filters.type && typeOf(o) !== filters.type) return false;
    if (filters.machine && !String(o.machine_id ?? "").toLowerCase().includes(filters.machine.toLowerCase())) return false;
    if (filters.due) {
      const end = new Date(`${filters.due}T00:00:00`).getTime(); // due before the start of that day
      if (!(dueMs(o) < end)) return false;
    }
    return true;
  }

  function options(sel, values, allText, fmtText = (v) => v) {
    const have = [...sel.options].slice(1).map((o) => o.value);
    if (have.join("\n") === values.join("\n")) return;
    const cur = sel.value;
    sel.innerHTML = `<option value="">${allText}</option>` + values.map((v) => `<option value="${esc(v)}">${esc(fmtText(v))}</option>`).join("");
    sel.value = values.includes(cur) ? cur : "";
  }

  function render() {
    const pri = [...new Set(["high", "medium", "low", ...orders.map((o) => o.priority).filter((p) => p != null)])]
      .sort((a, b) => (RANK[a] ?? 5) - (RANK[b] ?? 5) || String(a).localeCompare(String(b)));
    options($("filter-priority"), pri, "All priorities", (v) => label(v).replace(/^./, (c) => c.toUpperCase()));
    const types = [...new Set(orders.map(typeOf).filter((t) => t != null))].sort();
    options($("filter-type"), types, "All types");
    filters.priority = $("filter-priority").value;
    filters.type = $("filter-type").value;

    const matching = orders.filter(passes);
    const perm = P.can("work_orders.transition");
    let total = 0;
    for (const col of COLUMNS) {
      let list = matching.filter((o) => (o.status || "open") === col);
      const n = list.length;
      if (col === "done" || col === "cancelled") list = list.sort((a, b) => closedMs(b) - closedMs(a)).slice(0, RECENT);
      else list = list.sort((a, b) => rank(a) - rank(b) || dueMs(a) - dueMs(b) || (a.id ?? 0) - (b.id ?? 0));
      total += n;
      $(`n-${col}`).textContent = n > list.length ? `${list.length} of ${n}` : String(n);
      const html = list.length ? list.map(card).join("") : `<p class="none">none</p>`;
      if (shown[col] === html + perm) continue;
      shown[col] = html + perm;
      const root = $(`list-${col}`);
      P.preserving(root, () => { root.innerHTML = html; });
    }
    $("wo-count").textContent = `${total.toLocaleString()} of ${orders.length.toLocaleString()} work orders match`;
  }

  async function refresh(stale = () => false) {
    const body = await P.api("/work-orders?status=all&limit=1000");
    if (stale()) return; // an action ran meanwhile: the next poll paints its result
    orders = (Array.isArray(body.work_orders) ? body.work_orders : []).filter((o) => o && typeof o === "object" && o.id != null);
    const unknown = orders.some((o) => o.machine_type == null && !(o.machine_id in machines));
    await loadMachines(unknown && Date.now() - machinesAt > 15000);
    render();
  }

  const form = $("wo-filters");
  form.addEventListener("submit", (ev) => ev.preventDefault());
  form.addEventListener("change", () => { filters.due = $("filter-due").value; render(); });
  $("filter-machine").addEventListener("input", (ev) => { filters.machine = ev.target.value.trim(); render(); });
  form.addEventListener("reset", () => setTimeout(() => {
    Object.assign(filters, { priority: "", type: "", due: "", machine: "" });
    render();
  }, 0));
  // move the card at once, before the refresh that follows
  P.orders.bind($("board"), (order) => { orders = orders.map((o) => (o.id === order.id ? { ...o, ...order } : o)); render(); });
  P.start("work-orders", refresh);
})();

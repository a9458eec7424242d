// Machine page: sensor charts, RUL history with its interval band, why the latest score,
// the open work order with the actions the user's role allows, and the maintenance history.
(function () {
  "use strict";
  const P = window.Pitstop;
  const { $, esc, fmt, badge, label, unit, interval, time, isNum } = P;
  const path = location.pathname.replace(/\/+$/, "");
  const raw = path.startsWith("/machines/") ? path.slice("/machines/".length) : path.split("/").pop();
  let id = raw || "";
  try { id = decodeURIComponent(id); } catch (e) { /* keep it as it came */ }
  const enc = encodeURIComponent(id);
  document.title = `${id || "Machine"} · Pitstop`;
  $("title").textContent = id || "Machine";

  const shown = { order: null, explanation: null, history: null, rulKey: null, telKey: null, sensors: "" };
  let threshold = null;
  let lastPreds = null, lastTel = null, unitName = "";

  async function fleetThreshold() {
    // the work-order threshold: from the machine when it says, else the fleet's
    if (threshold !== null) return threshold;
    try {
      const fleet = await P.api("/machines");
      if (isNum(fleet.threshold)) threshold = fleet.threshold;
    } catch (e) { /* the chart goes without the line */ }
    return threshold;
  }

  function renderSummary(m) {
    unitName = m.time_unit || "";
    const bits = [m.machine_type, m.lifecycle && m.lifecycle !== "active" ? m.lifecycle : null, unitName ? `times in ${unitName}` : null].filter(Boolean);
    $("subtitle").textContent = bits.length ? bits.join(" · ") : "";
    $("m-status").innerHTML = badge(m.status || "no_data");
    $("m-rul").innerHTML = isNum(m.predicted_rul) ? `${fmt(m.predicted_rul)}${unitName ? `<span class="unit">${esc(unitName)}</span>` : ""}` : "–";
    $("m-interval").innerHTML = Array.isArray(m.rul_interval) && isNum(m.rul_interval[0]) && isNum(m.rul_interval[1])
      ? `${fmt(m.rul_interval[0])}–${fmt(m.rul_interval[1])}${unitName ? `<span class="unit">${esc(unitName)}</span>` : ""}` : "–";
    $("m-readings").textContent = isNum(m.readings) ? fmt(m.readings) : "–";
    $("m-last").innerHTML = time(m.last_reading_ts);
    $("m-model").textContent = m.model_version != null ? `v${m.model_version}` : "–";
  }

  function renderOpenOrder(orders) {
    const open = orders.find(P.orders.isOpen) || null;
    const key = JSON.stringify(open) + P.can("work_orders.transition");
    if (key === shown.order) return;
    shown.order = key;
    const root = $("open-order-body");
    $("open-order").classList.toggle("open-order", !!open);
    if (!open) {
      root.innerHTML = `<p class="muted">No open work order for this machine.</p>`;
      return;
    }
    const ex = open.explanation && typeof open.explanation === "object" ? open.explanation : {};
    const html = `<article data-work-order-id="${esc(open.id)}" aria-labelledby="wo-title">`
      + `<h3 id="wo-title">Work order #${esc(open.id)} ${badge(open.priority)} ${badge(open.status)}</h3>`
      + `<dl class="kv">`
      + `<dt>Due</dt><dd>${P.due(open.due_at)}</dd>`
      + `<dt>Opened</dt><dd>${time(open.opened_at)}</dd>`
      + (open.acknowledged_at ? `<dt>Acknowledged</dt><dd>${time(open.acknowledged_at)}</dd>` : "")
      + (open.started_at ? `<dt>Started</dt><dd>${time(open.started_at)}</dd>` : "")
      + `<dt>Predicted RUL</dt><dd>${unit(open.predicted_rul, unitName)} (${interval(open.rul_interval, unitName)})</dd>`
      + `<dt>Component</dt><dd>${esc(open.component ?? ex.component ?? "–")}</dd>`
      + `<dt>Procedure</dt><dd>${esc(open.procedure ?? ex.procedure ?? "–")}</dd>`
      + `<dt>Reason</dt><dd>${esc(open.reason ?? "–")}</dd>`
      + `</dl>${P.orders.controls(open)}</article>`;
    P.preserving(root, () => { root.innerHTML = html; });
  }

  function renderHistory(orders) {
    const key = JSON.stringify(orders);
    if (key === shown.history) return;
    shown.history = key;
    $("history-body").innerHTML = orders.length ? orders.map((o) => `<tr>`
      + `<td>#${esc(o.id)}</td><td>${badge(o.status)}</td><td>${badge(o.priority)}</td>`
      + `<td>${time(o.opened_at)}</td><td>${o.closed_at ? time(o.closed_at) : "–"}</td>`
      + `<td class="wrap">${esc(o.component ?? "–")}</td><td>${o.finding ? esc(label(o.finding)) : "–"}</td>`
      + `<td>${esc(o.technician ?? "–")}</td><td class="wrap">${esc(o.note ?? "")}</td></tr>`).join("")
      : `<tr class="empty"><td colspan="9">No work orders yet.</td></tr>`;
  }

  function renderExplanation(ex, err, openOrder) {
    const key = JSON.stringify([ex, err && err.code, openOrder && openOrder.explanation]);
    if (key === shown.explanation) return;
    shown.explanation = key;
    const root = $("explanation-body");
    if (err && err.code === "no_prediction") {
      root.innerHTML = `<p class="muted">No score yet: the machine is explained once the model has scored it.</p>`;
      return;
    }
    if (!ex && openOrder && openOrder.explanation && typeof openOrder.explanation === "object") ex = openOrder.explanation;
    if (!ex) {
      root.innerHTML = `<p class="muted">${err && err.status !== 404 ? esc(P.errorText(err)) : "No score yet."}</p>`;
      return;
    }
    const top = (Array.isArray(ex.top_sensors) ? ex.top_sensors : []).filter((t) => t && isNum(Number(t.contribution)));
    const prob = isNum(ex.component_probability) ? ` <span class="muted">(${fmt(ex.component_probability * 100)} % likely)</span>` : "";
    root.innerHTML = `<div class="grid2">`
      + `<div><h3>Contributions to the latest score</h3>`
      + P.bars(top.map((t) => ({ label: t.sensor ?? "?", value: Number(t.contribution) })), {
        label: `Sensor contributions to the predicted RUL${ex.seq != null ? ` at reading ${ex.seq}` : ""}`, width: 360,
        empty: "No contributions recorded.",
      })
      + `<p class="muted small">Negative values pull the predicted RUL down.${ex.model_version != null ? ` Model v${esc(ex.model_version)}.` : ""}</p></div>`
      + `<div><h3>Suspected component</h3><p class="component">${esc(ex.component ?? "none identified")}${prob}</p>`
      + `<h3>Procedure</h3><p>${esc(ex.procedure ?? "–")}</p>`
      + (ex.manual ? `<h3>Manual</h3><p class="mono">${esc(ex.manual)}</p>` : "")
      + `</div></div>`;
  }

  function drawRul(preds) {
    const p = preds || {};
    const xs = Array.isArray(p.seq) ? p.seq : [];
    const key = JSON.stringify([xs.length, xs[xs.length - 1], threshold, unitName]) + (p.rul ? p.rul[p.rul.length - 1] : "");
    if (key === shown.rulKey) return;
    shown.rulKey = key;
    P.lineChart($("rul-chart"), xs, [{ ys: Array.isArray(p.rul) ? p.rul : [] }], {
      band: Array.isArray(p.rul_lower) && Array.isArray(p.rul_upper) ? [p.rul_lower, p.rul_upper] : null,
      hline: threshold, hlineLabel: threshold !== null ? `threshold ${fmt(threshold)}` : null,
      zero: true, xlabel: "reading", ylabel: unitName ? `RUL (${unitName})` : "RUL", unit: unitName,
      label: `Predicted remaining useful life${unitName ? ` in ${unitName}` : ""} with its interval band and the work-order threshold`,
    });
    $("rul-note").textContent = xs.length ? `${xs.length} scores` : "";
  }

  function drawSensors(tel) {
    const t = tel || {};
    const values = t.values && typeof t.values === "object" ? t.values : {};
    const names = Object.keys(values);
    const xs = Array.isArray(t.seq) ? t.seq : [];
    const root = $("sensor-charts");
    if (!names.length) {
      if (shown.sensors !== "-") root.innerHTML = `<p class="muted">No readings yet.</p>`;
      shown.sensors = "-";
      return;
    }
    if (names.join("\n") !== shown.sensors) {
      shown.sensors = names.join("\n");
      shown.telKey = null;
      root.innerHTML = names.map((n, i) => `<div><h3 id="sensor-h-${i}">${esc(n)}</h3><svg class="chart small" data-sensor="${esc(n)}" role="img" aria-label="${esc(n)}"></svg></div>`).join("");
    }
    const key = JSON.stringify([xs.length, xs[xs.length - 1]]);
    if (key === shown.telKey) return;
    shown.telKey = key;
    root.querySelectorAll("svg[data-sensor]").forEach((svg) => {
      const n = svg.dataset.sensor;
      P.lineChart(svg, xs, [{ ys: Array.isArray(values[n]) ? values[n] : [], color: "#3d4a60" }], { xlabel: "reading", label: `Sensor ${n}, last ${xs.length} readings` });
    });
    $("sensors-note").textContent = xs.length ? `last ${xs.length} readings` : "";
  }

  let lastOrders = [];
  function showOrders(orders) {
    lastOrders = orders;
    renderOpenOrder(orders);
    renderHistory(orders);
  }

  async function refresh(stale = () => false) {
    const soft = (p) => p.then((v) => [v, null], (e) => [null, e]);
    const [[m, mErr], [preds, pErr], [tel, tErr], [ex, exErr]] = await Promise.all([
      soft(P.api(`/machines/${enc}`)),
      soft(P.api(`/machines/${enc}/predictions?limit=500`)),
      soft(P.api(`/machines/${enc}/telemetry?limit=300`)),
      soft(P.api(`/machines/${enc}/explanation`)),
    ]);
    if (stale()) return; // an action ran meanwhile: the next poll paints its result
    if (mErr) {
      if (mErr.status === 404) throw new P.ApiError(404, mErr.code, `No machine "${id}". ${mErr.message}`);
      throw mErr;
    }
    renderSummary(m);
    if (isNum(m.threshold)) threshold = m.threshold;
    else await fleetThreshold();
    const orders = Array.isArray(m.work_orders) ? m.work_orders.filter((o) => o && typeof o === "object") : [];
    showOrders(orders);
    renderExplanation(exErr ? null : ex, exErr, orders.find(P.orders.isOpen));
    lastPreds = preds; lastTel = tel;
    drawRul(preds);
    drawSensors(tel);
    const problems = [pErr && `RUL history: ${P.errorText(pErr)}`, tErr && `Sensor readings: ${P.errorText(tErr)}`].filter(Boolean);
    P.say(problems.length ? problems.join(" · ") : null, "error", "partial");
  }

  let resizeTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { shown.rulKey = null; shown.telKey = null; drawRul(lastPreds); drawSensors(lastTel); }, 200);
  });
  // show a moved work order at once, before the refresh that follows
  P.orders.bind($("open-order-body"), (order) => showOrders(lastOrders.map((o) => (o.id === order.id ? { ...o, ...order } : o))));
  P.start("fleet", refresh);
})();

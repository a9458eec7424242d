// Models page: per machine type the champion and challenger with metrics and lineage, the
// deployment mode and arms, drift per feature, retrain history; promote / roll back for engineers.
(function () {
  "use strict";
  const P = window.Pitstop;
  const { $, esc, fmt, badge, label, time, isNum } = P;
  const shown = { types: null, perf: null, other: null };
  const FEATURES_SHOWN = 12;

  const iso = (v) => (isNum(v) ? new Date(v).toISOString() : v ?? null); // registry times may be epoch ms
  const metricText = (v) => (isNum(v) ? (Math.abs(v) >= 100 || Number.isInteger(v) ? fmt(v) : Math.abs(v) >= 1 ? fmt(v, 2) : fmt(v, 3)) : esc(typeof v === "object" ? JSON.stringify(v) : v ?? "–"));
  const METRIC_ORDER = ["rmse", "cv_rmse", "mae", "cv_mae", "cv_rmse_near_failure", "cv_interval_coverage", "cv_interval_width"];

  function kv(obj, { order = [], skip = [], limit = Infinity, id = null } = {}) {
    if (!obj || typeof obj !== "object") return "";
    const keys = Object.keys(obj).filter((k) => !skip.includes(k));
    keys.sort((a, b) => {
      const ia = order.indexOf(a), ib = order.indexOf(b);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
    });
    const row = (k) => `<dt>${esc(label(k.replace(/^(pitstop|lineage)\./, "")))}</dt><dd>${metricText(obj[k])}</dd>`;
    const head = keys.slice(0, limit), rest = keys.slice(limit);
    let html = head.length ? `<dl class="kv">${head.map(row).join("")}</dl>` : "";
    if (rest.length) html += `<details class="small"${id ? ` id="${id}"` : ""}><summary>${rest.length} more</summary><dl class="kv">${rest.map(row).join("")}</dl></details>`;
    return html;
  }

  // champion / challenger / previous: from the new fields, else derived from the registry's versions
  function slot(t, name, serving) {
    if (t[name] && typeof t[name] === "object") return t[name];
    if (name in t && t[name] === null) return null;
    const versions = Array.isArray(t.versions) ? t.versions : [];
    const v = versions.find((x) => Array.isArray(x.aliases) && x.aliases.includes(name));
    if (!v && name === "champion" && serving) return { version: serving.version, metrics: serving.metrics, lineage: { feature_spec_hash: serving.feature_spec_hash } };
    if (!v) return null;
    const lineage = {};
    for (const [k, val] of Object.entries(v.tags || {})) if (k.startsWith("pitstop.")) lineage[k.slice(8)] = val;
    return {
      version: v.version, run_id: v.run_id, created_at: iso(v.created_at), lineage,
      metrics: name === "champion" && serving && String(serving.version) === String(v.version) ? serving.metrics : v.metrics || null,
    };
  }

  function versionCard(role, v, i) {
    if (!v) {
      return `<div class="model-card"><h3>${badge(role)}</h3><p class="muted">${role === "challenger" ? "No challenger waiting." : `No ${role}.`}</p></div>`;
    }
    let lineage = v.lineage && typeof v.lineage === "object" ? { ...v.lineage } : {};
    if (!Object.keys(lineage).length && v.tags && typeof v.tags === "object") {
      lineage = Object.fromEntries(Object.entries(v.tags).filter(([k]) => k.startsWith("pitstop.") || k.startsWith("lineage.")));
    }
    return `<div class="model-card" data-role="${esc(role)}">`
      + `<h3 id="t${i}-${role}">${badge(role)} <span class="version">v${esc(v.version ?? "?")}</span></h3>`
      + `<p class="small muted">${v.run_id ? `<span class="mono">run ${esc(v.run_id)}</span>` : "no run id"}${v.created_at ? ` · trained ${time(iso(v.created_at))}` : ""}</p>`
      + `<h4 class="visually-hidden">Metrics</h4>${kv(v.metrics, { order: METRIC_ORDER, limit: 6, id: `t${i}-${role}-metrics` }) || `<p class="muted small">no metrics recorded</p>`}`
      + (Object.keys(lineage).length ? `<details class="small" id="t${i}-${role}-lineage"><summary>Lineage</summary>${kv(lineage, { order: ["trained_on", "lake_version", "events_version", "feature_spec_hash", "code_revision", "seed"] })}</details>` : "")
      + `</div>`;
  }

  function deployment(d) {
    if (!d || typeof d !== "object") return `<p class="muted">Champion only (no deployment settings reported).</p>`;
    const arms = d.arms && typeof d.arms === "object" ? Object.entries(d.arms) : [];
    const share = isNum(d.challenger_percent) && d.mode && d.mode !== "champion" ? ` <span class="small">challenger gets ${fmt(d.challenger_percent)} % of traffic</span>` : "";
    // an arm is a list of {model_version, predictions, machines, mean_rul, last_at}, or a number, or an object
    const one = (x) => {
      if (x === null || typeof x !== "object") return isNum(x) && x <= 1 ? `${fmt(x * 100)} % of traffic` : metricText(x);
      const bits = [];
      if (x.model_version != null) bits.push(`<strong>v${esc(x.model_version)}</strong>`);
      if (isNum(x.predictions)) bits.push(`${fmt(x.predictions)} predictions`);
      if (isNum(x.machines)) bits.push(`${fmt(x.machines)} machines`);
      if (isNum(x.mean_rul)) bits.push(`mean RUL ${fmt(x.mean_rul)}`);
      if (x.last_at) bits.push(`last ${time(x.last_at)}`);
      const known = ["model_version", "predictions", "machines", "mean_rul", "last_at"];
      for (const [k, v] of Object.entries(x)) if (!known.includes(k) && (v === null || typeof v !== "object")) bits.push(`${esc(label(k))} ${metricText(v)}`);
      return bits.join(" · ");
    };
    const armText = (v) => (Array.isArray(v) ? v.map(one).join("<br>") : one(v));
    return `<p>Mode ${badge(d.mode || "champion")}${share}</p>`
      + (arms.length ? `<ul class="plain small">${arms.map(([k, v]) => `<li>${badge(k)} ${armText(v)}</li>`).join("")}</ul>` : `<p class="muted small">No predictions recorded per arm yet.</p>`);
  }

  function driftTable(scope, rep, idp) {
    if (!rep || typeof rep !== "object") return `<p class="muted">No drift check yet.</p>`;
    const feats = (Array.isArray(rep.features) ? rep.features : []).filter((f) => f && typeof f === "object")
      .slice().sort((a, b) => (b.drifted === true) - (a.drifted === true) || (Number(b.psi) || 0) - (Number(a.psi) || 0));
    const drifted = feats.filter((f) => f.drifted).length;
    const sensors = rep.drifted_sensors && typeof rep.drifted_sensors === "object" ? Object.keys(rep.drifted_sensors) : [];
    const row = (f) => `<tr><th scope="row">${esc(f.feature ?? "?")}</th><td class="num">${isNum(f.psi) ? f.psi.toFixed(3) : "–"}</td>`
      + `<td class="num">${isNum(f.p_adjusted ?? f.p_value) ? Number(f.p_adjusted ?? f.p_value).toExponential(1) : "–"}</td><td>${f.drifted ? badge("drifted") : badge("ok", "stable")}</td></tr>`;
    const table = (rows, cap) => `<table class="drift"><caption class="visually-hidden">${esc(cap)}</caption><thead><tr><th scope="col">Feature</th><th scope="col" class="num">PSI</th><th scope="col" class="num">p-value</th><th scope="col">State</th></tr></thead><tbody>${rows.map(row).join("") || `<tr class="empty"><td colspan="4">no features</td></tr>`}</tbody></table>`;
    const pred = rep.prediction && typeof rep.prediction === "object"
      ? ` Predictions: ${rep.prediction.drifted ? badge("drifted") : badge("ok", "stable")} (PSI ${isNum(rep.prediction.psi) ? rep.prediction.psi.toFixed(3) : "–"}).` : "";
    const odd = Array.isArray(rep.consistency) ? rep.consistency.filter((c) => c && c.inconsistent && Object.keys(c.inconsistent).length) : [];
    const consistency = odd.length
      ? ` Sensors out of line with the rest on: ${esc(odd.map((c) => `${c.sensor} (${Object.keys(c.inconsistent).length} machine${Object.keys(c.inconsistent).length === 1 ? "" : "s"})`).join(", "))}.`
      : "";
    return `<p class="small">${drifted} of ${feats.length} features drifted${isNum(rep.rows) ? ` in the last ${fmt(rep.rows)} rows` : ""}${rep.method === "conditioned" ? " (against training at the same life stage)" : ""}${sensors.length ? ` · alerting: ${esc(sensors.join(", "))}` : ""}.${pred}${consistency}</p>`
      + `<div class="table-wrap">${table(feats.slice(0, FEATURES_SHOWN), `Drift of the ${scope} scope, most drifted first`)}</div>`
      + (feats.length > FEATURES_SHOWN ? `<details class="small" id="${idp}-all"><summary>All ${feats.length} features</summary><div class="table-wrap">${table(feats.slice(FEATURES_SHOWN), `Drift of the ${scope} scope, remaining features`)}</div></details>` : "");
  }

  function history(rows) {
    rows = (Array.isArray(rows) ? rows : []).filter((r) => r && typeof r === "object");
    if (!rows.length) return `<p class="muted">No retraining recorded yet.</p>`;
    return `<ul class="plain small">${rows.slice(0, 20).map((r) => {
      const d = r.detail && typeof r.detail === "object" ? Object.entries(r.detail).filter(([, v]) => v === null || typeof v !== "object").slice(0, 5).map(([k, v]) => `${esc(label(k))} ${esc(v)}`).join(" · ") : esc(r.detail ?? "");
      return `<li>${time(r.ts)} · <strong>${esc(label(r.action))}</strong>${r.actor ? ` by ${esc(r.actor)}` : ""}${d ? ` · <span class="muted">${d}</span>` : ""}</li>`;
    }).join("")}</ul>`;
  }

  function typeSection(name, t, i, drift) {
    const serving = t.serving && typeof t.serving === "object" ? t.serving : null;
    const champion = slot(t, "champion", serving), challenger = slot(t, "challenger", serving), previous = slot(t, "previous", serving);
    let actions = "";
    // a challenger that is already the champion has nothing left to promote
    const canPromote = challenger && !(champion && champion.version === challenger.version);
    if (P.can("models.promote")) {
      actions = `<div class="actions">`
        + `<button type="button" class="primary" data-action="promote" data-machine-type="${esc(name)}"${canPromote ? "" : " disabled"}>Promote challenger</button>`
        + `<button type="button" data-action="rollback" data-machine-type="${esc(name)}">Roll back</button></div>`;
    }
    const scope = drift.scopes ? drift.scopes[`type:${name}`] ?? drift.scopes[name] : null;
    const driftHtml = drift.error ? `<p class="muted">${esc(drift.error)}</p>` : driftTable(name, scope, `t${i}-drift`);
    const versions = (Array.isArray(t.versions) ? t.versions : []).filter((v) => v && typeof v === "object");
    return `<section class="panel" data-machine-type="${esc(name)}" aria-labelledby="t${i}-h">`
      + `<div class="panel-head"><h2 id="t${i}-h">${esc(name)}</h2><span class="muted small">${esc(t.model ?? "")}</span><div class="right">${actions}</div></div>`
      + `<div class="model-cards">${versionCard("champion", champion, i)}${versionCard("challenger", challenger, i)}`
      + (previous ? versionCard("previous", previous, i) : "") + `</div>`
      + `<div class="grid3">`
      + `<div><h3>Deployment</h3>${deployment(t.deployment)}</div>`
      + `<div><h3>Retrain history</h3>${history(t.retrain_history)}</div>`
      + `<div><h3>Registered versions</h3>${versions.length ? `<ul class="plain small">${versions.slice().reverse().slice(0, 10).map((v) => `<li>v${esc(v.version)} ${(v.aliases || []).map((a) => badge(a)).join(" ")}${v.created_at ? ` · ${time(iso(v.created_at))}` : ""}</li>`).join("")}</ul>` : `<p class="muted">none</p>`}</div>`
      + `</div>`
      + `<h3>Drift per feature</h3>${driftHtml}`
      + `</section>`;
  }

  async function refresh() {
    const soft = (p) => p.then((v) => [v, null], (e) => [null, e]);
    const [[models, mErr], [drift, dErr], [perf, pErr]] = await Promise.all([
      soft(P.api("/models")), soft(P.api("/monitoring/drift")), soft(P.api("/monitoring/performance?limit=50")),
    ]);
    // performance at failures
    const perfHtml = pErr ? `<p class="muted">${esc(P.errorText(pErr))}</p>`
      : isNum(perf.count) && perf.count > 0
        ? `<p>${fmt(perf.caught_in_time)} of ${fmt(perf.count)} recent failures had a work order open in time.</p>`
        : `<p class="muted">No failures recorded yet.</p>`;
    if (perfHtml !== shown.perf) { shown.perf = perfHtml; $("performance").innerHTML = perfHtml; }

    const d = dErr
      ? { error: dErr.code === "no_processor" || dErr.status === 404 ? "Drift is checked by the processor; none runs in this server." : P.errorText(dErr) }
      : { scopes: drift && drift.scopes && typeof drift.scopes === "object" ? drift.scopes : {} };
    if (mErr) throw mErr;
    const types = models.machine_types && typeof models.machine_types === "object" ? models.machine_types : {};
    const names = Object.keys(types).sort();
    const html = names.length
      ? names.map((n, i) => typeSection(n, types[n] && typeof types[n] === "object" ? types[n] : {}, i, d)).join("")
      : `<section class="panel" aria-label="No models"><p class="muted">No machine types with models yet.</p></section>`;
    const key = html + P.can("models.promote");
    if (key !== shown.types) {
      const root = $("model-types");
      const open = [...root.querySelectorAll("details[id]")].filter((x) => x.open).map((x) => x.id);
      shown.types = key;
      root.innerHTML = html;
      open.forEach((id) => { const el = document.getElementById(id); if (el) el.open = true; });
    }
    // scopes not tied to one type (the whole fleet)
    const other = d.scopes ? Object.keys(d.scopes).filter((s) => !names.includes(s) && !names.some((n) => s === `type:${n}`)) : [];
    const otherHtml = other.map((s, i) => `<h3>${esc(label(s))}</h3>${driftTable(s, d.scopes[s], `o${i}-drift`)}`).join("");
    $("drift-other").hidden = !other.length;
    if (otherHtml !== shown.other) {
      const root = $("drift-other-body");
      const open = [...root.querySelectorAll("details[id]")].filter((x) => x.open).map((x) => x.id);
      shown.other = otherHtml;
      root.innerHTML = otherHtml;
      open.forEach((id) => { const el = document.getElementById(id); if (el) el.open = true; });
    }
  }

  $("model-types").addEventListener("click", async (ev) => {
    const b = ev.target.closest("button[data-action]");
    if (!b || !["promote", "rollback"].includes(b.dataset.action)) return;
    const type = b.dataset.machineType;
    const what = b.dataset.action === "promote" ? `Promote the challenger to champion for ${type}?` : `Roll ${type} back to the previous champion?`;
    if (!window.confirm(what)) return;
    await P.act(() => P.post(`/models/${encodeURIComponent(type)}/${b.dataset.action}`, {}), {
      okText: b.dataset.action === "promote" ? `Challenger promoted for ${type}.` : `${type} rolled back.`, button: b,
    });
  });
  P.start("models", refresh);
})();

// Audit page: the audit log, filterable by action and actor.
(function () {
  "use strict";
  const P = window.Pitstop;
  const { $, esc, label, time } = P;
  const known = { actions: new Set(), actors: new Set() };
  let shownKey = null;

  function detail(d) {
    if (d === null || d === undefined) return "";
    if (typeof d !== "object") return esc(d);
    return Object.entries(d).map(([k, v]) => {
      let text = Array.isArray(v) ? v.map((x) => (typeof x === "object" ? JSON.stringify(x) : String(x))).join(", ") : v !== null && typeof v === "object" ? JSON.stringify(v) : String(v);
      if (text.length > 160) text = `${text.slice(0, 157)}…`;
      return `<span class="muted">${esc(label(k))}</span> ${esc(text)}`;
    }).join(" · ");
  }

  function datalist(id, values) {
    const el = $(id);
    const html = [...values].sort().map((v) => `<option value="${esc(v)}"></option>`).join("");
    if (el.innerHTML !== html) el.innerHTML = html;
  }

  async function refresh() {
    const action = $("filter-action").value.trim();
    const actor = $("filter-actor").value.trim();
    const q = new URLSearchParams({ limit: "200" });
    // an exact, known value goes to the server (older entries too); a partial one filters here
    if (action && known.actions.has(action)) q.set("action", action);
    if (actor && known.actors.has(actor)) q.set("actor", actor);
    let body;
    try {
      body = await P.api(`/audit?${q}`);
    } catch (e) {
      if (e.status === 403) throw new P.ApiError(403, e.code, "The audit log is open to engineers and admins only.");
      throw e;
    }
    const all = (Array.isArray(body.entries) ? body.entries : []).filter((e) => e && typeof e === "object");
    all.forEach((e) => { if (e.action) known.actions.add(String(e.action)); if (e.actor) known.actors.add(String(e.actor)); });
    datalist("actions", known.actions);
    datalist("actors", known.actors);
    const a = action.toLowerCase(), u = actor.toLowerCase();
    const rows = all.filter((e) => (!a || String(e.action ?? "").toLowerCase().includes(a)) && (!u || String(e.actor ?? "").toLowerCase().includes(u)));
    const html = rows.length ? rows.map((e) => `<tr data-audit-id="${esc(e.id)}"><td>${time(e.ts)}</td><td>${esc(e.actor ?? "–")}</td><td>${esc(label(e.role))}</td>`
      + `<td><code>${esc(e.action ?? "–")}</code></td><td class="wrap small">${detail(e.detail)}</td></tr>`).join("")
      : `<tr class="empty"><td colspan="5">${all.length || action || actor ? "No entry matches these filters." : "The audit log is empty."}</td></tr>`;
    $("audit-count").textContent = `${rows.length} shown`;
    if (html !== shownKey) { shownKey = html; $("audit-body").innerHTML = html; }
    else $("audit-body").querySelectorAll("time[datetime]").forEach((t) => { t.textContent = P.ago(t.getAttribute("datetime")); });
  }

  let timer = 0;
  const form = $("audit-filters");
  form.addEventListener("submit", (ev) => { ev.preventDefault(); P.refresh(); });
  form.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(P.refresh, 300); });
  form.addEventListener("reset", () => setTimeout(P.refresh, 0));
  P.start("audit", refresh);
})();

// Data page: ingest rate (from successive /status polls), bus head and lag, lake table versions,
// the quarantine with reasons and a release button per machine.
(function () {
  "use strict";
  const P = window.Pitstop;
  const { $, esc, fmt, label, time, isNum } = P;
  const samples = []; // {t (ms), accepted}
  const rates = { t: [], v: [] };
  const shown = { lake: null, quarantine: null };
  let quarantined = [];

  function ingest(st) {
    const now = Date.now();
    if (isNum(st.readings_accepted)) {
      const prev = samples[samples.length - 1];
      if (prev && st.readings_accepted < prev.accepted) samples.length = 0; // a restarted server
      samples.push({ t: now, accepted: st.readings_accepted });
      while (samples.length > 2 && now - samples[0].t > 60000) samples.shift();
      if (prev && now > prev.t && st.readings_accepted >= prev.accepted) {
        rates.t.push(Math.round((now - samples[0].t) / 1000));
        rates.v.push(((st.readings_accepted - prev.accepted) * 1000) / (now - prev.t));
        if (rates.v.length > 120) { rates.t.shift(); rates.v.shift(); }
      }
    }
    const first = samples[0], last = samples[samples.length - 1];
    const rate = samples.length >= 2 && last.t > first.t ? ((last.accepted - first.accepted) * 1000) / (last.t - first.t) : null;
    $("ingest-rate").innerHTML = rate === null ? `<span class="unit">measuring…</span>` : `${fmt(rate, rate < 10 ? 1 : 0)}<span class="unit">/s</span>`;
    $("d-accepted").textContent = isNum(st.readings_accepted) ? fmt(st.readings_accepted) : "–";
    $("d-processed").textContent = isNum(st.readings_processed) ? fmt(st.readings_processed) : "–";
    const bus = st.bus && typeof st.bus === "object" ? st.bus : {};
    $("bus-head").textContent = isNum(bus.head) ? fmt(bus.head) : "–";
    $("bus-lag").textContent = isNum(bus.lag) ? fmt(bus.lag) : "–";
    const xs = rates.v.map((_, i) => i + 1);
    P.lineChart($("rate-chart"), xs, [{ ys: rates.v }], { zero: true, xlabel: "poll", label: "Ingest rate in readings per second over the last polls", unit: "readings/s" });
    const r = st.replay && typeof st.replay === "object" ? st.replay : null;
    const agents = r && isNum(r.agents) ? ` Edge agents: ${fmt(r.agents)}, ${fmt(r.offline ?? 0)} in a coverage gap now, ${fmt(r.buffered ?? 0)} readings buffered.` : "";
    $("replay").textContent = r ? `Replay: ${fmt(r.sent)} sent, ${fmt(r.accepted)} accepted${r.finished ? ", finished" : ""}.${agents}` : "";
  }

  function lake(body, err, st) {
    let html;
    if (err) {
      const v = st && st.lake && isNum(st.lake.telemetry_version) ? st.lake.telemetry_version : null;
      html = v !== null
        ? `<p>telemetry: version ${fmt(v)}</p><p class="muted small">${err.status === 404 ? "Table history is not available from this server." : esc(P.errorText(err))}</p>`
        : `<p class="muted">${esc(P.errorText(err))}</p>`;
    } else {
      const tables = body.tables && typeof body.tables === "object" ? Object.entries(body.tables) : [];
      html = tables.length ? `<div class="table-wrap"><table><caption class="visually-hidden">Lake tables, their current version and recent commits</caption>`
        + `<thead><tr><th scope="col">Table</th><th scope="col" class="num">Version</th><th scope="col">Recent commits</th></tr></thead><tbody>`
        + tables.map(([name, t]) => {
          t = t && typeof t === "object" ? t : {};
          const hist = (Array.isArray(t.history) ? t.history : []).filter((h) => h && typeof h === "object").slice(0, 5);
          const list = hist.length ? `<ul class="plain small">${hist.map((h) => `<li>v${esc(h.version ?? "?")} · ${esc(label(h.operation ?? ""))}${isNum(h.rows_added) ? ` · +${fmt(h.rows_added)} rows` : ""} · ${time(h.timestamp)}</li>`).join("")}</ul>` : `<span class="muted">–</span>`;
          return `<tr><th scope="row">${esc(name)}</th><td class="num">${isNum(t.version) ? fmt(t.version) : "–"}</td><td class="wrap">${list}</td></tr>`;
        }).join("") + `</tbody></table></div>` : `<p class="muted">No lake tables yet.</p>`;
    }
    if (html !== shown.lake) { shown.lake = html; $("lake").innerHTML = html; }
  }

  function quarantine(body, err) {
    let html, count = null, actions = "";
    if (err) {
      html = `<p class="muted">${err.status === 404 ? "The quarantine is not available from this server." : esc(P.errorText(err))}</p>`;
    } else {
      quarantined = (Array.isArray(body.readings) ? body.readings : []).filter((r) => r && typeof r === "object");
      count = isNum(body.count) ? body.count : quarantined.length;
      const byMachine = new Map();
      for (const r of quarantined) {
        const k = String(r.machine_id ?? "");
        if (!byMachine.has(k)) byMachine.set(k, []);
        byMachine.get(k).push(r);
      }
      const can = P.can("quarantine.release");
      if (can && quarantined.length) actions = `<button type="button" data-action="release-all">Release all</button>`;
      if (!quarantined.length) {
        html = `<p class="muted">Nothing in quarantine.</p>`;
      } else {
        const rows = [...byMachine.entries()].sort((a, b) => b[1].length - a[1].length || a[0].localeCompare(b[0])).map(([m, rs]) => {
          const reasons = new Map();
          rs.forEach((r) => reasons.set(r.reason ?? "unknown", (reasons.get(r.reason ?? "unknown") || 0) + 1));
          const seqs = rs.map((r) => r.seq).filter(isNum);
          const latest = rs.map((r) => r.ts).filter(Boolean).sort().pop();
          return `<tr><th scope="row">${m ? `<a href="/machines/${encodeURIComponent(m)}">${esc(m)}</a>` : "(no machine id)"}</th>`
            + `<td class="num">${fmt(rs.length)}</td>`
            + `<td class="wrap">${[...reasons.entries()].map(([r, n]) => `${esc(r)}${n > 1 ? ` <span class="muted">×${n}</span>` : ""}`).join("<br>")}</td>`
            + `<td class="num">${seqs.length ? `${fmt(Math.min(...seqs))}–${fmt(Math.max(...seqs))}` : "–"}</td>`
            + `<td>${time(latest)}</td>`
            + (can ? `<td><button type="button" data-action="release" data-machine-id="${esc(m)}" aria-label="Release ${esc(m)}">Release</button></td>` : "")
            + `</tr>`;
        }).join("");
        html = `<div class="table-wrap"><table id="quarantine-table"><caption class="visually-hidden">Quarantined readings by machine</caption><thead><tr>`
          + `<th scope="col">Machine</th><th scope="col" class="num">Readings</th><th scope="col">Reasons</th><th scope="col" class="num">Seq range</th><th scope="col">Latest</th>`
          + (can ? `<th scope="col">Action</th>` : "") + `</tr></thead><tbody>${rows}</tbody></table></div>`
          + `<details class="small"><summary>Every quarantined reading (${fmt(quarantined.length)}${count > quarantined.length ? ` of ${fmt(count)}` : ""})</summary><div class="table-wrap"><table><caption class="visually-hidden">Quarantined readings</caption>`
          + `<thead><tr><th scope="col">Machine</th><th scope="col" class="num">Seq</th><th scope="col">Time</th><th scope="col">Reason</th></tr></thead><tbody>`
          + quarantined.map((r) => `<tr><td>${esc(r.machine_id ?? "")}</td><td class="num">${isNum(r.seq) ? fmt(r.seq) : "–"}</td><td>${esc(P.when(r.ts))}</td><td class="wrap">${esc(r.reason ?? "")}</td></tr>`).join("")
          + `</tbody></table></div></details>`;
      }
    }
    $("d-quarantined").textContent = count === null ? "–" : fmt(count);
    const key = html + actions;
    if (key !== shown.quarantine) {
      const open = $("quarantine").querySelector("details")?.open;
      shown.quarantine = key;
      $("quarantine").innerHTML = html;
      $("quarantine-actions").innerHTML = actions;
      if (open && $("quarantine").querySelector("details")) $("quarantine").querySelector("details").open = true;
    }
  }

  async function refresh() {
    const soft = (p) => p.then((v) => [v, null], (e) => [null, e]);
    const [[st, sErr], [lk, lErr], [q, qErr]] = await Promise.all([
      soft(P.api("/status")), soft(P.api("/lake")), soft(P.api("/quarantine?limit=200")),
    ]);
    if (st) ingest(st);
    lake(lk, lErr, st);
    quarantine(q, qErr);
    if (sErr) throw sErr;
  }

  document.querySelector("main").addEventListener("click", async (ev) => {
    const b = ev.target.closest("button[data-action]");
    if (!b) return;
    if (b.dataset.action === "release") {
      const m = b.dataset.machineId;
      const seqs = quarantined.filter((r) => String(r.machine_id ?? "") === m).map((r) => r.seq).filter(isNum);
      const body = seqs.length ? { machine_id: m, seqs } : { machine_id: m };
      await P.act(async () => {
        const out = await P.post("/quarantine/release", body);
        P.say(`Released ${fmt(out && isNum(out.released) ? out.released : seqs.length)} readings of ${m}.`, "ok", "action");
        return out;
      }, { button: b, okText: null });
    } else if (b.dataset.action === "release-all") {
      if (!window.confirm("Release every quarantined reading back into the pipeline?")) return;
      await P.act(async () => {
        const out = await P.post("/quarantine/release", { all: true });
        P.say(`Released ${fmt(out && isNum(out.released) ? out.released : 0)} readings.`, "ok", "action");
        return out;
      }, { button: b, okText: null });
    }
  });
  P.start("data", refresh);
})();

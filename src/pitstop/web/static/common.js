// Pitstop dashboard, shared parts: the top bar, the JSON API helpers (CSRF on every non-GET),
// polling every 5 s, the "updated" indicator and the aria-live message region. Plain JS.
(function () {
  "use strict";
  const P = (window.Pitstop = window.Pitstop || {});
  const POLL_MS = 5000;
  const ALL_PERMISSIONS = ["fleet.read", "work_orders.transition", "models.promote", "quarantine.release", "audit.read"];

  // ---------- formatting ----------
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const isNum = (x) => typeof x === "number" && isFinite(x);
  // Intl formatters are slow to build: one per digit count, reused (a 1,000-row table formats thousands)
  const numberFormats = {};
  const fmt = (x, d = 0) => {
    if (x === null || x === undefined || x === "") return "–";
    const n = Number(x);
    if (!isFinite(n)) return esc(String(x));
    const f = numberFormats[d] || (numberFormats[d] = new Intl.NumberFormat(undefined, { minimumFractionDigits: d, maximumFractionDigits: d }));
    return f.format(n);
  };
  const label = (s) => (s === null || s === undefined || s === "" ? "–" : String(s).replace(/_/g, " "));
  const cls = (s) => String(s ?? "unknown").toLowerCase().replace(/[^a-z0-9_-]/g, "_");
  const badge = (v, text) => (v === null || v === undefined || v === "" ? "" : `<span class="badge b-${cls(v)}">${esc(text ?? label(v))}</span>`);
  // a duration in the machine's own unit: "123 cycles"
  const unit = (x, u, d = 0) => (x === null || x === undefined || !isFinite(Number(x)) ? "–" : `${fmt(x, d)}${u ? ` ${esc(u)}` : ""}`);
  const interval = (iv, u) => {
    if (!Array.isArray(iv) || iv.length < 2 || !isNum(iv[0]) || !isNum(iv[1])) return "–";
    return `${fmt(iv[0])}–${fmt(iv[1])}${u ? ` ${esc(u)}` : ""}`;
  };
  const toDate = (iso) => {
    if (!iso) return null;
    const d = new Date(iso);
    return isNaN(d.getTime()) ? null : d;
  };
  const span = (s) => (s < 60 ? `${Math.round(s)} s` : s < 3600 ? `${Math.round(s / 60)} min` : s < 172800 ? `${Math.round(s / 3600)} h` : `${Math.round(s / 86400)} d`);
  const ago = (iso) => {
    const d = toDate(iso);
    if (!d) return "–";
    const s = (Date.now() - d.getTime()) / 1000;
    return s >= -5 ? `${span(Math.max(0, s))} ago` : `in ${span(-s)}`;
  };
  const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  const local = (d) => dateTimeFormat.format(d);
  const when = (iso) => {
    const d = toDate(iso);
    return d ? local(d) : "–";
  };
  // <time> with the relative text and the full local time as a tooltip
  const time = (iso) => {
    const d = toDate(iso);
    return d ? `<time datetime="${esc(iso)}" title="${esc(local(d))}">${esc(ago(iso))}</time>` : "–";
  };
  const due = (iso) => {
    const d = toDate(iso);
    if (!d) return "–";
    const s = (d.getTime() - Date.now()) / 1000;
    const t = `<time datetime="${esc(iso)}" title="${esc(local(d))}">`;
    return s >= 0 ? `${t}due in ${span(s)}</time>` : `<span class="overdue">${t}overdue ${span(-s)}</time></span>`;
  };
  const clock = (d = new Date()) => d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });

  // ---------- API ----------
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }
  let csrf = null;
  function readCookie(name) {
    const m = document.cookie.match(new RegExp("(?:^|; )" + name.replace(/[.$?*|{}()[\]\\/+^]/g, "\\$&") + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : null;
  }
  function toLogin(reason) {
    const next = location.pathname + location.search;
    location.assign(`/login?next=${encodeURIComponent(next)}${reason ? `&error=${reason}` : ""}`);
  }
  async function api(path, opts = {}) {
    const method = (opts.method || "GET").toUpperCase();
    const headers = { Accept: "application/json" };
    const init = { method, headers, credentials: "same-origin" };
    if (method !== "GET" && method !== "HEAD") {
      const token = csrf || readCookie("csrf_token") || readCookie("pitstop_csrf");
      if (token) headers["X-CSRF-Token"] = token;
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(opts.body ?? {});
    }
    const url = path.startsWith("/api/") ? path : `/api/v1${path}`;
    let r;
    try {
      r = await fetch(url, init);
    } catch (e) {
      throw new ApiError(0, "unreachable", "The server cannot be reached; retrying every few seconds.");
    }
    let body = null;
    const text = await r.text().catch(() => "");
    if (text) {
      try { body = JSON.parse(text); } catch (e) { body = null; }
    }
    if (!r.ok) {
      const err = body && body.error ? body.error : body && body.detail ? { message: typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail) } : {};
      if (r.status === 401 && !opts.noRedirect) {
        toLogin("expired");
      }
      const fallback = r.status === 403 ? "Your role does not allow this." : r.status === 404 ? `Not found: ${url}` : `${r.status} ${r.statusText || "error"} from ${url}`;
      throw new ApiError(r.status, err.code || String(r.status), err.message || fallback);
    }
    if (body === null && text) throw new ApiError(r.status, "bad_json", `The server sent something that is not JSON for ${url}.`);
    return body ?? {};
  }
  const post = (path, body) => api(path, { method: "POST", body });

  // ---------- who am I ----------
  let me = null;
  async function loadMe() {
    try {
      const body = await api("/me");
      me = { user: body.user ?? null, role: body.role ?? null, permissions: Array.isArray(body.permissions) ? body.permissions : [], csrf: body.csrf_token ?? null, auth: true };
      csrf = me.csrf || csrf;
    } catch (e) {
      if (e.status === 404) {
        // a server without logins: everything is allowed
        me = { user: null, role: null, permissions: ALL_PERMISSIONS.slice(), csrf: null, auth: false };
      } else {
        me = { user: null, role: null, permissions: [], csrf: null, auth: true, error: e };
      }
    }
    return me;
  }
  const can = (perm) => !!me && me.permissions.includes(perm);

  // ---------- top bar, messages, indicator ----------
  const PAGES = [
    { key: "fleet", href: "/", text: "Fleet" },
    { key: "work-orders", href: "/work-orders", text: "Work orders" },
    { key: "models", href: "/models", text: "Models" },
    { key: "data", href: "/data", text: "Data" },
    { key: "audit", href: "/audit", text: "Audit", perm: "audit.read" },
  ];
  function renderTopbar(page) {
    const bar = document.querySelector("header.topbar");
    if (!bar) return;
    const links = PAGES.filter((p) => !p.perm || can(p.perm))
      .map((p) => `<li><a href="${p.href}"${p.key === page ? ' aria-current="page"' : ""}>${p.text}</a></li>`).join("");
    let session = `<span class="updated" id="updated" title="time of the last successful refresh">updated –</span>`;
    if (me && me.user) {
      session += `<span><span class="user" id="user">${esc(me.user)}</span>${me.role ? ` <span class="role" id="role">${esc(label(me.role))}</span>` : ""}</span>`;
    }
    if (me && me.auth) {
      session += `<form method="post" action="/logout" id="logout-form"><input type="hidden" name="csrf_token" value="${esc(me.csrf || "")}"><button type="submit" id="logout">Log out</button></form>`;
    }
    const updated = $("updated");
    const keep = updated ? updated.outerHTML : null;
    const chat = P.chat ? P.chat.toggleButton() : ""; // chat.js: the assistant's panel
    bar.innerHTML = `<a class="brand" href="/">Pitstop</a><nav aria-label="Main"><ul>${links}</ul></nav><div class="session">${chat}${session}</div>`;
    if (keep) $("updated").outerHTML = keep;
  }
  function region() {
    let r = $("messages");
    if (!r) {
      r = document.createElement("div");
      r.id = "messages";
      r.className = "messages";
      r.setAttribute("role", "status");
      r.setAttribute("aria-live", "polite");
      (document.querySelector("main") || document.body).prepend(r);
    }
    return r;
  }
  // one message per key: a poll error is replaced by the next poll's, and cleared when it succeeds
  function say(text, kind = "info", key = "msg") {
    const r = region();
    let el = r.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (!text) {
      if (el) el.remove();
      return;
    }
    if (!el) {
      el = document.createElement("div");
      el.dataset.key = key;
      r.append(el);
    }
    el.className = `msg ${kind}`;
    el.innerHTML = `<span>${esc(text)}</span><button type="button" class="link" data-dismiss>Dismiss</button>`;
    el.querySelector("[data-dismiss]").addEventListener("click", () => el.remove());
  }
  const errorText = (e) => (e && e.message ? e.message : String(e));
  function stamp(ok) {
    const u = $("updated");
    if (!u) return;
    if (ok) {
      u.textContent = `updated ${clock()}`;
      u.classList.remove("stale");
    } else {
      u.classList.add("stale");
    }
  }

  // ---------- polling ----------
  let refresher = null;
  let timer = null;
  let running = false;
  let again = false;
  let actions = 0; // bumped by every action: a poll that started before one must not paint old data
  async function tick() {
    if (!refresher) return;
    if (running) { again = true; return; }
    running = true;
    clearTimeout(timer);
    const started = actions;
    try {
      await refresher(() => started !== actions);
      say(null, "error", "poll");
      stamp(true);
    } catch (e) {
      console.error(e);
      say(errorText(e), "error", "poll");
      stamp(false);
    } finally {
      running = false;
      if (again) { again = false; timer = setTimeout(tick, 0); } else timer = setTimeout(tick, POLL_MS);
    }
  }

  // start a page: top bar, who is logged in, then refresh now and every 5 s
  async function start(page, refresh) {
    region();
    renderTopbar(page);
    await loadMe();
    renderTopbar(page);
    if (me.error) say(`Could not load your account: ${errorText(me.error)}`, "error", "me");
    refresher = refresh;
    document.addEventListener("visibilitychange", () => { if (!document.hidden) tick(); });
    await tick();
  }

  // run an action (a button press): errors go to the live region, then refresh at once
  async function act(fn, { okText = null, button = null, onDone = null } = {}) {
    if (button) button.disabled = true;
    say(null, "ok", "action");
    try {
      const out = await fn();
      actions += 1;
      if (okText) say(okText, "ok", "action");
      if (onDone) onDone(out);
      await tick();
      return out;
    } catch (e) {
      say(errorText(e), "error", "action");
      return null;
    } finally {
      if (button && button.isConnected) button.disabled = false;
    }
  }

  // keep what the user typed or chose inside `root` across an innerHTML re-render
  function preserving(root, render) {
    const saved = {};
    root.querySelectorAll("select[id], textarea[id], input[id]").forEach((el) => { saved[el.id] = el.value; });
    const opened = [...root.querySelectorAll("details[id]")].filter((d) => d.open).map((d) => d.id);
    const focused = document.activeElement && root.contains(document.activeElement) ? document.activeElement : null;
    const focusKey = focused ? (focused.id ? `#${CSS.escape(focused.id)}` : focused.dataset.action && focused.closest("[data-work-order-id]")
      ? `[data-work-order-id="${focused.closest("[data-work-order-id]").dataset.workOrderId}"] [data-action="${focused.dataset.action}"]` : null) : null;
    render();
    for (const [id, v] of Object.entries(saved)) {
      const el = document.getElementById(id);
      if (el && root.contains(el) && v !== "") el.value = v;
    }
    for (const id of opened) {
      const el = document.getElementById(id);
      if (el && root.contains(el)) el.open = true;
    }
    if (focusKey) {
      const el = root.querySelector(focusKey);
      if (el) el.focus();
    }
  }

  Object.assign(P, {
    $, esc, fmt, label, cls, badge, unit, interval, ago, when, time, due, clock, toDate, isNum,
    api, post, ApiError, loadMe, can, me: () => me, start, refresh: tick, say, errorText, act, preserving, toLogin,
    POLL_MS,
  });
})();

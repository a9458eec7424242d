// Pitstop dashboard: the maintenance assistant's chat panel, docked on every page (the top bar's
// "Assistant" button opens it). The current conversation (and whether the panel is open) lives in
// sessionStorage, so it follows the user across pages. Every text from the server is escaped;
// links are built only from local paths. Plain JS, loaded after common.js.
(function () {
  "use strict";
  const P = window.Pitstop;
  const { esc, label } = P;
  const KEY = "pitstop.chat";
  const $ = (id) => document.getElementById(id);

  // ---------- the state kept across pages ----------
  function load() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(KEY) || "{}");
      return { id: typeof saved.id === "string" ? saved.id : null, open: saved.open === true };
    } catch (e) {
      return { id: null, open: false };
    }
  }
  const state = load();
  function save() {
    try { sessionStorage.setItem(KEY, JSON.stringify({ id: state.id, open: state.open })); } catch (e) { /* private mode: this page only */ }
  }
  let messages = []; // the current conversation's messages, oldest first
  let loadedId = null; // the conversation whose messages are shown
  let sending = false;

  // ---------- rendering ----------
  // a link only to a local page ("/machines/eng-031"), never "//host" or "javascript:"
  const localPath = (url) => (typeof url === "string" && /^\/(?!\/)/.test(url) ? url : null);
  function sourceHtml(s) {
    if (!s || typeof s !== "object") return "";
    const kind = String(s.kind ?? "");
    let href = null;
    let text = s.title ? String(s.title) : `${label(kind)} ${s.id ?? ""}`.trim();
    if (kind === "machine" && s.id) {
      href = `/machines/${encodeURIComponent(String(s.id))}`;
    } else if (kind === "work_order") {
      href = localPath(s.url) || (s.machine_id ? `/machines/${encodeURIComponent(String(s.machine_id))}` : null);
    } else if (kind === "manual") {
      text = `${s.document ?? "manual"} § ${s.section ?? s.title ?? ""}`;
    } else {
      href = localPath(s.url);
    }
    const li = `<li data-kind="${esc(kind)}">`;
    return href ? `${li}<a href="${esc(href)}">${esc(text)}</a></li>` : `${li}<cite>${esc(text)}</cite></li>`;
  }
  function actionText(a) {
    if (a.type === "event.inspection") return `Record an inspection of ${a.machine_id ?? "?"}`;
    if (a.type === "work_order.transition") {
      const what = a.to ? label(a.to) : "change";
      return `WO-${a.work_order ?? "?"} on ${a.machine_id ?? "?"}: ${what}${a.finding ? ` (${label(a.finding)})` : ""}`;
    }
    return label(a.type ?? "action");
  }
  // a proposal gets Yes/No buttons only while it is the conversation's last word
  function actionHtml(a, last, n) {
    if (!a || typeof a !== "object") return "";
    const st = String(a.state ?? "unknown");
    const note = a.note ? `<div class="small">Note: ${esc(a.note)}</div>` : "";
    const error = a.error && a.error.message ? `<div class="small error">${esc(a.error.message)}</div>` : "";
    let buttons = "";
    if (st === "proposed" && last) {
      const desc = `chat-action-${n}`;
      buttons = `<div class="actions"><button type="button" class="primary" data-chat-reply="yes" aria-describedby="${desc}">Yes</button>`
        + `<button type="button" data-chat-reply="no" aria-describedby="${desc}">No</button></div>`;
      return `<div class="chat-action" data-state="${esc(st)}"><div id="${desc}">${esc(actionText(a))}</div>${note}${buttons}</div>`;
    }
    return `<div class="chat-action" data-state="${esc(st)}">${P.badge(st)} ${esc(actionText(a))}${note}${error}</div>`;
  }
  function messageHtml(m, i) {
    const mine = m.role === "user";
    const last = i === messages.length - 1;
    const sources = Array.isArray(m.sources) && m.sources.length
      ? `<div class="chat-sources"><span class="small muted">Sources:</span><ul>${m.sources.map(sourceHtml).join("")}</ul></div>` : "";
    const actions = Array.isArray(m.actions) ? m.actions.map((a) => actionHtml(a, last, i)).join("") : "";
    return `<li class="chat-msg ${mine ? "from-user" : "from-assistant"}"><span class="visually-hidden">${mine ? "You:" : "Assistant:"}</span>`
      + `<div class="chat-text">${esc(m.text)}</div>${sources}${actions}</li>`;
  }
  function render() {
    const log = $("chat-log");
    if (!messages.length) {
      log.innerHTML = `<li class="chat-empty muted">Ask about the fleet, a machine, a work order or a manual: “which machines are at risk?”, “close WO-12 as fault confirmed”.</li>`;
    } else {
      log.innerHTML = messages.map(messageHtml).join("");
    }
    if (sending) log.insertAdjacentHTML("beforeend", `<li class="chat-msg from-assistant chat-wait muted">Thinking…</li>`);
    log.scrollTop = log.scrollHeight;
  }
  function announce(text) {
    const live = $("chat-live");
    live.textContent = "";
    // a fresh text node after the clear, so the same answer twice is still announced
    setTimeout(() => { live.textContent = text; }, 50);
  }
  function showError(text) {
    $("chat-error").textContent = text || "";
  }

  // ---------- talking to the API ----------
  function readable(e) {
    if (e && e.status === 429) return `Too many messages: ${e.message}`;
    if (e && e.code === "message_too_long") return `Your message is too long: ${e.message}`;
    return `The assistant could not answer: ${P.errorText(e)}`;
  }
  async function send(text) {
    text = String(text ?? "").trim();
    if (!text || sending) return;
    showError("");
    sending = true;
    const input = $("chat-input");
    if (input.value.trim() === text) input.value = "";
    messages.push({ role: "user", text, sources: [], actions: [] });
    render();
    $("chat-send").disabled = true;
    try {
      const body = state.id ? { conversation_id: state.id, message: text } : { message: text };
      const reply = await P.post("/assistant/chat", body);
      state.id = reply.conversation_id;
      loadedId = state.id;
      save();
      messages.push({ role: "assistant", text: reply.answer ?? "", sources: reply.sources ?? [], actions: reply.actions ?? [] });
      sending = false;
      render();
      announce(`Assistant: ${reply.answer ?? ""}`);
      if (Array.isArray(reply.actions) && reply.actions.some((a) => a && a.state === "done")) P.refresh();
    } catch (e) {
      messages.pop(); // not kept by the server: the text goes back to the box
      if (!input.value.trim()) input.value = text;
      sending = false;
      render();
      if (e && e.code === "conversation_not_found") { state.id = null; loadedId = null; messages = []; save(); render(); }
      showError(readable(e));
    } finally {
      sending = false;
      $("chat-send").disabled = false;
    }
  }
  async function resume(id) {
    showError("");
    try {
      const body = await P.api(`/assistant/conversations/${encodeURIComponent(id)}`);
      state.id = body.conversation_id;
      loadedId = state.id;
      messages = Array.isArray(body.messages) ? body.messages : [];
    } catch (e) {
      if (e && e.status === 404) { state.id = null; loadedId = null; messages = []; } else showError(`Could not load the conversation: ${P.errorText(e)}`);
    }
    save();
    render();
  }
  function startNew() {
    state.id = null;
    loadedId = null;
    messages = [];
    showError("");
    save();
    render();
    $("chat-input").focus();
  }

  // ---------- the conversation list ----------
  async function showList() {
    const list = $("chat-list");
    list.innerHTML = `<li class="muted">loading…</li>`;
    try {
      const body = await P.api("/assistant/conversations");
      const found = Array.isArray(body.conversations) ? body.conversations : [];
      list.innerHTML = found.length ? found.map((c) => `<li data-conversation-id="${esc(c.conversation_id)}"${c.conversation_id === state.id ? ' class="current"' : ""}>`
        + `<button type="button" class="link" data-chat-resume="${esc(c.conversation_id)}"${c.conversation_id === state.id ? ' aria-current="true"' : ""}>${esc(c.title || "(untitled)")}</button>`
        + ` <span class="small muted">${P.time(c.updated_at)}</span>`
        + `<button type="button" class="danger" data-chat-delete="${esc(c.conversation_id)}" aria-label="Delete conversation: ${esc(c.title || "untitled")}">Delete</button></li>`).join("")
        : `<li class="muted">No conversations yet.</li>`;
    } catch (e) {
      list.innerHTML = `<li class="error">${esc(P.errorText(e))}</li>`;
    }
  }
  function setListOpen(open) {
    $("chat-history").hidden = !open;
    $("chat-history-toggle").setAttribute("aria-expanded", String(open));
    if (open) showList();
  }
  async function remove(id, row) {
    showError("");
    try {
      await P.api(`/assistant/conversations/${encodeURIComponent(id)}`, { method: "DELETE" });
    } catch (e) {
      if (!(e && e.status === 404)) { showError(`Could not delete the conversation: ${P.errorText(e)}`); return; }
    }
    const next = row && (row.nextElementSibling || row.previousElementSibling);
    if (row) row.remove();
    if (id === state.id) startNew();
    announce("Conversation deleted.");
    const target = next && next.querySelector("[data-chat-resume]");
    if (target) target.focus();
    else { if (!$("chat-list").children.length) $("chat-list").innerHTML = `<li class="muted">No conversations yet.</li>`; $("chat-new").focus(); }
  }

  // ---------- opening and closing ----------
  function toggleButton() {
    return `<button type="button" id="chat-toggle" class="chat-toggle" aria-controls="chat-panel" aria-expanded="${state.open}">Assistant</button>`;
  }
  function setOpen(open, { focus = true } = {}) {
    state.open = open;
    save();
    $("chat-panel").hidden = !open;
    document.body.classList.toggle("chat-open", open);
    const toggle = $("chat-toggle");
    if (toggle) toggle.setAttribute("aria-expanded", String(open));
    if (open) {
      if (state.id && loadedId !== state.id) resume(state.id);
      else render();
      if (focus) $("chat-input").focus();
    } else if (focus && toggle) {
      toggle.focus();
    }
  }

  function build() {
    const panel = document.createElement("aside");
    panel.id = "chat-panel";
    panel.className = "chat";
    panel.hidden = true;
    panel.setAttribute("aria-labelledby", "chat-title");
    panel.innerHTML = `
      <div class="chat-head">
        <h2 id="chat-title">Assistant</h2>
        <button type="button" id="chat-new">New conversation</button>
        <button type="button" id="chat-history-toggle" aria-expanded="false" aria-controls="chat-history">Conversations</button>
        <button type="button" id="chat-close">Close</button>
      </div>
      <section id="chat-history" class="chat-history" hidden aria-labelledby="chat-history-title">
        <h3 id="chat-history-title">Your conversations</h3>
        <ul id="chat-list" class="plain"></ul>
      </section>
      <ol id="chat-log" class="chat-log" aria-label="Messages in this conversation"></ol>
      <div id="chat-live" class="visually-hidden" role="status" aria-live="polite"></div>
      <div id="chat-error" class="chat-error" role="alert"></div>
      <form id="chat-form" class="chat-form">
        <label for="chat-input">Message to the assistant</label>
        <textarea id="chat-input" name="message" rows="2" autocomplete="off" placeholder="which machines are at risk?"></textarea>
        <button type="submit" id="chat-send" class="primary">Send</button>
      </form>`;
    document.body.append(panel);

    $("chat-form").addEventListener("submit", (ev) => { ev.preventDefault(); send($("chat-input").value); });
    $("chat-input").addEventListener("keydown", (ev) => {
      // Enter sends, Shift+Enter is a new line
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); send($("chat-input").value); }
    });
    $("chat-new").addEventListener("click", () => { startNew(); if (!$("chat-history").hidden) showList(); });
    $("chat-close").addEventListener("click", () => setOpen(false));
    $("chat-history-toggle").addEventListener("click", () => setListOpen($("chat-history").hidden));
    panel.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") { ev.preventDefault(); setOpen(false); }
    });
    panel.addEventListener("click", async (ev) => {
      const reply = ev.target.closest("[data-chat-reply]");
      if (reply) {
        panel.querySelectorAll("[data-chat-reply]").forEach((b) => { b.disabled = true; });
        $("chat-input").focus();
        await send(reply.dataset.chatReply);
        return;
      }
      const resumeButton = ev.target.closest("[data-chat-resume]");
      if (resumeButton) {
        await resume(resumeButton.dataset.chatResume);
        setListOpen(false);
        $("chat-input").focus();
        return;
      }
      const del = ev.target.closest("[data-chat-delete]");
      if (del) await remove(del.dataset.chatDelete, del.closest("li"));
    });
    // the top bar is re-rendered by common.js: listen on the document, not on the button
    document.addEventListener("click", (ev) => {
      if (ev.target.closest("#chat-toggle")) setOpen(!state.open);
    });
    // logging out ends the conversation in this tab: the next user starts afresh
    document.addEventListener("submit", (ev) => {
      if (ev.target.id === "logout-form") try { sessionStorage.removeItem(KEY); } catch (e) { /* nothing kept */ }
    });
    if (state.open) setOpen(true, { focus: false });
  }

  P.chat = { toggleButton, open: () => setOpen(true), close: () => setOpen(false), send };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", build);
  else build();
})();

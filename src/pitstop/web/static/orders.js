// Work-order lifecycle actions, shared by the machine page and the work-order board.
// open -> acknowledged -> in_progress -> done | cancelled (cancelled from any open state;
// in_progress also straight from open). Buttons carry data-action="<target state>".
(function () {
  "use strict";
  const P = window.Pitstop;
  const { esc } = P;
  const NEXT = { open: ["acknowledged", "in_progress", "cancelled"], acknowledged: ["in_progress", "cancelled"], in_progress: ["done", "cancelled"] };
  const TEXT = { acknowledged: "Acknowledge", in_progress: "Start", done: "Close", cancelled: "Cancel" };
  const FINDINGS = [["fault_confirmed", "Fault confirmed"], ["no_fault_found", "No fault found"], ["other", "Other work"]];
  const OPEN = ["open", "acknowledged", "in_progress"];
  const PRIORITY_RANK = { urgent: 0, critical: 0, high: 1, medium: 2, normal: 3, low: 4 };

  /** The lifecycle controls of an order; `suffix` makes ids unique where several orders share a page. */
  function controls(o, suffix = "") {
    const next = NEXT[o.status] || [];
    if (!next.length) return "";
    if (!P.can("work_orders.transition")) {
      return `<p class="muted small">Your role cannot move work orders.</p>`;
    }
    let form = "";
    if (next.includes("done")) {
      const fid = `finding${suffix}`, nid = `note${suffix}`;
      form = `<div class="close-form">`
        + `<div class="field"><label for="${fid}">Finding</label><select id="${fid}" name="finding"><option value="">Choose…</option>`
        + FINDINGS.map(([v, t]) => `<option value="${v}">${t}</option>`).join("") + `</select></div>`
        + `<div class="field"><label for="${nid}">Note (optional)</label><textarea id="${nid}" name="note" rows="2" maxlength="4000"></textarea></div>`
        + `</div>`;
    }
    const buttons = next.map((to) => `<button type="button" data-action="${to}"${to === "done" ? ' class="primary"' : to === "cancelled" ? ' class="danger"' : ""}>${TEXT[to]}</button>`).join("");
    return `${form}<div class="actions">${buttons}</div>`;
  }

  /** Handle lifecycle button presses inside `root` (event delegation). */
  function bind(root, onDone = null) {
    root.addEventListener("click", async (ev) => {
      const button = ev.target.closest("button[data-action]");
      if (!button || !(button.dataset.action in TEXT)) return;
      const card = button.closest("[data-work-order-id]");
      if (!card) return;
      const id = card.dataset.workOrderId;
      const body = { status: button.dataset.action };
      if (body.status === "done") {
        const finding = card.querySelector('select[name="finding"]');
        if (!finding || !finding.value) {
          P.say(`Choose a finding before closing work order #${id}.`, "error", "action");
          if (finding) finding.focus();
          return;
        }
        body.finding = finding.value;
        const note = card.querySelector('textarea[name="note"]');
        if (note && note.value.trim()) body.note = note.value.trim();
      }
      const done = { acknowledged: "acknowledged", in_progress: "started", done: "closed", cancelled: "cancelled" }[body.status];
      await P.act(() => P.post(`/work-orders/${encodeURIComponent(id)}/transition`, body), {
        okText: `Work order #${id} ${done}.`, button,
        onDone: (order) => { if (onDone && order && typeof order === "object" && order.id != null) onDone(order); },
      });
    });
  }

  const isOpen = (o) => OPEN.includes(o && o.status);
  Object.assign(P, { orders: { controls, bind, isOpen, NEXT, TEXT, FINDINGS, OPEN, PRIORITY_RANK } });
})();

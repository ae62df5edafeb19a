/* Live task cards: Server-Sent Events, falling back to polling /status every 2 s.
   The container #task-list carries data-stream (the SSE URL) and data-seq (the last sequence
   number the server rendered), so no change between render and connect is missed. */
"use strict";
(function () {
  const D = window.Darkroom;
  const FINAL = new Set(["completed", "failed", "canceled"]);
  const POLL_MS = 2000;

  function card(id) { return document.getElementById("task-" + id); }

  async function refreshCard(id) {
    const single = document.getElementById("task-list")?.dataset.single ? "?single=true" : "";
    const response = await fetch("/ui/tasks/" + encodeURIComponent(id) + "/card" + single,
      { credentials: "same-origin" });
    if (!response.ok) return;
    const html = await response.text();
    const tpl = document.createElement("template");
    tpl.innerHTML = html.trim();
    const fresh = tpl.content.firstElementChild;
    const list = document.getElementById("task-list");
    const old = card(id);
    if (old) {
      const hadFocus = old.contains(document.activeElement);
      old.replaceWith(fresh);
      if (hadFocus) { const b = fresh.querySelector("button, a"); if (b) b.focus(); }
    } else if (list && !list.dataset.single) {
      list.prepend(fresh);
      const empty = document.getElementById("empty");
      if (empty) empty.hidden = true;
      const title = document.getElementById("tasks-title");
      if (title) {
        list.dataset.total = String(Number(list.dataset.total || 0) + 1);
        title.textContent = D.t("tasks.title", { n: list.dataset.total });
      }
    }
    D.formatDates(fresh);
    document.dispatchEvent(new CustomEvent("darkroom:task", { detail: { id, status: fresh.dataset.status } }));
  }

  function applyProgress(el, status, progress) {
    const bar = el.querySelector("progress");
    const pct = el.querySelector(".pct");
    if (bar) bar.value = progress;
    if (pct) pct.textContent = progress + "%";
    if (status && el.dataset.status !== status) {
      el.dataset.status = status;
      const text = el.querySelector(".status-text");
      if (text) text.textContent = D.t("status." + status);
      el.className = el.className.replace(/status-\w+/, "status-" + status);
    }
  }

  function handle(ev) {
    const el = card(ev.taskId);
    if (el && Number(el.dataset.seq) >= ev.seq) return;
    if (el && ev.kind === "progress" && el.dataset.status === ev.status) {
      el.dataset.seq = ev.seq;
      applyProgress(el, ev.status, ev.progress);
      return;
    }
    if (el) { el.dataset.seq = ev.seq; applyProgress(el, ev.status, ev.progress); }
    refreshCard(ev.taskId);
  }

  function setState(text) {
    const el = document.getElementById("live-state");
    if (el) el.textContent = text;
  }

  let pollTimer = null;
  function startPolling() {
    if (pollTimer) return;
    setState(D.t("tasks.polling"));
    pollTimer = setInterval(async () => {
      for (const el of document.querySelectorAll("#task-list .task")) {
        if (FINAL.has(el.dataset.status)) continue;
        const response = await fetch("/api/tasks/" + el.dataset.id + "/status",
          { credentials: "same-origin", cache: "no-cache" });
        if (!response.ok) continue;
        const data = (await response.json()).data;
        if (data.seq > Number(el.dataset.seq)) {
          handle({ taskId: data.id, seq: data.seq, kind: "status", status: data.status, progress: data.progress });
        }
      }
    }, POLL_MS);
  }

  function start() {
    const list = document.getElementById("task-list");
    if (!list) return;
    if (!("EventSource" in window) || list.dataset.polling) { startPolling(); return; }
    let opened = false;
    let failures = 0;
    const url = list.dataset.stream + "?lastEventId=" + encodeURIComponent(list.dataset.seq || "0");
    const source = new EventSource(url);
    source.onopen = () => { opened = true; failures = 0; setState(D.t("tasks.live")); };
    source.onmessage = (msg) => {
      try { handle(JSON.parse(msg.data)); } catch (e) { /* ignore a malformed event */ }
    };
    source.onerror = () => {
      failures += 1;
      // The browser reconnects by itself with Last-Event-ID; give up only if it never works.
      if (!opened || failures > 5) { source.close(); startPolling(); }
    };
  }

  document.addEventListener("click", async (e) => {
    const button = e.target.closest("button[data-action]");
    if (!button) return;
    const id = button.dataset.task;
    button.disabled = true;
    try {
      await D.api("POST", "/api/tasks/" + encodeURIComponent(id) + "/" + button.dataset.action);
      await refreshCard(id);
    } catch (err) {
      button.disabled = false;
      const el = card(id);
      D.toast(D.errorText(err));
      if (el) {
        let p = el.querySelector(".action-error");
        if (!p) { p = document.createElement("p"); p.className = "action-error alert"; p.setAttribute("role", "alert"); el.append(p); }
        p.textContent = D.errorText(err);
      }
    }
  });

  window.DarkroomLive = { refreshCard };
  document.addEventListener("DOMContentLoaded", start);
})();

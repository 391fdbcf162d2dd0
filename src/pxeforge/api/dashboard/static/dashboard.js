// pxeforge dashboard: relative times that keep counting, and the live timeline (SSE).
// Plain browser JavaScript, no build step; served by pxeforge itself.
"use strict";
(() => {
  const body = document.body;
  const serverNow = Number(body.dataset.now);
  const skew = Number.isFinite(serverNow) ? Date.now() / 1000 - serverNow : 0;
  const now = () => Date.now() / 1000 - skew;

  // same wording as pages.duration on the server
  const pad = (n) => String(n).padStart(2, "0");
  const duration = (seconds) => {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
    return `${Math.floor(s / 86400)}d ${pad(Math.floor((s % 86400) / 3600))}h`;
  };
  const tick = () => {
    for (const el of document.querySelectorAll("[data-since]")) {
      el.textContent = duration(now() - Number(el.dataset.since));
    }
    for (const el of document.querySelectorAll("[data-ago]")) {
      el.textContent = `${duration(now() - Number(el.dataset.ago))} ago`;
    }
  };
  setInterval(tick, 5000);

  const table = document.getElementById("timeline");
  if (!table || !table.dataset.stream) return;
  const tbody = table.tBodies[0];
  const live = document.getElementById("live");
  const empty = document.getElementById("timeline-empty");
  const count = document.getElementById("event-count");
  // events are known by timeline epoch and seq (seq restarts when pxeforge does)
  const seen = new Set(Array.from(tbody.rows, (row) => `${row.dataset.epoch}-${row.dataset.seq}`));
  const MAX_ROWS = 1000;

  const cell = (row, text, cls) => {
    const td = row.insertCell();
    td.textContent = text == null ? "" : String(text);  // text only: never HTML
    if (cls) td.className = cls;
  };

  const add = (e) => {
    const key = `${e.epoch}-${e.seq}`;
    if (seen.has(key)) return;
    seen.add(key);
    // newest first: above the first row of an older epoch or with a smaller seq
    let index = 0;
    while (index < tbody.rows.length) {
      const other = tbody.rows[index].dataset;
      if (other.epoch !== e.epoch || Number(other.seq) < e.seq) break;
      index++;
    }
    const row = tbody.insertRow(index);
    row.dataset.seq = String(e.seq);
    row.dataset.epoch = e.epoch;
    row.className = `level-${e.level} fresh`;
    cell(row, e.time, "time");
    const source = document.createElement("span");
    source.className = `src src-${e.source}`;
    source.textContent = e.source;
    row.insertCell().append(source);
    cell(row, e.kind);
    cell(row, e.summary);
    cell(row, e.details, "details");
    cell(row, e.mac, "mono");
    while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(-1);
    if (empty) empty.hidden = true;
    if (count) count.textContent = String(Number(count.textContent) + 1);
    if (e.to) {  // a state transition: the header follows
      const badge = document.getElementById("state");
      if (badge) {
        badge.textContent = e.to;
        badge.className = `badge ${e.to_class || ""}`;
      }
      const since = document.getElementById("since");
      if (since) {
        since.dataset.since = String(e.at);
        since.textContent = duration(now() - e.at);
      }
    }
  };

  const source = new EventSource(table.dataset.stream);
  source.addEventListener("timeline", (message) => add(JSON.parse(message.data)));
  source.addEventListener("open", () => {
    if (live) { live.textContent = "● live"; live.className = "live on"; }
  });
  source.addEventListener("error", () => {
    if (live) { live.textContent = "○ reconnecting…"; live.className = "live off"; }
  });
  window.addEventListener("pagehide", () => source.close());
})();

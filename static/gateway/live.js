/* Admin live traffic: rows from /ws/admin/live/, built with textContent only. */
(function () {
  "use strict";
  var MAX_ROWS = 500;
  var root = document.getElementById("live-traffic");
  if (!root) return;
  var rows = document.getElementById("live-rows");
  var status = document.getElementById("live-status");
  var count = document.getElementById("live-count");
  var pause = document.getElementById("live-pause");
  var total = 0;
  var retry = 1000;

  document.getElementById("live-clear").addEventListener("click", function () {
    rows.replaceChildren();
    total = 0;
    count.textContent = "0";
  });

  function cell(text, className) {
    var td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (className) td.className = className;
    return td;
  }

  function tokens(event) {
    if (event.prompt_tokens === null && event.completion_tokens === null) return "";
    var mark = event.usage_estimated ? "~" : "";
    return mark + (event.prompt_tokens || 0) + " / " + mark + (event.completion_tokens || 0);
  }

  function addRow(event) {
    var tr = document.createElement("tr");
    tr.className = "fresh" + (event.status >= 500 || (event.status >= 400 && event.status !== 499) ? " fail" : event.status === 499 ? " cancel" : "");
    tr.dataset.requestId = event.request_id || "";
    var time = new Date((event.ts || 0) * 1000).toLocaleTimeString();
    tr.append(
      cell(time),
      cell(event.server),
      cell(event.tenant),
      cell(event.key_prefix),
      cell(event.endpoint + (event.stream ? " (stream)" : "")),
      cell(event.model),
      cell(event.provider),
      cell(event.status + (event.error_code ? " " + event.error_code : ""), "status"),
      cell(event.latency_ms),
      cell(event.ttft_ms),
      cell(tokens(event)),
      cell(event.cost_usd),
      cell(event.request_id)
    );
    rows.insertBefore(tr, rows.firstChild);
    while (rows.childElementCount > MAX_ROWS) rows.removeChild(rows.lastChild);
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + location.host + root.dataset.wsPath);
    ws.addEventListener("open", function () { retry = 1000; status.textContent = "Live"; });
    ws.addEventListener("message", function (message) {
      var frame;
      try { frame = JSON.parse(message.data); } catch (e) { return; }
      if (frame.type === "live.hello") status.textContent = "Live (via " + frame.server + ")";
      if (frame.type === "error") status.textContent = "Error: " + frame.error.message;
      if (frame.type !== "live.batch" || pause.checked) return;
      frame.events.forEach(addRow);
      total += frame.events.length;
      count.textContent = String(total);
    });
    ws.addEventListener("close", function (event) {
      if (event.code === 4403) { status.textContent = "Staff only"; return; }
      status.textContent = "Disconnected; retrying…";
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 15000);
    });
  }
  connect();
})();

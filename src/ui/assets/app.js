// crafting-table pages: the only script. Everything works without it except the
// live log, which then offers a reload link.
(function () {
  "use strict";
  // Times are rendered in UTC; show them in the viewer's own zone as well.
  document.querySelectorAll("time[data-local]").forEach(function (t) {
    var d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d)) {
      t.textContent = d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
      t.title = t.getAttribute("datetime");
    }
  });
  // A running job's log follows live over Server-Sent Events.
  var log = document.getElementById("log");
  var url = log && log.getAttribute("data-follow");
  if (!url || !window.EventSource) return;
  var live = document.getElementById("live-status");
  var es = new EventSource(url);
  // The stream starts where the page's text ends; after a dropped connection
  // the browser resumes from the last event's offset (its id).
  es.addEventListener("open", function () {
    if (live) live.textContent = "Following the log live.";
  });
  // The log's first bytes mean the job was claimed: a page loaded while it was
  // still queued says so now.
  var status = document.getElementById("status");
  es.addEventListener("log", function (e) {
    if (status && status.getAttribute("data-status") === "queued") {
      var badge = document.createElement("span");
      badge.className = "status s-running";
      badge.textContent = "running";
      status.setAttribute("data-status", "running");
      status.replaceChildren(badge);
    }
    var atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.appendChild(document.createTextNode(JSON.parse(e.data)));
    if (atEnd) log.scrollTop = log.scrollHeight;
  });
  es.addEventListener("end", function (e) {
    es.close();
    if (live) live.textContent = "The job ended (" + JSON.parse(e.data) + "); loading its findings.";
    window.location.reload();
  });
})();

// The overview's throughput chart: the last hour, per minute, processed and failed, redrawn
// from <canvas data-source> every few seconds without reloading the page. No dependencies.
(function () {
  "use strict";
  var canvas = document.getElementById("activity");
  if (!canvas || !canvas.getContext) return;
  var source = canvas.getAttribute("data-source");
  var summary = document.getElementById("activity-summary");

  function color(name, fallback) {
    var v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return v || fallback;
  }

  function draw(points) {
    var ratio = window.devicePixelRatio || 1;
    var w = canvas.clientWidth, h = canvas.clientHeight;
    canvas.width = w * ratio;
    canvas.height = h * ratio;
    var g = canvas.getContext("2d");
    g.scale(ratio, ratio);
    g.clearRect(0, 0, w, h);
    var max = 1;
    points.forEach(function (p) { if (p.processed > max) max = p.processed; });
    var pad = 18, n = Math.max(points.length, 1), bw = (w - 2 * pad) / n;
    g.fillStyle = color("--muted", "#666");
    g.font = "11px system-ui, sans-serif";
    g.fillText(String(max) + "/min", 4, 12);
    points.forEach(function (p, i) {
      var x = pad + i * bw;
      var ph = (h - 2 * pad) * p.processed / max;
      var fh = (h - 2 * pad) * p.failed / max;
      g.fillStyle = color("--accent", "#0b5cad");
      g.fillRect(x + 1, h - pad - ph, Math.max(bw - 2, 1), ph);
      g.fillStyle = color("--bad", "#b42318");
      g.fillRect(x + 1, h - pad - fh, Math.max(bw - 2, 1), fh);
    });
    var total = 0, failed = 0;
    points.forEach(function (p) { total += p.processed; failed += p.failed; });
    if (summary) {
      summary.textContent = total + " processed, " + failed + " failed in the last hour";
    }
    canvas.setAttribute("data-processed", String(total));
  }

  function refresh() {
    fetch(source, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (data) { draw(data.minutes || []); })
      .catch(function () { if (summary) summary.textContent = "activity unavailable"; });
  }

  refresh();
  setInterval(refresh, 5000);
  window.addEventListener("resize", refresh);
})();

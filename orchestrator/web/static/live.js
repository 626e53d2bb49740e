// Live progress of a deployment: re-read its progress from the API every few
// seconds and update the counts and the per-building, per-wave rows in place.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || live.dataset.final === "yes") { return; }
  var url = live.dataset.progress;

  function text(el, value) { if (el) { el.textContent = value; } }

  function summary(counts) {
    return Object.keys(counts).sort().map(function (s) { return counts[s] + " " + s; }).join(", ");
  }

  function draw(p) {
    text(document.getElementById("state"), p.state);
    var state = document.getElementById("state");
    if (state) { state.className = "state-" + p.state; }
    var counts = document.getElementById("counts");
    if (counts) {
      counts.textContent = "";
      Object.keys(p.counts).sort().forEach(function (s) {
        var span = document.createElement("span");
        span.className = "count count-" + s;
        span.dataset.state = s;
        span.textContent = p.counts[s] + " " + s;
        counts.appendChild(span);
        counts.appendChild(document.createTextNode(" "));
      });
    }
    p.cells.forEach(function (c) {
      var row = document.querySelector('#cells tr[data-key="' + c.building + "/" + c.wave + '"]');
      if (!row) { return; }
      text(row.querySelector(".done"), c.done + " / " + c.total);
      text(row.querySelector(".states"), summary(c.counts));
    });
    text(document.getElementById("updated"),
      p.final ? "Finished." : "Updated " + new Date().toLocaleTimeString() + "; updates by itself while it runs.");
    return p.final;
  }

  function tick() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(function (p) {
        if (draw(p)) { window.location.reload(); } else { window.setTimeout(tick, 2000); }
      })
      .catch(function () { window.setTimeout(tick, 5000); });
  }
  window.setTimeout(tick, 2000);
})();

// Live progress of a deployment: re-read its progress from the API every few
// seconds and update the page in place, never reloading it (a person may be
// typing a reason to pause it). The progress is counted in the database and
// cheap to ask for; the clients' rows are read again only when the counts
// moved, and once more when it ends.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || live.dataset.final === "yes") { return; }
  var url = live.dataset.progress;
  var clientsUrl = live.dataset.clients;
  var lastCounts = null;

  function text(el, value) { if (el) { el.textContent = value; } }

  function summary(counts) {
    return Object.keys(counts).sort().map(function (s) { return counts[s] + " " + s; }).join(", ");
  }

  function get(address) {
    return fetch(address, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); });
  }

  function drawClients(view) {
    view.clients.forEach(function (c) {
      var row = document.querySelector('#clients tr[data-host="' + CSS.escape(c.hostname) + '"]');
      if (!row) { return; }
      var state = row.querySelector(".state");
      if (state) {
        state.textContent = c.state;
        state.className = "state state-" + c.state;
      }
      text(row.querySelector(".why"), [c.step || "", c.reason || ""].join(" ").trim());
    });
  }

  function draw(p) {
    var state = document.getElementById("state");
    text(state, p.state);
    if (state) { state.className = "state-" + p.state; }
    var reason = document.getElementById("reason");
    if (reason) {
      text(reason, p.reason ? " — " + p.reason : "");
    }
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
    var next = document.getElementById("next");
    if (next) { next.hidden = p.final || !p.next_start; }
    if (p.final) {
      var control = document.getElementById("control");
      if (control) { control.remove(); }
    }
    text(document.getElementById("updated"),
      p.final ? "Finished." : "Updated " + new Date().toLocaleTimeString() + "; updates by itself while it runs.");
  }

  function tick() {
    get(url)
      .then(function (p) {
        draw(p);
        var moved = JSON.stringify(p.counts) !== lastCounts;
        lastCounts = JSON.stringify(p.counts);
        var rows = moved || p.final ? get(clientsUrl).then(drawClients) : Promise.resolve();
        return rows.then(function () { return p.final; });
      })
      .then(function (final) { if (!final) { window.setTimeout(tick, 2000); } })
      .catch(function () { window.setTimeout(tick, 5000); });
  }
  window.setTimeout(tick, 2000);
})();

// Live progress of a deployment: re-read its progress from the API every few
// seconds and update the page in place, never reloading it (a person may be
// typing a reason to pause it). The progress is counted in the database and
// cheap to ask for; the clients' rows are read again only when the counts
// moved, and once more when it ends. Where the page shows the buildings'
// distribution points, their stagings are read again at each look until it
// ends (a staging runs before the window, while the counts stand still).
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || live.dataset.final === "yes") { return; }
  var url = live.dataset.progress;
  var clientsUrl = live.dataset.clients;
  var stagingsUrl = live.dataset.stagings;
  var districtTime = new Intl.DateTimeFormat("en-US", {
    timeZone: live.dataset.zone, weekday: "short", month: "short", day: "2-digit",
    hour: "2-digit", minute: "2-digit", hourCycle: "h23"
  });
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

  function when(iso) {
    // As the page writes times: "Mon Dec 07 03:23", in the district's zone.
    var part = {};
    districtTime.formatToParts(new Date(iso)).forEach(function (x) { part[x.type] = x.value; });
    return part.weekday + " " + part.month + " " + part.day + " " + part.hour + ":" + part.minute;
  }

  function drawStagings(list) {
    list.forEach(function (s) {
      var row = document.querySelector('#stagings tr[data-key="' + CSS.escape(s.building + "/" + s.ref) + '"]');
      if (!row) { return; }
      text(row.querySelector(".state"), s.state);
      text(row.querySelector(".sent"), s.at ? s.chunks_sent + " of " + s.chunks_total : "\u2014");
      text(row.querySelector(".since"), s.at ? when(s.at) : "\u2014");
      text(row.querySelector(".note"), s.message);
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
        var points = document.getElementById("stagings") ?
          get(stagingsUrl).then(drawStagings) : Promise.resolve();
        return Promise.all([rows, points]).then(function () { return p.final; });
      })
      .then(function (final) { if (!final) { window.setTimeout(tick, 2000); } })
      .catch(function () { window.setTimeout(tick, 5000); });
  }
  window.setTimeout(tick, 2000);
})();

// sallyport console: the live watch view. Asks the broker twice a second what the session's
// terminals show (screens computed on the broker from the recording the gateway sends) and
// draws them; stops when the session ends.
"use strict";
(function () {
  var root = document.getElementById("live");
  if (!root) { return; }
  var status = document.getElementById("live-status");
  var list = document.getElementById("channels");
  var url = root.getAttribute("data-live");
  var page = root.getAttribute("data-session");
  var failures = 0;

  function label(c, i) {
    return "Channel " + (i + 1) + (c.pty ? " (terminal " + c.width + "×" + c.height + ")" : " (output, no terminal)");
  }
  function section(rec) {
    var all = list.querySelectorAll("section.channel");
    for (var i = 0; i < all.length; i++) {
      if (all[i].getAttribute("data-recording") === rec) { return all[i]; }
    }
    var s = document.createElement("section");
    s.className = "channel";
    s.setAttribute("data-recording", rec);
    var h = document.createElement("h2");
    var pre = document.createElement("pre");
    pre.className = "screen";
    pre.tabIndex = 0;
    s.appendChild(h);
    s.appendChild(pre);
    list.appendChild(s);
    return s;
  }
  function show(v) {
    for (var i = 0; i < v.channels.length; i++) {
      var c = v.channels[i];
      var s = section(c.recording);
      s.querySelector("h2").textContent = label(c, i);
      var pre = s.querySelector("pre");
      pre.className = c.pty ? "screen" : "screen stream";
      pre.setAttribute("aria-label", label(c, i));
      var text = c.pty ? c.rows.join("\n") : c.stream;
      if (pre.textContent !== text) {
        pre.textContent = text;
        if (!c.pty) { pre.scrollTop = pre.scrollHeight; }
      }
    }
  }
  function ended() {
    status.textContent = "The session has ended. ";
    var a = document.createElement("a");
    a.href = page;
    a.textContent = "Its recordings and timeline are on the session's page.";
    status.appendChild(a);
  }
  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) {
        if (!r.ok) { throw new Error("the broker answered " + r.status); }
        return r.json();
      })
      .then(function (v) {
        failures = 0;
        show(v);
        if (!v.live) { ended(); return; }
        status.textContent = v.channels.length
          ? "Live: updated " + new Date().toLocaleTimeString() + "."
          : "Waiting for the gateway to send the session's terminal (a second or two).";
        setTimeout(poll, 500);
      })
      .catch(function (e) {
        failures++;
        status.textContent = "Cannot reach the broker (" + e.message + "); trying again. If this stays, reload the page or log in again.";
        setTimeout(poll, Math.min(10000, 1000 * failures));
      });
  }
  poll();
})();

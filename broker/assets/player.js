// sallyport console: the replay player. Frames (rows that changed, computed on the broker with
// the gateway's screen model) are applied in order; seeking replays them from the start.
"use strict";
(function () {
  var root = document.getElementById("player");
  if (!root) { return; }
  var screen = document.getElementById("screen");
  var playBtn = document.getElementById("play");
  var speedSel = document.getElementById("speed");
  var seek = document.getElementById("seek");
  var clock = document.getElementById("clock");
  var skipIdle = document.getElementById("skip-idle");
  var find = document.getElementById("find");
  var findNext = document.getElementById("find-next");
  var status = document.getElementById("player-status");
  var data = null, rows = [], next = 0, t = 0, playing = false, last = 0;

  function fmt(s) {
    var m = Math.floor(s / 60), r = Math.floor(s % 60);
    return m + ":" + (r < 10 ? "0" : "") + r;
  }
  function apply(f) {
    if (f.size) { rows.length = f.size[1]; }
    for (var i = 0; i < f.rows.length; i++) { rows[f.rows[i][0]] = f.rows[i][1]; }
  }
  function draw() {
    var out = [];
    for (var i = 0; i < rows.length; i++) { out.push(rows[i] || ""); }
    screen.textContent = out.join("\n");
    seek.value = t;
    clock.textContent = fmt(t) + " / " + fmt(data.duration);
  }
  function seekTo(to) {
    t = Math.max(0, Math.min(to, data.duration));
    rows = new Array(data.height); next = 0;
    while (next < data.frames.length && data.frames[next].t <= t) { apply(data.frames[next]); next++; }
    draw();
  }
  function tick(now) {
    if (!playing) { return; }
    var dt = (now - last) / 1000; last = now;
    t += dt * parseFloat(speedSel.value);
    if (skipIdle.checked && next < data.frames.length && data.frames[next].t - t > 2) {
      t = data.frames[next].t - 0.5;
    }
    while (next < data.frames.length && data.frames[next].t <= t) { apply(data.frames[next]); next++; }
    if (t >= data.duration) { t = data.duration; playing = false; playBtn.textContent = "Play"; }
    draw();
    if (playing) { requestAnimationFrame(tick); }
  }
  function shows(text) {
    return rows.join("\n").indexOf(text) >= 0 || rows.join("").indexOf(text) >= 0;
  }
  // A moment (a command's): the first screen at or after it that shows `find` (the command; a
  // line pasted at once is echoed just after its Enter), else the first screen after it, when
  // one follows within 5 s.
  function openMoment(at, find) {
    var first = -1;
    rows = new Array(data.height);
    for (var i = 0; i < data.frames.length; i++) {
      apply(data.frames[i]);
      if (data.frames[i].t < at - 0.001) { continue; }
      if (data.frames[i].t - at > 5) { break; }
      if (first < 0) { first = i; }
      if (!find || shows(find)) { seekTo(data.frames[i].t); return; }
    }
    seekTo(first >= 0 ? data.frames[first].t : at);
  }
  function setPlaying(on) {
    playing = on;
    playBtn.textContent = on ? "Pause" : "Play";
    if (on) {
      if (t >= data.duration) { seekTo(0); }
      last = performance.now(); requestAnimationFrame(tick);
    }
  }
  function findText() {
    var q = find.value;
    if (!q) { return; }
    // Scan forward from the frame after the current one, then wrap around.
    var saveRows = rows.slice(), saveNext = next, saveT = t;
    rows = new Array(data.height);
    for (var i = 0; i < data.frames.length; i++) {
      apply(data.frames[i]);
      if (i >= saveNext && rows.join("\n").indexOf(q) >= 0) {
        setPlaying(false); seekTo(data.frames[i].t);
        status.textContent = "Found \u201c" + q + "\u201d at " + fmt(t) + ".";
        return;
      }
    }
    rows = new Array(data.height);
    for (var j = 0; j < saveNext && j < data.frames.length; j++) {
      apply(data.frames[j]);
      if (rows.join("\n").indexOf(q) >= 0) {
        setPlaying(false); seekTo(data.frames[j].t);
        status.textContent = "Found \u201c" + q + "\u201d at " + fmt(t) + " (from the start).";
        return;
      }
    }
    rows = saveRows; next = saveNext; t = saveT; draw();
    status.textContent = "\u201c" + q + "\u201d never appears on screen.";
  }

  fetch(root.getAttribute("data-frames"), { credentials: "same-origin" })
    .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
    .then(function (d) {
      data = d;
      seek.max = d.duration;
      [playBtn, speedSel, seek, skipIdle, find, findNext].forEach(function (e) { e.disabled = false; });
      status.textContent = "Ready: " + d.frames.length + " screens over " + fmt(d.duration) + ".";
      var start = parseFloat(root.getAttribute("data-start"));
      if (start >= 0) { openMoment(start, root.getAttribute("data-find")); } else { seekTo(0); }
      root.setAttribute("data-ready", "1");
    })
    .catch(function (e) { status.textContent = "The recording could not be loaded (" + e.message + "); the last screen is shown."; });

  playBtn.addEventListener("click", function () { setPlaying(!playing); });
  seek.addEventListener("input", function () { seekTo(parseFloat(seek.value)); });
  findNext.addEventListener("click", findText);
  find.addEventListener("keydown", function (e) { if (e.key === "Enter") { e.preventDefault(); findText(); } });
  document.querySelectorAll("a.jump").forEach(function (a) {
    a.addEventListener("click", function (e) {
      if (!data) { return; }
      e.preventDefault(); setPlaying(false); openMoment(parseFloat(a.getAttribute("data-t")), a.getAttribute("data-find"));
      screen.focus();
    });
  });
})();

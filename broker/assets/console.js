// sallyport console: show each <time datetime> in the viewer's local time, UTC on hover.
// Pages work without this script (they show UTC).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var fmt = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"
  });
  document.querySelectorAll("time[datetime]").forEach(function (t) {
    var d = new Date(t.getAttribute("datetime"));
    if (isNaN(d.getTime())) { return; }
    if (!t.title) { t.title = t.textContent; }
    t.textContent = fmt.format(d);
  });
});

// Live reload: when a program file changes, fetch this page again and swap its live part.
(function () {
  "use strict";
  var live = document.querySelector("[data-live]");
  if (!live || !window.EventSource) { return; }
  var version = document.body.getAttribute("data-version") || "";
  var source = new EventSource("/events?version=" + encodeURIComponent(version));
  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(window.location.href, {credentials: "same-origin"})
      .then(function (response) { return response.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("[data-live]");
        var current = document.querySelector("[data-live]");
        if (fresh && current) { current.replaceWith(document.importNode(fresh, true)); }
      })
      .catch(function () { again = true; })
      .then(function () { busy = false; if (again) { again = false; refresh(); } });
  }
  source.addEventListener("change", refresh);
})();

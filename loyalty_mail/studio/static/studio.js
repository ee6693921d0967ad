// Live reload: when a program file changes, fetch this page again and swap its live part,
// keeping what the user is typing (the fields they changed) and where the focus is.
(function () {
  "use strict";
  var live = document.querySelector("[data-live]");
  if (!live || !window.EventSource) { return; }
  var version = document.body.getAttribute("data-version") || "";
  var source = new EventSource("/events?version=" + encodeURIComponent(version));
  var busy = false, again = false;

  function fields(root) {
    return root.querySelectorAll("input[id]:not([type=hidden]), select[id], textarea[id]");
  }

  function typed(root) {  // the fields whose value the user changed, by id
    var kept = {};
    Array.prototype.forEach.call(fields(root), function (field) {
      if (field.type === "checkbox" || field.type === "radio") {
        if (field.checked !== field.defaultChecked) { kept[field.id] = {checked: field.checked}; }
      } else if (field.tagName === "SELECT" || field.value !== field.defaultValue) {
        kept[field.id] = {value: field.value};
      }
    });
    return kept;
  }

  function restore(root, kept, focused) {
    Array.prototype.forEach.call(fields(root), function (field) {
      var saved = kept[field.id];
      if (!saved) { return; }
      if ("checked" in saved) { field.checked = saved.checked; } else { field.value = saved.value; }
    });
    if (!focused.id) { return; }
    var target = document.getElementById(focused.id);
    if (!target || !root.contains(target)) { return; }
    target.focus({preventScroll: true});
    try { target.setSelectionRange(focused.start, focused.end); } catch (e) { /* not a text field */ }
  }

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(window.location.href, {credentials: "same-origin"})
      .then(function (response) { return response.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("[data-live]");
        var current = document.querySelector("[data-live]");
        if (!fresh || !current) { return; }
        var active = document.activeElement;
        var focused = {id: active && current.contains(active) ? active.id : "", start: null, end: null};
        try { focused.start = active.selectionStart; focused.end = active.selectionEnd; } catch (e) { /* none */ }
        var kept = typed(current);
        var imported = document.importNode(fresh, true);
        current.replaceWith(imported);
        restore(imported, kept, focused);
      })
      .catch(function () { /* the stream reconnects and says whether anything changed */ })
      .then(function () { busy = false; if (again) { again = false; refresh(); } });
  }
  source.addEventListener("change", refresh);

  // A studio that stopped, or restarted with a new token (the stream then gets 403), never sends
  // another change: say so instead of going quiet.
  var failures = 0, banner = null;
  source.addEventListener("open", function () {
    failures = 0;
    if (banner) { banner.remove(); banner = null; }
  });
  source.addEventListener("error", function () {
    failures += 1;
    if (banner || (source.readyState !== EventSource.CLOSED && failures < 3)) { return; }
    banner = document.createElement("p");
    banner.className = "banner";
    banner.id = "studio-gone";
    banner.setAttribute("role", "alert");
    banner.textContent = "The studio stopped or restarted: this page no longer updates. " +
      "Open the new URL it printed in the terminal.";
    document.body.insertBefore(banner, document.body.firstChild);
  });
})();

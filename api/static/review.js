// Keyboard first: 1-9 pick a class, u unusable, n next. Typing in the note field types text instead.
(function () {
  function fmt(seconds) {
    var late = seconds < 0, s = Math.abs(Math.round(seconds));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    var text = (h ? h + "h " : "") + (h || m ? m + "m " : "") + r + "s";
    return late ? "overdue by " + text : text + " left";
  }
  var started = Date.now();
  function tick() {
    document.querySelectorAll(".countdown").forEach(function (el) {
      var left = Number(el.dataset.seconds) - (Date.now() - started) / 1000;
      el.textContent = fmt(left);
      el.classList.toggle("late", left < 0);
    });
  }
  tick();
  setInterval(tick, 1000);

  var sent = false;
  document.addEventListener("keydown", function (event) {
    if (sent || event.ctrlKey || event.metaKey || event.altKey) return;
    var target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA")) {
      if (event.key === "Escape") target.blur();
      return;
    }
    var key = event.key.toLowerCase();
    var button = key && document.querySelector('button[data-key="' + key.replace(/"/g, "") + '"]');
    if (!button) return;
    event.preventDefault();
    sent = true;  // one decision per key press, never two
    button.form.requestSubmit(button);
  });
})();

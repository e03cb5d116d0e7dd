// A detection task's boxes on the frame. The model's boxes arrive in #overlay's data-boxes (corners relative
// to the frame, 0..1); the reviewer keeps them, clicks one to select it, drags it to move it, drags on the
// frame to draw a new one, presses Delete to remove the selected one and 1-9 to give it a class (new boxes
// take the class chosen last). Every change is written to the form's hidden #boxes field as JSON, so
// Enter (review.js: the confirm button) submits exactly the set shown. The server checks it again.
(function () {
  var overlay = document.getElementById("overlay");
  var field = document.getElementById("boxes");
  if (!overlay || !field) return;
  var classes = (overlay.dataset.classes || "").split(",").filter(Boolean);
  var boxes = JSON.parse(overlay.dataset.boxes || "[]").map(function (b) {
    return {x0: b.x0, y0: b.y0, x1: b.x1, y1: b.y1, label: b.label, score: b.score};
  });
  var selected = boxes.length ? 0 : -1;
  var current = classes[0] || "";
  var MIN = 0.01;  // a click, not a drag, draws no box

  function clamp(v) { return Math.max(0, Math.min(1, v)); }
  function round(v) { return Math.round(v * 1e5) / 1e5; }
  function point(event) {
    var r = overlay.getBoundingClientRect();
    return {x: clamp((event.clientX - r.left) / r.width), y: clamp((event.clientY - r.top) / r.height)};
  }

  function save() {
    field.value = JSON.stringify(boxes.map(function (b) {
      return {x0: round(b.x0), y0: round(b.y0), x1: round(b.x1), y1: round(b.y1), label: b.label};
    }));
    var count = document.getElementById("box-count");
    if (count) count.textContent = boxes.length + (boxes.length === 1 ? " box" : " boxes") +
      (selected >= 0 ? " · selected: " + boxes[selected].label : "");
    document.querySelectorAll("#box-classes button").forEach(function (button) {
      button.classList.toggle("current", button.dataset.class === current);
    });
  }

  function draw() {
    overlay.querySelectorAll(".box").forEach(function (el) { el.remove(); });
    boxes.forEach(function (b, i) {
      var el = document.createElement("div");
      el.className = "box" + (i === selected ? " selected" : "") + (b.score != null ? " model" : "");
      el.dataset.index = String(i);
      el.style.left = b.x0 * 100 + "%";
      el.style.top = b.y0 * 100 + "%";
      el.style.width = (b.x1 - b.x0) * 100 + "%";
      el.style.height = (b.y1 - b.y0) * 100 + "%";
      var tag = document.createElement("span");
      tag.textContent = b.label + (b.score != null ? " " + Math.round(b.score * 100) + "%" : "");
      el.appendChild(tag);
      overlay.appendChild(el);
    });
    save();
  }

  var drag = null;  // {kind: "move"|"draw", index, start, original}
  overlay.addEventListener("mousedown", function (event) {
    if (event.button !== 0) return;
    event.preventDefault();
    var p = point(event);
    var hit = event.target.closest(".box");
    if (hit) {
      selected = Number(hit.dataset.index);
      var b = boxes[selected];
      drag = {kind: "move", index: selected, start: p, original: {x0: b.x0, y0: b.y0, x1: b.x1, y1: b.y1}};
    } else {
      boxes.push({x0: p.x, y0: p.y, x1: p.x, y1: p.y, label: current, score: null});
      selected = boxes.length - 1;
      drag = {kind: "draw", index: selected, start: p};
    }
    draw();
  });
  window.addEventListener("mousemove", function (event) {
    if (!drag) return;
    var p = point(event), b = boxes[drag.index];
    if (drag.kind === "move") {
      var o = drag.original, w = o.x1 - o.x0, h = o.y1 - o.y0;
      var x0 = Math.max(0, Math.min(1 - w, o.x0 + p.x - drag.start.x));
      var y0 = Math.max(0, Math.min(1 - h, o.y0 + p.y - drag.start.y));
      b.x0 = x0; b.y0 = y0; b.x1 = x0 + w; b.y1 = y0 + h;
      b.score = null;  // moved: the reviewer's box now
    } else {
      b.x0 = Math.min(drag.start.x, p.x); b.x1 = Math.max(drag.start.x, p.x);
      b.y0 = Math.min(drag.start.y, p.y); b.y1 = Math.max(drag.start.y, p.y);
    }
    draw();
  });
  window.addEventListener("mouseup", function () {
    if (!drag) return;
    var b = boxes[drag.index];
    if (drag.kind === "draw" && (b.x1 - b.x0 < MIN || b.y1 - b.y0 < MIN)) {
      boxes.splice(drag.index, 1);
      selected = boxes.length ? boxes.length - 1 : -1;
    }
    drag = null;
    draw();
  });

  // Captured before review.js's keys (which submit forms): box keys never submit.
  window.addEventListener("keydown", function (event) {
    var target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA")) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "Delete" || event.key === "Backspace") {
      event.preventDefault();
      event.stopImmediatePropagation();
      if (selected >= 0) {
        boxes.splice(selected, 1);
        selected = boxes.length ? Math.min(selected, boxes.length - 1) : -1;
        draw();
      }
    } else if (/^[1-9]$/.test(event.key)) {
      event.preventDefault();
      event.stopImmediatePropagation();
      var cls = classes[Number(event.key) - 1];
      if (!cls) return;
      current = cls;
      if (selected >= 0) boxes[selected].label = cls;
      draw();
    } else if (event.key === "Tab" && boxes.length) {
      event.preventDefault();
      event.stopImmediatePropagation();
      selected = (selected + (event.shiftKey ? boxes.length - 1 : 1)) % boxes.length;
      draw();
    }
  }, true);

  document.querySelectorAll("#box-classes button").forEach(function (button) {
    button.addEventListener("click", function () {
      current = button.dataset.class;
      if (selected >= 0) boxes[selected].label = current;
      draw();
    });
  });
  draw();
})();

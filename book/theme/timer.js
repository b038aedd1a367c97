// The run sheet's segment timer: a countdown for the current segment, for the facilitator.
// No network, no dependencies: it works from the offline handout too. The segments and their
// minutes come from course.toml, written into the page by `cargo xtask book`.
(function () {
  "use strict";
  var root = document.getElementById("segment-timer");
  if (!root) return;
  var select = root.querySelector("select");
  var display = root.querySelector(".timer-display");
  var state = root.querySelector(".timer-state");
  var buttons = {};
  root.querySelectorAll("button[data-action]").forEach(function (b) { buttons[b.dataset.action] = b; });
  var remaining = Number(select.value);
  var running = false;
  var last = 0;
  var handle = null;

  function format(seconds) {
    var over = seconds < 0;
    var s = Math.abs(Math.ceil(seconds));
    if (over) s = Math.abs(Math.floor(seconds));
    var text = String(Math.floor(s / 60)).padStart(2, "0") + ":" + String(s % 60).padStart(2, "0");
    return over ? "+" + text : text;
  }

  function render() {
    display.textContent = format(remaining);
    root.classList.toggle("timer-warning", remaining > 0 && remaining <= 60);
    root.classList.toggle("timer-over", remaining <= 0);
    state.textContent = running ? "running" : (remaining <= 0 ? "time is up: move on" : "paused");
    if (remaining <= 0 && running) state.textContent = "over time: move on";
    buttons.start.textContent = running ? "Pause" : "Start";
  }

  function tick() {
    var now = performance.now();
    remaining -= (now - last) / 1000;
    last = now;
    render();
  }

  function start() {
    if (running) return;
    running = true;
    last = performance.now();
    handle = setInterval(tick, 250);
    render();
  }

  function pause() {
    if (!running) return;
    tick();
    running = false;
    clearInterval(handle);
    render();
  }

  function reset() {
    remaining = Number(select.value);
    last = performance.now();
    render();
  }

  buttons.start.addEventListener("click", function () { running ? pause() : start(); });
  buttons.reset.addEventListener("click", reset);
  buttons.next.addEventListener("click", function () {
    if (select.selectedIndex < select.options.length - 1) select.selectedIndex += 1;
    reset();
  });
  select.addEventListener("change", reset);
  render();
  // For the browser test and for curious facilitators: the timer's state, read-only.
  window.segmentTimer = { remaining: function () { return remaining; }, running: function () { return running; } };
})();

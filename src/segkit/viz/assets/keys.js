// segkit viewer: slice navigation from the keyboard. Arrow keys step one slice, PageUp/PageDown (or
// Shift+arrows) ten, by clicking the step buttons, so the server-side callbacks stay the only logic.
// Keys typed into a control (dropdown search, slider handle, radio buttons) are left alone.
document.addEventListener("keydown", function (event) {
  if (event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey) {
    return;
  }
  var target = event.target;
  if (target && target.closest && target.closest("input, textarea, select, [contenteditable], [role=slider], [role=combobox], .dash-dropdown")) {
    return;
  }
  var keys = {
    ArrowRight: "slice-next", ArrowUp: "slice-next", ArrowLeft: "slice-prev", ArrowDown: "slice-prev",
    PageUp: "slice-next10", PageDown: "slice-prev10"
  };
  var id = keys[event.key];
  if (!id) {
    return;
  }
  if (event.shiftKey && (id === "slice-next" || id === "slice-prev")) {
    id = id + "10";
  }
  var button = document.getElementById(id);
  if (button) {
    button.click();
    event.preventDefault();
  }
});

// The few bits of script the dashboard needs; every form also works without them.
document.addEventListener("click", (event) => {
  const target = event.target;
  if (!(target instanceof HTMLElement)) return;
  if (target.classList.contains("js-take-better")) {
    // "Buy N for less": take the larger quantity in one click.
    const input = document.querySelector("[data-testid=quote-quantity]");
    if (input) {
      input.value = target.dataset.quantity;
      input.dispatchEvent(new Event("input", { bubbles: true }));
    }
  }
});
document.addEventListener("change", (event) => {
  const target = event.target;
  if (target instanceof HTMLInputElement && target.classList.contains("js-select-all")) {
    document.querySelectorAll("input.js-employee").forEach((box) => { box.checked = target.checked; });
  }
});
// A table wider than its frame scrolls inside the frame (app.css, .table-frame): such a frame
// is made focusable, so a keyboard user can reach it and scroll it with the arrow keys; a
// frame that does not scroll stays out of the tab order.
function markScrollingFrames() {
  document.querySelectorAll(".table-frame").forEach((frame) => {
    if (frame.scrollWidth > frame.clientWidth + 1) frame.setAttribute("tabindex", "0");
    else frame.removeAttribute("tabindex");
  });
}
markScrollingFrames();
window.addEventListener("resize", markScrollingFrames);
document.addEventListener("htmx:afterSettle", markScrollingFrames);

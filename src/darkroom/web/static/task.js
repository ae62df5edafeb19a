/* Task page: the before/after slider; a status change reloads the page to show the results. */
"use strict";
(function () {
  const range = document.getElementById("compare-range");
  const wrap = document.getElementById("after-wrap");
  if (range && wrap) {
    const apply = () => { wrap.style.clipPath = "inset(0 0 0 " + range.value + "%)"; };
    range.addEventListener("input", apply);
    apply();
  }
  document.addEventListener("darkroom:task", (e) => {
    const list = document.getElementById("task-list");
    if (list && list.dataset.single && ["completed", "failed", "canceled"].includes(e.detail.status)) {
      window.location.reload();
    }
  });
})();

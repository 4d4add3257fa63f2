// engine console: the one place script helps. Clicking a token copies its expression.
document.addEventListener("click", function (e) {
  var b = e.target.closest("button.token");
  if (!b || !navigator.clipboard) return;
  navigator.clipboard.writeText(b.dataset.copy).then(function () {
    b.classList.add("copied");
    setTimeout(function () { b.classList.remove("copied"); }, 1200);
  });
});

/* The printable invoice's "Print" button. */
document.addEventListener("DOMContentLoaded", function () {
  var button = document.getElementById("print-invoice");
  if (button) { button.addEventListener("click", function () { window.print(); }); }
});

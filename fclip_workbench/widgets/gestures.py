"""ShiftLassoGuard: lets shift+drag lasso on a jupyter-scatter map inside JupyterLab.

regl-scatterplot starts a lasso on shift+mousedown, but JupyterLab's notebook also listens for
shift+mousedown (it extends the cell selection) and then swallows every mousemove until mouseup,
so the lasso never grows and nothing is selected. The notebook skips a mousedown whose default
was prevented, so this zero-size widget installs one capture listener on the page that calls
`preventDefault()` for shift+mousedown on a canvas inside an element with class `root_class`.
The map still receives the event; nothing else changes (Voila and plain pages are unaffected).

Example:
    >>> guard = ShiftLassoGuard(root_class="fclip-explorer")     # doctest: +SKIP
    >>> w.VBox([scatter.show(), guard]).add_class("fclip-explorer")   # doctest: +SKIP
"""
from __future__ import annotations

import anywidget
import traitlets as tl

_ESM = """
function render({ model, el }) {
  el.style.display = "none";
  const cls = model.get("root_class");
  const key = "__fclipShiftLasso_" + cls;
  if (window[key]) return;
  window[key] = true;
  document.addEventListener("mousedown", (event) => {
    if (!event.shiftKey || !(event.target instanceof HTMLCanvasElement)) return;
    if (event.target.closest("." + cls)) event.preventDefault();  // JupyterLab: not a cell-range selection
  }, true);
}
export default { render };
"""


class ShiftLassoGuard(anywidget.AnyWidget):
    """Invisible; makes shift+mousedown on maps inside `.root_class` reach the map's lasso, not JupyterLab."""

    _esm = _ESM
    root_class = tl.Unicode("fclip-explorer", help="CSS class of the containers whose canvases lasso on shift+drag").tag(sync=True)


__all__ = ["ShiftLassoGuard"]

"""KeyShortcuts: keyboard shortcuts for a widget, wherever the focus is inside it (except in a text box).

An invisible child of the widget (class `root_class`). Its page script listens on the window, in the
capture phase (before JupyterLab's own shortcuts), and sends a key press to Python when:
- the key is one of `shortcut_keys` and the focus is inside the widget but not in a text box (text inputs,
  text areas, selects, contenteditable), or nothing is focused on a page that holds only this widget
  and no code editor (Voila); the press is then consumed (no JupyterLab "heading 1" for key 1);
- Enter is pressed in a text box whose container has one of the classes in `enter_boxes`; the
  message names that class (`box`). Enter in the `release_boxes` (the name box) also moves the focus
  from the text box to the widget itself, so that the next key press is a shortcut.

The widget root is made focusable (tabindex -1): a click anywhere in it, on the image too, keeps the
keys working. Nothing depends on where the mouse pointer is.

Messages (`on_key(callback)`, callback(dict)): {"key", "box", "target": {"tagName", "type"},
"text_box", "repeat", "timeStamp", "type": "keydown"}.

Example:
    >>> keys = KeyShortcuts(root_class="fclip-annotator", shortcut_keys=["1", "2", "3"])   # doctest: +SKIP
    >>> keys.on_key(lambda event: print(event["key"]))                            # doctest: +SKIP
"""
from __future__ import annotations

from typing import Callable

import anywidget
import traitlets as tl

_ESM = """
const TEXT_TYPES = ["", "text", "search", "email", "number", "password", "tel", "url", "date", "datetime-local",
                    "month", "time", "week"];
function isTextBox(t) {
  if (!t || !t.tagName) return false;
  const tag = t.tagName.toUpperCase();
  if (tag === "TEXTAREA" || tag === "SELECT" || t.isContentEditable) return true;
  return tag === "INPUT" && TEXT_TYPES.includes((t.getAttribute("type") || "").toLowerCase());
}
function render({ model, el }) {
  el.style.display = "none";
  const rootClass = model.get("root_class");
  const onKey = (event) => {
    const root = el.closest("." + rootClass);
    if (!root) return;
    if (!root.hasAttribute("tabindex")) {  // focusable: a click on the image or a caption keeps keys here
      root.setAttribute("tabindex", "-1");
      root.style.outline = "none";
    }
    const t = event.target;
    const inside = t instanceof Node && root.contains(t);
    const alone = (t === document.body || t === document.documentElement) &&
                  document.querySelectorAll("." + rootClass).length === 1 &&
                  !document.querySelector(".cm-editor, .CodeMirror");  // an app page (Voila): no code cells to type in
    if (!inside && !alone) return;
    const text = isTextBox(t);
    let box = "";
    if (text && event.key === "Enter") {
      box = model.get("enter_boxes").find((c) => t.closest("." + c)) || "";
      if (!box) return;
      if (model.get("release_boxes").includes(box)) root.focus({ preventScroll: true });
    } else if (text || !model.get("shortcut_keys").includes(event.key) || event.ctrlKey || event.metaKey || event.altKey) {
      return;
    } else {
      event.preventDefault();
      event.stopPropagation();  // ours: not a notebook shortcut
    }
    model.send({ type: "keydown", key: event.key, box: box, text_box: text, repeat: event.repeat,
                 timeStamp: event.timeStamp, target: { tagName: t.tagName || "", type: t.getAttribute ? (t.getAttribute("type") || "") : "" } });
  };
  window.addEventListener("keydown", onKey, true);
  return () => window.removeEventListener("keydown", onKey, true);
}
export default { render };
"""


class KeyShortcuts(anywidget.AnyWidget):
    """Invisible; sends the `shortcut_keys` pressed anywhere inside `.root_class` (not in a text box) to Python, and Enter
    in the text boxes inside `enter_boxes` (`on_key`)."""

    _esm = _ESM
    root_class = tl.Unicode("fclip-annotator", help="CSS class of the widget whose keys these are").tag(sync=True)
    shortcut_keys = tl.List(tl.Unicode(), default_value=["1", "2", "3"], help="shortcut keys (KeyboardEvent.key)").tag(sync=True)
    enter_boxes = tl.List(tl.Unicode(), help="classes of containers of text boxes where Enter is sent").tag(sync=True)
    release_boxes = tl.List(tl.Unicode(), help="of enter_boxes: Enter also moves the focus to the widget").tag(sync=True)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._callbacks: list[Callable[[dict], object]] = []
        self.on_msg(self._on_msg)

    def on_key(self, callback: Callable[[dict], object]) -> None:
        """Call `callback(event)` for every key press sent from the page."""
        self._callbacks.append(callback)

    def _on_msg(self, _widget, content, _buffers) -> None:
        if isinstance(content, dict) and content.get("type") == "keydown":
            for cb in self._callbacks:
                cb(content)

    def press(self, key: str, box: str = "", tag: str = "DIV", **event) -> None:
        """Deliver a key press as the page would (tests, scripts)."""
        self._handle_custom_msg({"type": "keydown", "key": key, "box": box, "text_box": tag != "DIV" and tag != "BUTTON",
                                 "repeat": False, "target": {"tagName": tag, "type": ""}, **event}, [])


__all__ = ["KeyShortcuts"]

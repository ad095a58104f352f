"""Small pieces the widgets share: CSS classes on a widget, handlers whose errors reach the page.

Example:
    >>> import ipywidgets as w
    >>> sorted(css(w.Button(), "fclip-skip")._dom_classes)
    ['fclip-skip']
"""
from __future__ import annotations

import functools
import logging
from typing import Callable

import ipywidgets as w

from fclip_workbench.errors import ConflictError, FclipError, UndoConflictError

log = logging.getLogger(__name__)


def guarded(method: Callable) -> Callable:
    """Run a UI handler; show any error on the widget (`self.show_conflict` for a conflict, `self.show_error`
    for any other: FclipError as is, others named, with the traceback in the log)."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (ConflictError, UndoConflictError) as e:  # someone else changed it since: nothing was written
            self.show_conflict(str(e))
        except FclipError as e:
            self.show_error(str(e))
        except Exception as e:  # noqa: BLE001 - a bug: still shown to the annotator, traceback in the log
            log.exception("%s: %s failed", type(self).__name__, method.__name__)
            self.show_error(f"{type(e).__name__}: {e} (details in the log)")
        return None
    return run


def click_events():
    """ipyevents' Event (clicks on thumbnails), or None when it is not installed (the checkboxes still work)."""
    try:
        from ipyevents import Event
    except ImportError:
        log.warning("ipyevents is not installed: clicks on batch thumbnails are off (pip install ipyevents)")
        return None
    return Event


def css(widget: w.Widget, *classes: str) -> w.Widget:
    """`widget` with these CSS classes added (the DOM contract the browser tests rely on)."""
    for c in classes:
        widget.add_class(c)
    return widget

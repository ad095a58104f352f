"""The label app's page: the annotator widget for the request's annotator, a Team page for leads, and
errors as one red line (what `apps/label.ipynb` shows; the config and checks are in `apps/__init__.py`).

Example:
    >>> from fclip_workbench.apps.page import build_label_app   # doctest: +SKIP
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from fclip_workbench.apps import LabelAppConfig
from fclip_workbench.errors import FclipError

log = logging.getLogger(__name__)


def build_label_app(config: LabelAppConfig | None = None, environ: Mapping[str, str] | None = None,
                    resources=None):
    """The annotator widget for `config` (default: from the environment), annotator from the URL.

    `resources`: what `serving.preload_label_app` loaded in advance (a preheated kernel); None loads it now.
    Errors the user can fix come back as a red message widget, never a traceback.

    >>> app = build_label_app(LabelAppConfig(data="teaching", field="colour"))   # doctest: +SKIP
    """
    from fclip_workbench.apps.serving import preload_label_app

    environ = os.environ if environ is None else environ
    try:
        res = preload_label_app(config, environ) if resources is None else resources
        if isinstance(res, FclipError):
            raise res
        config, catalog, model, store = res.config, res.catalog, res.model, res.store
        from fclip_workbench.apps.access import app_identity

        annotator, link_role = app_identity(config, environ.get("QUERY_STRING"), store)
        from fclip_workbench.widgets.annotator import Annotator

        log.info("label app: %s, field %s, model %s, store %s, annotator %s",
                 catalog.name, config.field, config.model, config.store, annotator)
        widget = Annotator.from_catalog(catalog, config.field, model=model, store=store, annotator=annotator or "",
                                        embeddings=res.embeddings, embedding_store=config.cache)
        if annotator and link_role in (None, "lead") and store.has_role(annotator, "lead"):
            return with_team_page(widget, store, config.field, total=len(catalog))
        return widget
    except FclipError as e:
        return error_widget(str(e))


def with_team_page(annotator_widget, store, field: str, total: int):
    """Tabs "Label" (the annotator) and "Team" (the lead's dashboard, drawn when first opened)."""
    import ipywidgets as w

    team = w.VBox([w.HTML("<i>Open this page to draw the team's figures.</i>")])
    tabs = w.Tab(children=[annotator_widget, team])
    tabs.set_title(0, "Label")
    tabs.set_title(1, "Team")
    tabs.add_class("fclip-app-tabs")

    def on_select(change) -> None:
        if change["new"] == 1 and len(team.children) == 1:
            from fclip_workbench.labelling.dashboard import TeamDashboard

            team.children = [TeamDashboard(store, field, total=total)]

    tabs.observe(on_select, names="selected_index")
    return tabs


def error_widget(message: str):
    """A one-message red box (what a merchandiser sees instead of a traceback)."""
    import html

    import ipywidgets as w

    box = w.HTML(f"<div style='color:#b00020;font-size:16px;padding:12px'><b>The labelling app could not start.</b>"
                 f"<br>{html.escape(message, quote=False)}</div>")
    box.add_class("fclip-app-error")
    return box

"""The lead's dashboard: who labels how fast, how well the team agrees, how often suggestions are taken,
and what is left, as Plotly charts over the label store's event log.

`team_figures(store, field, total)` gives the figures (testable without widgets); `TeamDashboard` shows
them with the agreement summary and a Refresh button, in notebook 03 and on the app's "Team" page.

Example:
    >>> figs = team_figures(store, "articleType", total=len(catalog))     # doctest: +SKIP
    >>> sorted(figs)                                                      # doctest: +SKIP
    ['acceptance', 'agreement', 'labels_per_hour', 'remaining']
    >>> TeamDashboard(store, "articleType", total=len(catalog))           # doctest: +SKIP
"""
from __future__ import annotations

import html

import pandas as pd

from fclip_workbench.labelling.agreement import Agreement, agreement_of, pairwise_kappa
from fclip_workbench.labelling.store.records import ACCEPTED_SOURCES, DECISION_SOURCES

FREQS = {"hour": "h", "day": "D", "week": "W"}


def period_of(times: pd.Series, freq: str) -> pd.Series:
    """The start of the hour, day or week each time falls in."""
    return times.dt.to_period("W").dt.start_time if freq == "week" else times.dt.floor(FREQS[freq])


def decisions(history: pd.DataFrame) -> pd.DataFrame:
    """The annotators' decisions and answers not undone (`store.history()` rows)."""
    if not len(history):
        return history
    undone = set(history["undoes"].dropna().astype(int))
    live = history[~history["id"].isin(undone)]
    return live[live["source"].isin(DECISION_SOURCES + ("adjudicated",))]


def labels_per_hour(history: pd.DataFrame, freq: str = "hour"):
    """Bar chart: decisions per hour (or day, week) per annotator."""
    import plotly.express as px

    d = decisions(history)
    counts = (d.assign(period=period_of(d["time"], freq)).groupby(["period", "annotator"]).size().rename("labels")
              .reset_index()
              if len(d) else pd.DataFrame(columns=["period", "annotator", "labels"]))
    fig = px.bar(counts, x="period", y="labels", color="annotator", barmode="group",
                 title=f"Labels per {freq} per annotator")
    return fig.update_layout(xaxis_title=None, legend_title=None)


def agreement_over_time(answers: pd.DataFrame, freq: str = "day"):
    """Line chart: share of overlap products whose two answers agree, and Cohen's kappa, per period of the
    second answer."""
    import plotly.graph_objects as go

    rows = []
    if len(answers):
        a = answers.sort_values("event_id")
        second = a.groupby("item_id").filter(lambda g: len(g) >= 2).groupby("item_id")
        pairs = pd.DataFrame([(i, g["value"].iloc[0] == g["value"].iloc[1], g["time"].iloc[1]) for i, g in second],
                             columns=["item_id", "agree", "time"])
        if len(pairs):
            pairs["period"] = period_of(pairs["time"], freq)
            for period, g in pairs.groupby("period"):
                k = pairwise_kappa(a[a["item_id"].isin(g["item_id"])])
                kappa = float((k["kappa"] * k["items"]).sum() / k["items"].sum()) if len(k) and k["items"].sum() \
                    else float("nan")
                rows.append((period, float(g["agree"].mean()), kappa, len(g)))
    df = pd.DataFrame(rows, columns=["period", "agreement", "kappa", "products"])
    fig = go.Figure([go.Scatter(x=df["period"], y=df["agreement"], mode="lines+markers", name="share agreeing",
                                customdata=df["products"], hovertemplate="%{y:.0%} of %{customdata} products"),
                     go.Scatter(x=df["period"], y=df["kappa"], mode="lines+markers", name="Cohen's kappa")])
    return fig.update_layout(title=f"Agreement on overlap products per {freq}", yaxis_range=[-0.05, 1.05])


def acceptance(history: pd.DataFrame):
    """Bar chart: the share of each annotator's decisions that accepted the model's suggestion."""
    import plotly.express as px

    d = decisions(history)
    d = d[d["source"].isin(DECISION_SOURCES)] if len(d) else d
    rate = (d.assign(accepted=d["source"].isin(ACCEPTED_SOURCES)).groupby("annotator")
            .agg(accepted=("accepted", "mean"), decisions=("accepted", "size")).reset_index()
            if len(d) else pd.DataFrame(columns=["annotator", "accepted", "decisions"]))
    fig = px.bar(rate, x="annotator", y="accepted", text="decisions", title="Suggestions accepted",
                 labels={"accepted": "share of decisions", "decisions": "decisions"})
    return fig.update_layout(yaxis_tickformat=".0%", yaxis_range=[0, 1], xaxis_title=None)


def remaining_counts(labels: pd.DataFrame, answers: pd.DataFrame, pending: int, total: int | None) -> dict[str, int]:
    """{labelled, answered once (waiting for a second answer), waiting for adjudication, not started}."""
    labelled = set(labels["item_id"]) if len(labels) else set()
    per_item = answers.groupby("item_id").size() if len(answers) else pd.Series(dtype=int)
    once = int(sum(1 for i, n in per_item.items() if n == 1 and i not in labelled))
    out = {"labelled": len(labelled), "answered once": once, "waiting for adjudication": int(pending)}
    if total is not None:
        out["not started"] = max(0, int(total) - sum(out.values()))
    return out


def remaining(counts: dict[str, int]):
    """Horizontal stacked bar of `remaining_counts`."""
    import plotly.graph_objects as go

    colours = {"labelled": "#2a9d8f", "answered once": "#e9c46a", "waiting for adjudication": "#e76f51",
               "not started": "#cccccc"}
    fig = go.Figure([go.Bar(y=["products"], x=[n], name=k, orientation="h", marker_color=colours.get(k),
                            text=[n], textposition="inside") for k, n in counts.items()])
    return fig.update_layout(barmode="stack", title="What is left", height=220, yaxis_visible=False)


def team_figures(store, field: str, total: int | None = None, freq: str = "hour") -> dict:
    """The four charts of `field` from `store` (a `LabelStore`): labels_per_hour, agreement, acceptance,
    remaining. `total`: the number of products to label (the catalog's size), for "not started"."""
    history = store.history(field=field)
    answers = store.answers(field)
    counts = remaining_counts(store.labels(field), answers, len(store.pending_adjudication(field)), total)
    return {"labels_per_hour": labels_per_hour(history, freq), "agreement": agreement_over_time(answers, "day"),
            "acceptance": acceptance(history), "remaining": remaining(counts)}


def summary_html(ag: Agreement) -> str:
    """The agreement figures as a small HTML table (kappa per pair, accuracy per annotator)."""
    head = html.escape(str(ag).splitlines()[0])
    kappa = "".join(f"<tr><td>{html.escape(r.annotator_a)} &ndash; {html.escape(r.annotator_b)}</td>"
                    f"<td>{r.kappa:.2f}</td><td>{r.items}</td></tr>" for r in ag.kappa.itertuples())
    acc = "".join(f"<tr><td>{html.escape(r.annotator)}</td><td>{r.accuracy:.0%}</td><td>{r.items}</td></tr>"
                  for r in ag.accuracy.itertuples())
    return (f"<p>{head}</p><table><tr><th>pair</th><th>kappa</th><th>products</th></tr>{kappa}</table>"
            f"<table><tr><th>annotator</th><th>accuracy vs settled</th><th>products</th></tr>{acc}</table>")


def TeamDashboard(store, field: str, total: int | None = None, freq: str = "hour"):
    """A widget with the agreement summary, the four charts and a Refresh button."""
    import ipywidgets as w
    import plotly.graph_objects as go

    summary = w.HTML()
    boxes = w.VBox()
    refresh = w.Button(description="Refresh", icon="refresh")

    def draw(_=None) -> None:
        summary.value = summary_html(agreement_of(field, store.answers(field), store.labels(field)))
        boxes.children = [go.FigureWidget(f) for f in team_figures(store, field, total, freq).values()]

    refresh.on_click(draw)
    draw()
    box = w.VBox([w.HBox([w.HTML(f"<h3>Team: {html.escape(field)}</h3>"), refresh]), summary, boxes])
    box.add_class("fclip-team-dashboard")
    return box


__all__ = ["team_figures", "TeamDashboard", "labels_per_hour", "agreement_over_time", "acceptance", "remaining",
           "remaining_counts", "decisions", "summary_html"]

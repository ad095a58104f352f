"""Labelling as a team in the browser: two annotators in two Chromium contexts on one `fclip label` app
answer the same overlap product independently (neither sees the other's answer), their disagreement
reaches the adjudicator's queue with both answers, the adjudicated label is the one exported, and the
lead's "Team" page draws the dashboard."""
from __future__ import annotations

import sys

import pytest

from fclip_workbench.labelling.labels import LabelStore
from tests.test_label_app import (FIELD, PAGE_TIMEOUT_MS, label_server, open_app, settled, teaching_dir,  # noqa: F401
                                  wait_item, wait_saved)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups and signals")


def show(page, item_id: str, limit: int = 80) -> None:
    """Skip until the product `item_id` is shown."""
    for _ in range(limit):
        if settled(page, 1)[0] == item_id:
            return
        page.click(".fclip-skip")
        page.wait_for_timeout(200)
    raise AssertionError(f"{item_id} never came in this annotator's queue")


def test_two_annotators_disagree_and_the_adjudicator_settles(teaching_dir, tiny_model_dir, tmp_path, browser):  # noqa: F811
    store_path = tmp_path / "labels.sqlite"
    with LabelStore(store_path) as s:  # the lead sets the team up before the app starts
        s.grant("lea", "lead", by="lea")
        s.set_overlap(FIELD, 1.0, by="lea")  # every product is answered by two
    contexts = [browser.new_context(viewport={"width": 1280, "height": 900}) for _ in range(3)]
    try:
        ana, bob, lea = (c.new_page() for c in contexts)
        for p in (ana, bob, lea):
            p.set_default_timeout(60_000)
        with label_server(tmp_path, teaching_dir, tiny_model_dir, store_path) as (url, proc, kernels, log):
            open_app(ana, url, "ana")
            item, first = settled(ana, 1)
            assert "independent answer" in ana.inner_text(".fclip-current")
            ana.locator(".fclip-suggestion").nth(0).click()
            assert wait_saved(ana, item) == first
            assert "your independent answer" in ana.inner_text(".fclip-status")
            with LabelStore(store_path, read_only=True) as s:
                assert s.get(item, FIELD) is None and s.answers(FIELD)["annotator"].tolist() == ["ana"]

            open_app(bob, url, "bob")
            show(bob, item)
            current = bob.inner_text(".fclip-current")
            assert "independent answer" in current and "ana" not in current  # ana's answer is not shown
            other = bob.locator(".fclip-suggestion").nth(1).inner_text().strip()
            assert other != first
            bob.locator(".fclip-suggestion").nth(1).click()
            assert wait_saved(bob, item) == other
            with LabelStore(store_path, read_only=True) as s:
                assert s.pending_adjudication(FIELD)["item_id"].tolist() == [item]

            open_app(lea, url, "lea")
            assert lea.locator(".fclip-app-tabs").count() == 1  # a lead has the Team page
            lea.locator(".fclip-queue-order select").select_option(label="disagreements to adjudicate (adjudicators)")
            lea.wait_for_function("(id) => document.querySelector('.fclip-annotator-item').innerText.trim() === id",
                                  arg=item, timeout=PAGE_TIMEOUT_MS)
            # lea's first product may be that item already (as her own overlap answer): wait for the new order
            lea.wait_for_function("() => document.querySelector('.fclip-current').innerText.includes('ana:')",
                                  timeout=PAGE_TIMEOUT_MS)
            answers = lea.inner_text(".fclip-current")
            assert f"ana: {first}" in answers and f"bob: {other}" in answers, answers
            lea.locator(".fclip-correct-input input").fill(other)
            lea.click(".fclip-correct-save")
            assert wait_saved(lea, item) == other
            assert "(adjudicated)" in lea.inner_text(".fclip-status")

            lea.get_by_role("tab", name="Team").click()
            lea.wait_for_selector(".fclip-team-dashboard", timeout=PAGE_TIMEOUT_MS)
            lea.wait_for_selector(".fclip-team-dashboard .main-svg", timeout=PAGE_TIMEOUT_MS)  # Plotly drew
            assert "1 products answered twice" in lea.inner_text(".fclip-team-dashboard")
        with LabelStore(store_path) as s:
            exported = s.export(tmp_path / "labels.csv")
        import pandas as pd

        out = pd.read_csv(exported)
        assert out.loc[out["item_id"].astype(str) == item, "value"].tolist() == [other]
        assert len(out) == 1  # ana's lone answers elsewhere are not labels
    finally:
        for c in contexts:
            c.close()

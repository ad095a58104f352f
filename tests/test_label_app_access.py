"""A team server (`fclip label --host 0.0.0.0 --token ...`): every request needs the token or an annotator's
link, kernel REST/websocket included; an annotator link labels as that annotator whatever the URL's
?annotator= says; unknown and expired links are refused. Config file and --check; links on the store."""
from __future__ import annotations

import contextlib
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import psutil
import pytest

from fclip_workbench.errors import AccessError, ConfigError
from fclip_workbench.labelling.labels import LabelStore
from fclip_workbench.labelling.store.links import check_link, create_link, revoke_links
from tests.test_label_app import (FIELD, PAGE_TIMEOUT_MS, label_cmd, label_one, stop_all,  # noqa: F401
                                  teaching_dir, wait_item)
from tests.plugins.services import free_port, serve

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups and signals")
TOKEN = "team-token-0123456789abcdef"
KERNEL = "0b5f8a3c-1b1e-4f11-9c4e-0d6a8b7c1234"  # no such kernel: auth answers before the lookup


def status(url: str, headers: dict | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


@pytest.fixture(scope="module")
def team_server(teaching_dir, tiny_model_dir, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("team")
    store_path = tmp / "labels.sqlite"
    with LabelStore(store_path) as s:
        links = {"ana": create_link(s, "ana"),
                 "old": create_link(s, "old", days=1, now=datetime.now(timezone.utc) - timedelta(days=2))}
    port = free_port()
    cmd = label_cmd(teaching_dir, tiny_model_dir, store_path, port, "--host", "0.0.0.0", "--token", TOKEN)
    kernels: list[psutil.Process] = []
    with serve(cmd, port, "fclip-ready-probe", log=tmp / "voila.log", timeout_s=300) as (url, proc):
        try:
            yield url, store_path, links
        finally:
            with contextlib.suppress(psutil.Error):
                kernels += psutil.Process(proc.pid).children(recursive=True)
    stop_all(kernels)


def test_no_token_wrong_token_and_kernel_endpoints_are_refused(team_server):
    url, _, _ = team_server
    assert status(f"{url}/")[0] == 403
    assert status(f"{url}/?token=wrong-token-xxxxxxxxxxxx")[0] == 403
    assert status(f"{url}/api/kernels/{KERNEL}")[0] == 403
    ws = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
          "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    assert status(f"{url}/api/kernels/{KERNEL}/channels", ws)[0] == 403
    assert status(f"{url}/api/kernels/{KERNEL}/channels?token=wrong-token-xxxxxxxx", ws)[0] == 403
    # the same endpoint with the server token passes auth and only then finds no such kernel
    assert status(f"{url}/api/kernels/{KERNEL}?token={TOKEN}")[0] == 404
    assert status(f"{url}/api/kernels/{KERNEL}", {"Authorization": f"token {TOKEN}"})[0] == 404


def test_unknown_and_expired_links_are_refused_with_the_reason(team_server):
    url, _, links = team_server
    code, body = status(f"{url}/api/kernels/{KERNEL}?token=fcl_{'x' * 43}")
    assert code == 403 and "not known" in body
    code, body = status(f"{url}/api/kernels/{KERNEL}?token={links['old']}")
    assert code == 403 and "expired" in body
    assert status(f"{url}/?token={links['old']}")[0] == 403


@pytest.mark.slow
def test_an_annotator_link_labels_as_that_annotator_whatever_the_url_says(team_server, browser):
    url, store_path, links = team_server
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        start = time.perf_counter()
        page.goto(f"{url}/?token={links['ana']}&annotator=mallory", timeout=PAGE_TIMEOUT_MS)  # an edited URL
        page.wait_for_selector(".fclip-annotator .fclip-annotator-item", timeout=PAGE_TIMEOUT_MS)
        wait_item(page)
        print(f"first product through a link: {time.perf_counter() - start:.1f} s")
        item, _ = label_one(page, "click1")
        with LabelStore(store_path, read_only=True) as s:
            history = s.history(item, FIELD)
        assert history["annotator"].tolist() == ["ana"]
        with LabelStore(store_path, read_only=True) as s:
            assert set(s.history()["annotator"]) == {"ana"}
    finally:
        context.close()


# ------------------------------------------------------------------ the store's links, config, --check
def test_links_are_stored_hashed_and_expire_and_revoke(tmp_path):
    with LabelStore(tmp_path / "l.sqlite") as s:
        secret = create_link(s, "ana", days=1)
        assert check_link(s, secret).annotator == "ana"
        with pytest.raises(AccessError, match="expired"):
            check_link(s, secret, now=datetime.now(timezone.utc) + timedelta(days=2))
        with pytest.raises(AccessError, match="not known"):
            check_link(s, secret + "x")
        with pytest.raises(Exception, match="grant it first"):
            create_link(s, "bob", role="lead")
        assert revoke_links(s, "ana") == 1
        with pytest.raises(AccessError, match="revoked"):
            check_link(s, secret)
    assert secret.encode() not in (tmp_path / "l.sqlite").read_bytes()


def test_links_on_postgresql(postgres_url):
    with LabelStore(postgres_url) as s:
        s.grant("lea", "lead", by="lea")
        secret = create_link(s, "lea", role="lead", days=None)
        link = check_link(s, secret)
        assert (link.annotator, link.role, link.expires) == ("lea", "lead", None)


def test_config_unknown_keys_are_named(tmp_path):
    from fclip_workbench.apps.app_config import load_config

    p = tmp_path / "team.toml"
    p.write_text('field = "colour"\nprot = 9000\nhots = "x"\n')
    with pytest.raises(ConfigError, match="unknown keys hots, prot"):
        load_config(p)


def test_check_reports_each_problem_and_missing_embeddings(teaching_dir, tiny_model_dir, tmp_path):  # noqa: F811
    from fclip_workbench.cli import main

    cfg = tmp_path / "team.toml"
    cfg.write_text(f'data = "{teaching_dir}"\nfield = "nope"\nmodel = "{tiny_model_dir}"\n'
                   f'store = "{tmp_path / "l.sqlite"}"\ncache = "{tmp_path / "emb.sqlite"}"\nhost = "0.0.0.0"\n')
    assert main(["label", "--config", str(cfg), "--check"]) == 1
    assert main(["label", "--config", str(cfg), "--field", FIELD, "--check", "--cache", str(tmp_path / "no.sqlite")]) == 1

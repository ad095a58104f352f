"""The labelling web app end to end: `fclip label` serves the annotator with Voila, Chromium
(Playwright) labels products with clicks, keys and a batch, the labels survive a reload and a
SIGKILL of the server, and the same annotator labels inside JupyterLab.

Data: a generated teaching catalog (60 products, field `colour`) and the tiny random model
(suggestions are arbitrary, which is fine: the tests check what is saved, not its quality).
"""
from __future__ import annotations

import contextlib
import json
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from fclip_workbench.apps import LabelAppConfig, annotator_from_query, check_field
from fclip_workbench.errors import InvalidArgumentError
from fclip_workbench.labelling.app import check_host, check_port, is_loopback
from tests.plugins.services import ExternalRequests, doc_screenshot, free_port, serve

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups and signals")

FIELD = "colour"
N_PRODUCTS = 60
SAVED = re.compile(r"saved: (\S+) colour = (\S+)")
PAGE_TIMEOUT_MS = 120_000  # kernel start + torch import + model + embeddings, on a busy 2-core machine


# ----------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def teaching_dir(tmp_path_factory) -> Path:
    from fclip_workbench.data.datasets import make_teaching_catalog

    root = tmp_path_factory.mktemp("teaching")
    make_teaching_catalog(root, n=N_PRODUCTS)
    return root


def label_cmd(data: Path, model: Path, store: Path, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fclip_workbench.cli", "label", "--data", str(data), "--field", FIELD,
            "--model", str(model), "--store", str(store), "--port", str(port), "-q", *extra]


@contextlib.contextmanager
def label_server(tmp_path: Path, data: Path, model: Path, store: Path):
    """`fclip label` under serve(); at exit the server and its kernels are gone (kernels run in
    their own sessions, so they are stopped by pid, not only with the server's group)."""
    port = free_port()
    log = tmp_path / "voila.log"
    kernels: list[psutil.Process] = []
    # a path that 404s answers without starting a kernel (GET / would execute the app)
    with serve(label_cmd(data, model, store, port), port, "fclip-ready-probe", log=log) as (url, proc):
        try:
            yield url, proc, kernels, log
        finally:
            with contextlib.suppress(psutil.Error):
                kernels += psutil.Process(proc.pid).children(recursive=True)
    stop_all(kernels)


def stop_all(procs: list[psutil.Process], grace_s: float = 10) -> None:
    alive = [p for p in procs if p.is_running()]
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(alive, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=10)


def open_app(page, url: str, annotator: str = "ana") -> None:
    page.goto(f"{url}/?annotator={annotator}", timeout=PAGE_TIMEOUT_MS)
    page.wait_for_selector(".fclip-annotator .fclip-annotator-item", timeout=PAGE_TIMEOUT_MS)
    wait_item(page)


def wait_item(page) -> str:
    """The id of the product shown, once one is shown."""
    page.wait_for_function("() => { const e = document.querySelector('.fclip-annotator-item');"
                           " return e && e.innerText.trim().length > 0; }")
    return page.inner_text(".fclip-annotator-item").strip()


def wait_saved(page, item_id: str) -> str:
    """Wait for the acknowledgement of `item_id`'s label; return the saved value.
    (`settled` made sure the status did not already name `item_id` before the action.)"""
    page.wait_for_function("(id) => { const s = document.querySelector('.fclip-status');"
                           " return s && s.innerText.includes('saved: ' + id + ' '); }", arg=item_id,
                           timeout=PAGE_TIMEOUT_MS)
    m = SAVED.search(page.inner_text(".fclip-status"))
    assert m and m.group(1) == item_id, page.inner_text(".fclip-status")
    return m.group(2)


def settled(page, k: int) -> tuple[str, str]:
    """(item id, suggestion k) once two reads 0.3 s apart agree: the widget's updates arrive as
    separate messages, so a read right after an acknowledgement can mix two products."""
    def read() -> tuple[str, str]:
        return wait_item(page), page.locator(".fclip-suggestion").nth(k - 1).inner_text().strip()

    last = read()
    for _ in range(100):
        page.wait_for_timeout(300)
        now = read()
        stale = f"saved: {now[0]} " in page.inner_text(".fclip-status")  # still showing the product just saved
        if now == last and not stale:
            return now
        last = now
    raise AssertionError(f"the annotator did not settle: {last}")


def label_one(page, how: str) -> tuple[str, str]:
    """Label the product shown with a click on suggestion 1-3 ("click2") or key 1-3 ("key1")."""
    k = int(how[-1])
    item_id, expected = settled(page, k)
    suggestion = page.locator(".fclip-suggestion").nth(k - 1)
    if how.startswith("click"):
        suggestion.click()
    else:
        page.mouse.move(1, 1)  # keys do not depend on where the pointer is
        page.keyboard.press(str(k))
    value = wait_saved(page, item_id)
    assert value == expected, f"{how}: saved {value!r}, suggestion {k} was {expected!r}"
    return item_id, value


def progress_count(page) -> int:
    text = page.inner_text(".fclip-progress")
    m = re.search(r"(\d+) / (\d+)", text)
    assert m, text
    return int(m.group(1))


def store_labels(store: Path) -> dict[str, str]:
    from fclip_workbench.labelling.labels import LabelStore

    s = LabelStore(str(store))
    try:
        df = s.labels(FIELD)
        return dict(zip(df["item_id"].astype(str), df["value"].astype(str)))
    finally:
        s.close()


def store_history(store: Path) -> list[tuple]:
    from fclip_workbench.labelling.labels import LabelStore

    s = LabelStore(str(store))
    try:
        return list(s.history(field=FIELD)[["item_id", "new_value", "source"]].itertuples(index=False, name=None))
    finally:
        s.close()


# ----------------------------------------------------------------------------- no browser: the CLI's checks
def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fclip_workbench.cli", "label", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_label_cli_refuses_an_unknown_field_listing_the_catalog_fields(teaching_dir, tiny_model_dir, tmp_path):
    r = run_cli("--data", str(teaching_dir), "--field", "colur", "--model", str(tiny_model_dir),
                "--store", str(tmp_path / "l.sqlite"), "--port", str(free_port()))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "'colur'" in lines[0] and "garment, colour, pattern" in lines[0], lines[0]
    assert not (tmp_path / "l.sqlite").exists()  # refused before the store is touched


@pytest.mark.parametrize("args, says", [
    (["--host", "example.org"], "--host 'example.org' is not an IP address"),
    (["--annotator", "<script>"], "Annotator name '<script>' is not usable"),
    (["--model", "no-such-model"], "Unknown model 'no-such-model'. Known presets: fclip-mini"),
])
def test_label_cli_bad_options_are_one_line(teaching_dir, tmp_path, args, says):
    r = run_cli("--data", str(teaching_dir), "--field", FIELD, "--store", str(tmp_path / "l.sqlite"),
                "--port", str(free_port()), *args)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert says in r.stderr, r.stderr


def test_label_cli_refuses_a_port_in_use(teaching_dir, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_cli("--data", str(teaching_dir), "--field", FIELD, "--port", str(port))
    assert r.returncode == 2 and f"--port {port} on 127.0.0.1 is not free" in r.stderr, r.stderr


def test_non_loopback_hosts_need_an_explicit_request():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")
    with pytest.raises(InvalidArgumentError, match="0.0.0.0 is reachable from other machines"):
        check_host("0.0.0.0")
    assert check_host("0.0.0.0", allow_remote=True) == "0.0.0.0"
    with pytest.raises(InvalidArgumentError, match="--port 70000 is not a TCP port"):
        check_port("127.0.0.1", 70000)


def test_app_config_round_trip_and_query_string(teaching_dir):
    from fclip_workbench.apps import ENV_CONFIG
    from fclip_workbench.apps.page import build_label_app
    from fclip_workbench.data.datasets import open_catalog
    from fclip_workbench.errors import ConfigError

    cfg = LabelAppConfig(data=str(teaching_dir), field=FIELD, store="/x/labels.sqlite", limit=10)
    assert LabelAppConfig.from_env({ENV_CONFIG: cfg.to_json()}) == cfg
    with pytest.raises(ConfigError, match="unknown keys \\['colour'\\]"):
        LabelAppConfig.from_env({ENV_CONFIG: json.dumps({"colour": 1})})
    with pytest.raises(ConfigError, match="FCLIP_LABEL_APP is not set"):
        LabelAppConfig.from_env({})
    assert annotator_from_query("x=1&annotator=Ana%20L%C3%B3pez") == "Ana López"
    assert annotator_from_query("name=bob") == "bob" and annotator_from_query(None) is None
    with pytest.raises(InvalidArgumentError, match="'a/b'"):
        annotator_from_query("annotator=a/b")
    with pytest.raises(InvalidArgumentError, match="its fields: garment, colour, pattern"):
        check_field(open_catalog(teaching_dir), "size")
    # a user error in the app is a message on the page, not a traceback
    box = build_label_app(environ={ENV_CONFIG: LabelAppConfig(data=str(teaching_dir), field="size").to_json()})
    assert "fclip-app-error" in box._dom_classes and "Unknown field 'size'" in box.value


# ----------------------------------------------------------------------------- the browser
def test_voila_app_labels_with_clicks_keys_and_a_batch_and_keeps_them(teaching_dir, tiny_model_dir, tmp_path, page):
    store = tmp_path / "labels.sqlite"
    external = ExternalRequests(page)  # offline: every font, script and style comes from this machine
    with label_server(tmp_path, teaching_dir, tiny_model_dir, store) as (url, proc, kernels, log):
        assert re.search(rf"open {re.escape(url)}/ ", log.read_text()), log.read_text()[-2000:]
        open_app(page, url)
        assert page.locator(".fclip-annotator-name input").input_value() == "ana"  # from ?annotator=
        assert "build_label_app" not in page.content()  # no code shown to a merchandiser
        saved = dict(label_one(page, how) for how in ("click1", "key1", "click2", "key2", "click3"))
        assert len(saved) == 5
        doc_screenshot(page, "annotator", ".fclip-annotator")
        assert not external.urls, f"the app asked other hosts: {external.urls}"
        assert progress_count(page) == 5, f"labelled {saved}; store: {store_history(store)}"

        # batch: pick a label, untick one product, confirm the rest in one action
        page.locator(".fclip-mode button", has_text="batch").click()
        page.wait_for_function("() => document.querySelectorAll('.fclip-batch-item').length >= 11")
        label = page.locator(".fclip-batch-label select").input_value()
        boxes = page.locator(".fclip-batch-item")
        ids = [boxes.nth(i).inner_text().strip() for i in range(boxes.count())]
        boxes.nth(0).locator("input").uncheck()
        page.wait_for_function("(n) => document.querySelector('.fclip-batch-confirm').innerText.includes('Confirm ' + n)",
                               arg=len(ids) - 1)
        page.click(".fclip-batch-confirm")
        page.wait_for_function("(n) => document.querySelector('.fclip-status').innerText.includes('saved: ' + n + ' labels')",
                               arg=len(ids) - 1)
        batch = {i: label for i in ids[1:]}
        assert len(batch) >= 10 and not set(batch) & set(saved)

        # a reload (new kernel) sees every label: progress and the first product's current label
        page.reload(timeout=PAGE_TIMEOUT_MS)
        page.wait_for_selector(".fclip-annotator .fclip-annotator-item", timeout=PAGE_TIMEOUT_MS)
        wait_item(page)
        assert progress_count(page) == len(saved) + len(batch)
        assert ids[0] not in store_labels(store)  # the unticked product was not labelled

        # stop cleanly on SIGTERM (the process we started IS Voila: fclip label execs into it)
        kernels += psutil.Process(proc.pid).children(recursive=True)
        assert kernels, "no kernel was started"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        gone, alive = psutil.wait_procs(kernels, timeout=15)
        assert not alive, f"kernels left after SIGTERM: {[p.pid for p in alive]}"

    labels = store_labels(store)
    assert labels == {**saved, **batch}
    from fclip_workbench.labelling.labels import LabelStore
    s = LabelStore(str(store))
    try:
        hist = s.history(field=FIELD)
    finally:
        s.close()
    assert set(hist["annotator"]) == {"ana"}
    assert sorted(hist["source"].value_counts().items()) == sorted(
        {"suggestion-accepted": 5, "batch": len(batch)}.items())


def test_voila_app_loses_no_acknowledged_label_when_the_server_is_killed(teaching_dir, tiny_model_dir, tmp_path,
                                                                          page):
    store = tmp_path / "labels.sqlite"
    with label_server(tmp_path, teaching_dir, tiny_model_dir, store) as (url, proc, kernels, log):
        open_app(page, url, annotator="kim")
        acked = dict(label_one(page, how) for how in ("key1", "click1"))
        item_id, _ = settled(page, 1)
        page.locator(".fclip-suggestion").nth(0).click()
        acked[item_id] = wait_saved(page, item_id)
        # the acknowledgement is on screen: kill everything at once, no chance to flush or close
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        assert len(tree) >= 2, "no kernel under the server"
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs(tree, timeout=15)
        kernels += tree

    con = sqlite3.connect(store)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()
    labels = store_labels(store)
    assert {k: labels.get(k) for k in acked} == acked


LAB_NOTEBOOK = """\
from fclip_workbench.data.datasets import open_catalog
from fclip_workbench.embedding.models import load_model
from fclip_workbench.widgets.annotator import Annotator

Annotator.from_catalog(open_catalog({data!r}), "colour", model=load_model({model!r}, device="cpu"),
                       store={store!r}, annotator="lab-user", progress=False)
"""


def test_the_same_annotator_labels_in_jupyterlab(teaching_dir, tiny_model_dir, tmp_path, jupyterlab, page):
    import nbformat

    store = tmp_path / "lab-labels.sqlite"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(LAB_NOTEBOOK.format(data=str(teaching_dir), model=str(tiny_model_dir),
                                                              store=str(store)))]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, jupyterlab.root / "annotate.ipynb")

    page.goto(jupyterlab.url_for("lab/tree/annotate.ipynb"), timeout=PAGE_TIMEOUT_MS)
    page.wait_for_selector(".jp-Notebook .jp-Cell .cm-content", timeout=PAGE_TIMEOUT_MS)
    # the kernel must be connected first: a Shift+Enter before that is dropped by JupyterLab
    page.wait_for_selector("text=/Python 3 \\(ipykernel\\) \\| Idle/", timeout=PAGE_TIMEOUT_MS)
    page.click(".jp-Notebook .jp-Cell .cm-content")
    page.keyboard.press("Shift+Enter")
    try:
        page.wait_for_selector(".jp-OutputArea .fclip-annotator .fclip-suggestion", timeout=PAGE_TIMEOUT_MS)
    except Exception:
        page.screenshot(path=str(tmp_path / "lab.png"))
        raise AssertionError(f"no annotator in JupyterLab (screenshot {tmp_path / 'lab.png'}): "
                             + page.inner_text("body")[-1500:])
    item_id, value = label_one(page, "click1")
    item2, value2 = label_one(page, "click2")
    # the annotator types their name and presses Enter: key 1 then labels at once (no click on the image first),
    # and it is ours, not JupyterLab's "heading 1" command
    name = page.locator(".fclip-annotator-name input")
    name.fill("lab-user")
    name.press("Enter")
    item3, expected3 = settled(page, 1)
    page.mouse.move(1, 1)
    page.keyboard.press("1")
    value3 = wait_saved(page, item3)
    assert value3 == expected3
    assert page.locator(".jp-MarkdownCell").count() == 0  # key 1 made no heading of a cell
    assert store_labels(store) == {item_id: value, item2: value2, item3: value3}
    from fclip_workbench.labelling.labels import LabelStore
    s = LabelStore(str(store))
    try:
        assert set(s.history(field=FIELD)["annotator"]) == {"lab-user"}
    finally:
        s.close()


# ----------------------------------------------------------------------------- hostile text, names and keys
HOSTILE_FIELD = 'colour<img src=x onerror="window.__xss=1">'
HOSTILE_TITLE = '<script>window.__xss=2</script><img src=y onerror="window.__xss=3"> red shirt'


@pytest.fixture(scope="module")
def hostile_dir(teaching_dir, tmp_path_factory) -> Path:
    """The teaching catalog with markup in a column name (the labelled field) and in every title."""
    import pandas as pd

    root = tmp_path_factory.mktemp("hostile")
    df = pd.read_csv(teaching_dir / "catalog.csv").head(20)
    df["text"] = HOSTILE_TITLE
    df = df.rename(columns={"colour": HOSTILE_FIELD})
    for rel in df["image"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes((teaching_dir / rel).read_bytes())
    df.to_csv(root / "catalog.csv", index=False)
    return root


def test_voila_app_shows_markup_in_catalog_text_as_text_and_keys_work_after_the_name_box(
        hostile_dir, tiny_model_dir, tmp_path, page):
    """Markup in a column name and in titles is shown as text (no script runs); the annotator types their name,
    presses Enter, and keys 1-3 label at once (no click first); a name the rules refuse is said and writes nothing."""
    store = tmp_path / "labels.sqlite"
    external = ExternalRequests(page)
    cmd = [sys.executable, "-m", "fclip_workbench.cli", "label", "--data", str(hostile_dir / "catalog.csv"),
           "--field", HOSTILE_FIELD, "--model", str(tiny_model_dir), "--store", str(store), "-q"]
    port = free_port()
    with serve([*cmd, "--port", str(port)], port, "fclip-ready-probe", log=tmp_path / "voila.log") as (url, proc):
        kernels: list[psutil.Process] = []
        try:
            page.goto(f"{url}/", timeout=PAGE_TIMEOUT_MS)
            page.wait_for_selector(".fclip-annotator .fclip-annotator-item", timeout=PAGE_TIMEOUT_MS)
            wait_item(page)
            assert page.evaluate("() => window.__xss") is None, "catalog text ran as script"
            assert HOSTILE_FIELD in page.inner_text(".fclip-annotator")  # shown literally
            assert "<script>window.__xss=2</script>" in page.inner_text(".fclip-annotator-title")

            # a name with a bidi control is refused in the status line; nothing is written under it
            name = page.locator(".fclip-annotator-name input")
            name.fill("ana\u202e")
            name.press("Enter")
            page.wait_for_function("() => document.querySelector('.fclip-status').innerText.includes('annotator name')")
            first = wait_item(page)
            page.keyboard.press("1")
            page.wait_for_timeout(1500)
            assert not store.exists() or not store_history_of(store, HOSTILE_FIELD)

            # a good name, Enter, then key 1 straight away: labelled under that name
            name.fill("zoë")
            name.press("Enter")
            page.mouse.move(1, 1)
            page.keyboard.press("1")
            page.wait_for_function("(id) => document.querySelector('.fclip-status').innerText.includes('saved: ' + id)",
                                   arg=first)
            assert page.evaluate("() => window.__xss") is None
            assert not external.urls, f"the app asked other hosts: {external.urls}"
        finally:
            with contextlib.suppress(psutil.Error):
                kernels += psutil.Process(proc.pid).children(recursive=True)
    stop_all(kernels)
    hist = store_history_of(store, HOSTILE_FIELD)
    assert [(r[0], r[3]) for r in hist] == [(first, "zoë")]


def store_history_of(store: Path, field: str) -> list[tuple]:
    from fclip_workbench.labelling.labels import LabelStore

    s = LabelStore(str(store))
    try:
        return list(s.history(field=field)[["item_id", "new_value", "source", "annotator"]]
                    .itertuples(index=False, name=None))
    finally:
        s.close()

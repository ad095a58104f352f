"""`fast`: measured per machine, remembered, never a path below the fidelity asked for."""
import json

import pytest

from fclip_workbench.embedding import precision, precision_fast
from fclip_workbench.embedding.models import load_model
from fclip_workbench.embedding.precision_fast import (MIN_COSINE_ENV, choose_fast, measure_precisions, pick,
                                                      supported_precisions)
from fclip_workbench.errors import InvalidArgumentError


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FCLIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(MIN_COSINE_ENV, raising=False)
    monkeypatch.setattr(precision_fast, "_printed", set())
    return tmp_path / "cache" / "fast"


def _measured(**paths):
    out = {"fp32": {"img_s": 10.0, "ratio": 1.0, "worst_cos": 1.0}}
    out.update({n: {"img_s": 10.0 * r, "ratio": r, "worst_cos": c} for n, (r, c) in paths.items()})
    return out


def test_pick_takes_the_fastest_faithful_path_and_never_a_slower_or_unfaithful_one():
    assert pick(_measured(onnx=(1.0, 1.0), **{"onnx-int8": (3.9, 0.9998)}, bf16=(2.7, 0.9999)), 0.999)[0] == "onnx-int8"
    assert pick(_measured(**{"onnx-int8": (3.9, 0.995)}, bf16=(2.7, 0.9999)), 0.999)[0] == "bf16"  # int8 too far
    assert pick(_measured(**{"onnx-int8": (3.9, 0.995)}), 0.99)[0] == "onnx-int8"  # a looser fidelity, asked for
    assert pick(_measured(onnx=(0.5, 1.0), bf16=(0.3, 0.9999)), 0.999) == (
        "fp32", "no faithful path beats fp32 by 1.10x here (onnx 0.5x at 1.0000, bf16 0.3x at 0.9999)")
    assert pick(_measured(onnx=(1.05, 1.0)), 0.999)[0] == "fp32"  # within noise of fp32: fp32
    assert pick(_measured(), 0.999)[0] == "fp32"


def test_measuring_compares_every_supported_path_to_fp32_in_the_same_run(tiny_model):
    measured = measure_precisions(tiny_model, ["onnx", "onnx-int8"])
    assert set(measured) == {"fp32", "onnx", "onnx-int8"}
    assert measured["fp32"]["ratio"] == 1.0 and measured["fp32"]["worst_cos"] > 0.99999
    assert measured["onnx"]["worst_cos"] > 0.9999  # the same fp32 graph
    assert all(m["img_s"] > 0 and 0 < m["worst_cos"] <= 1.0001 for m in measured.values())


def test_fast_is_measured_once_then_remembered_and_printed_once(tiny_model, cache, monkeypatch, capsys):
    monkeypatch.setattr(precision_fast, "measure_precisions",
                        lambda model, names=None: _measured(**{"onnx-int8": (3.0, 0.9998)}))
    chosen = tiny_model.with_precision("fast")
    assert chosen.precision == "onnx-int8" and chosen.fingerprint.startswith(tiny_model.fingerprint + "+onnx-int8")
    err = capsys.readouterr().err
    assert "measuring" in err and "fast -> onnx-int8: 3.0x fp32 on this CPU, worst cosine 0.9998 >= 0.999" in err
    [memory] = list(cache.glob("*.json"))
    assert json.loads(memory.read_text())["precision"] == "onnx-int8"

    def must_not_measure(*a, **k):
        raise AssertionError("measured again")
    monkeypatch.setattr(precision_fast, "measure_precisions", must_not_measure)
    assert tiny_model.with_precision("fast").precision == "onnx-int8"
    assert capsys.readouterr().err == ""  # remembered, and said once per process


def test_a_damaged_memory_is_measured_again(tiny_model, cache, monkeypatch, caplog):
    monkeypatch.setattr(precision_fast, "measure_precisions", lambda model, names=None: _measured())
    assert choose_fast(tiny_model).precision == "fp32"
    [memory] = list(cache.glob("*.json"))
    good = json.loads(memory.read_text())
    for bad in ("{not json", json.dumps({"precision": "int4", "reason": "", "min_cosine": 0.999}),
                json.dumps({"precision": "fast", "reason": "", "min_cosine": 0.999}), "[]",
                json.dumps({**good, "precision": "fp16"}),  # never measured, does not run here
                json.dumps({**good, "min_cosine": "x"}), json.dumps({**good, "min_cosine": 0.5}),
                json.dumps({**good, "measured": {"fp32": {"worst_cos": "high"}}})):
        memory.write_text(bad)
        assert choose_fast(tiny_model).precision == "fp32"
        assert "measuring again" in caplog.text
        caplog.clear()


def test_the_memory_is_per_fidelity_and_per_weights(tiny_model, cache, monkeypatch):
    import torch

    monkeypatch.setattr(precision_fast, "measure_precisions",
                        lambda model, names=None: _measured(**{"onnx-int8": (3.0, 0.995)}))
    assert choose_fast(tiny_model).precision == "fp32"
    assert choose_fast(tiny_model, min_cosine=0.99).precision == "onnx-int8"
    monkeypatch.setenv(MIN_COSINE_ENV, "0.99")
    assert choose_fast(tiny_model).precision == "onnx-int8"
    model = load_model(tiny_model.source, device="cpu")
    with torch.no_grad():
        model.model.visual.proj.add_(0.1)
    choose_fast(model)
    assert len(list(cache.glob("*.json"))) == 3  # 0.999, 0.99, and the changed weights


@pytest.mark.parametrize("bad", [0, 1.5, -0.2, "x", True])
def test_a_bad_fidelity_is_one_line(tiny_model, monkeypatch, bad):
    with pytest.raises(InvalidArgumentError, match=r"worst cosine in \(0, 1\]"):
        choose_fast(tiny_model, min_cosine=bad)
    monkeypatch.setenv(MIN_COSINE_ENV, str(bad))
    with pytest.raises(InvalidArgumentError, match=r"worst cosine in \(0, 1\]"):
        choose_fast(tiny_model)


def test_a_read_only_cache_still_chooses(tiny_model, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("FCLIP_CACHE", str(blocker))  # a folder cannot be made under a file, even by root
    monkeypatch.setattr(precision_fast, "measure_precisions", lambda model, names=None: _measured(bf16=(2.0, 1.0)))
    assert choose_fast(tiny_model).precision == "bf16"
    assert "cannot remember" in caplog.text


def test_supported_precisions_name_why_a_path_does_not_run_here(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda cpuinfo=None: False)
    why = dict(supported_precisions("cpu"))
    assert why["fp32"] == "" and "avx512_bf16" in why["bf16"] and why["fp16"]
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda cpuinfo=None: True)
    assert dict(supported_precisions("cpu"))["bf16"] == ""


def test_load_model_accepts_fast(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(precision_fast, "measure_precisions", lambda model, names=None: _measured(onnx=(1.5, 1.0)))
    m = load_model(tiny_model_dir, device="cpu", precision="fast")
    assert m.precision == "onnx" and m.fingerprint.endswith("+onnx")


def test_cli_embed_fast_names_its_choice_and_keys_vectors_by_the_path_chosen(tiny_model_dir, small_catalog_dir,
                                                                              tmp_path, monkeypatch, capsys):
    from fclip_workbench.cli import main

    monkeypatch.setattr(precision_fast, "measure_precisions", lambda model, names=None: _measured(onnx=(2.0, 1.0)))
    common = ["--data", str(small_catalog_dir / "products.csv"), "--image-root", str(small_catalog_dir / "images"),
              "--model", str(tiny_model_dir), "--cache", str(tmp_path / "c.sqlite"), "--device", "cpu", "-q"]
    assert main(["embed", *common, "--precision", "fast", "--no-text"]) == 0
    out, err = capsys.readouterr()
    assert "fast -> onnx: 2.0x fp32 on this CPU" in err and "+onnx; store" in out
    assert main(["embed", *common, "--precision", "onnx", "--no-text"]) == 0  # the same path: from the cache
    assert "12 embedded (12 from cache, 0 computed)" in capsys.readouterr().out
    assert main(["embed", *common, "--precision", "fast", "--fast-min-cosine", "2"]) == 2
    err = capsys.readouterr().err
    assert "worst cosine in (0, 1]" in err and "Traceback" not in err


def test_cli_models_lists_the_precisions_this_machine_runs(monkeypatch, capsys):
    from fclip_workbench.cli import main

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda cpuinfo=None: False)
    assert main(["models", "--precisions", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = {line.split()[0]: line.split()[1] for line in lines[1:] if line.strip()}
    assert row["fp32"] == "yes" and row["bf16"] == "no" and row["fast"] == "yes" and row["fp16"] == "no"
    assert any("bf16" in line and "avx512_bf16" in line for line in lines)

"""The course's checks: a right answer passes, a blank or typical wrong answer gets a hint that does not
contain the answer, a malformed answer never raises; solutions replace exactly the exercise cells."""
from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np
import pytest

from fclip_workbench.course import CHECKERS, check, solution_cells, solve, verify
from fclip_workbench.course.core import exercise_names

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_right_blank_and_wrong_answers():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(8, 6))
    r, c = np.unravel_index(m.argmax(), m.shape)
    assert verify("argmax_pixel", (r, c), map_=m).ok
    swapped = verify("argmax_pixel", (c, r), map_=m)
    assert not swapped.ok and "(row, column)" in swapped.message
    blank = verify("argmax_pixel", ..., map_=m)
    assert not blank.ok and "no answer yet" in blank.message
    mask = np.zeros((8, 6), bool)
    mask[:4] = True
    pos = np.clip(m, 0, None)
    want = pos[mask].sum() / pos.sum()
    assert verify("energy", want + 5e-4, map_=m, mask=mask).ok  # within tolerance
    wrong = verify("energy", m[mask].sum() / m.sum(), map_=m, mask=mask)
    assert not wrong.ok and "clip" in wrong.message and f"{want:.3f}" not in wrong.message


def test_top_ids_recognises_reversed_order():
    v = np.eye(5)
    q = np.array([5, 4, 3, 2, 1.0]) / np.linalg.norm([5, 4, 3, 2, 1.0])
    ids = [f"p{i}" for i in range(5)]
    assert verify("top_ids", ["p1", "p0"], vectors=v, query_vector=q, ids=ids, k=2).ok
    rev = verify("top_ids", ["p3", "p4"], vectors=v, query_vector=q, ids=ids, k=2)
    assert not rev.ok and "least" in rev.message


def test_dup_pairs_hints_at_double_counting():
    v = np.array([[1, 0], [1, 0], [0, 1.0]])
    assert verify("dup_pairs", 1, vectors=v, threshold=0.99).ok
    assert "twice" in verify("dup_pairs", 5, vectors=v, threshold=0.99).message  # 2 * 1 + 3 diagonal
    assert "itself" in verify("dup_pairs", 4, vectors=v, threshold=0.99).message or \
        "own duplicate" in verify("dup_pairs", 4, vectors=v, threshold=0.99).message


def test_malformed_answer_and_unknown_name_never_raise(capsys):
    check("argmax_pixel", "not a pixel", map_=np.ones((2, 2)))
    check("no_such_exercise", 1)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("✗ argmax_pixel: could not read your answer")
    assert out[1].startswith("✗ no_such_exercise: no exercise called")


def test_check_prints_a_tick():
    check("chance_r10", 10 / 200, n=200)
    verdict = verify("chance_r10", 1 / 200, n=200)
    assert not verdict.ok and "first" in verdict.message


@pytest.mark.parametrize("ipynb", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_every_exercise_has_a_solution_and_a_checker(ipynb):
    nb = nbformat.read(ipynb, as_version=4)
    names = exercise_names(nb)
    sol = NOTEBOOKS / "solutions" / f"{ipynb.stem}.py"
    if not names:
        assert not sol.exists(), f"{sol.name} has solutions but {ipynb.name} no exercise"
        return
    solutions = solution_cells(sol)
    solved = solve(nb, solutions)
    assert set(names) <= set(CHECKERS), f"no checker for {set(names) - set(CHECKERS)}"
    for cell, new in zip(nb.cells, solved.cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if any(t.startswith("exercise-") for t in tags):
            assert "..." in cell.source and new.source != cell.source
        else:
            assert new.source == cell.source
    with pytest.raises(ValueError, match="without a solution"):
        solve(nb, {k: v for k, v in list(solutions.items())[1:]})


def test_zero_shot_hints_at_argmin_positions_and_axis():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(7, 4))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    t = np.eye(3, 4)                                       # 3 labels
    labels = ["dress", "shirt", "shoe"]
    sims = v @ t.T
    best = [labels[j] for j in sims.argmax(axis=1)]
    assert verify("zero_shot", best, vectors=v, text_vectors=t, labels=labels).ok
    worst = verify("zero_shot", [labels[j] for j in sims.argmin(axis=1)], vectors=v, text_vectors=t, labels=labels)
    assert not worst.ok and "least" in worst.message
    pos = verify("zero_shot", sims.argmax(axis=1), vectors=v, text_vectors=t, labels=labels)
    assert not pos.ok and "positions" in pos.message
    per_label = verify("zero_shot", sims.argmax(axis=0), vectors=v, text_vectors=t, labels=labels)  # (L,)
    assert not per_label.ok and "axis 1" in per_label.message
    for r in (worst, pos, per_label):
        assert not any(b in r.message for b in best)      # the hint never names a right label


def test_margin_first_tells_margin_from_least_confident():
    proba = np.array([[0.50, 0.49, 0.01],                  # margin 0.01, top 0.50
                      [0.34, 0.33, 0.33],                  # margin 0.01, top 0.34
                      [0.40, 0.30, 0.30],                  # margin 0.10, top 0.40: less sure than row 0 by top
                      [0.90, 0.05, 0.05],
                      [0.60, 0.20, 0.20]])
    ids = ["a", "b", "c", "d", "e"]
    assert verify("margin_first", ["b", "a"], proba=proba, ids=ids, k=2).ok
    least = verify("margin_first", ["b", "c"], proba=proba, ids=ids, k=2)
    assert not least.ok and "least-confident" in least.message
    sure = verify("margin_first", ["d", "e"], proba=proba, ids=ids, k=2)
    assert not sure.ok and "surest" in sure.message
    rows = verify("margin_first", [1, 0], proba=proba, ids=ids, k=2)
    assert not rows.ok and "row numbers" in rows.message
    assert "K = 2" in verify("margin_first", ["b"], proba=proba, ids=ids, k=2).message


def test_kappa_is_not_raw_agreement():
    from sklearn.metrics import cohen_kappa_score

    a = np.array(list("aaaaaaabbc"))
    b = np.array(list("aaaaaabbcc"))
    want = cohen_kappa_score(a, b)
    assert verify("kappa", want, a=a, b=b).ok
    raw = verify("kappa", float(np.mean(a == b)), a=a, b=b)
    assert not raw.ok and "raw agreement" in raw.message and f"{want:.2f}" not in raw.message
    uniform = verify("kappa", (0.8 - 1 / 3) / (1 - 1 / 3), a=a, b=b)
    assert not uniform.ok and "own value shares" in uniform.message
    lazy = np.array(["a"] * 10)
    assert verify("kappa", 0.0, a=a, b=lazy).ok            # answering the commonest value is chance level

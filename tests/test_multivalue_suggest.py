"""Multi-valued suggestions and audit: per-value probabilities, calibration, multi-label issues from a store."""
from __future__ import annotations

import numpy as np

from fclip_workbench.analysis.audit_multi import find_multilabel_issues
from fclip_workbench.labelling.labels import LabelStore
from fclip_workbench.labelling.suggest_multi import MultiSuggester, binary_ece, labels_matrix

VALUES = ["floral", "striped", "v-neck", "pocket"]


def clustered(n: int, seed: int = 0) -> tuple[np.ndarray, list[list[str]]]:
    """Embeddings where each value moves the vector along its own direction, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.random((n, len(VALUES))) < 0.3  # (n, V)
    x = rng.normal(scale=0.6, size=(n, 16)) + 1.5 * y @ np.eye(len(VALUES), 16)
    return x.astype(np.float32), [[v for v, on in zip(VALUES, row) if on] for row in y]


def test_probabilities_are_independent_and_calibration_lowers_ece():
    x, sets = clustered(900)
    y = labels_matrix(sets, VALUES)
    s = MultiSuggester(VALUES, np.eye(len(VALUES), 16)).fit(x[:300], y[:300])
    p = s.predict_proba(x[600:])
    assert p.shape == (300, 4) and not np.allclose(p.sum(1), 1.0)  # not a softmax
    assert ((p >= 0.5) == y[600:].astype(bool)).mean() > 0.85
    s.cal = (3.0, 0.0)  # a miscalibrated (over-confident) scale, then Platt on held-out items
    bad = binary_ece(s.predict_proba(x[600:]), y[600:])
    good = binary_ece(s.calibrate(x[300:600], y[300:600]).predict_proba(x[600:]), y[600:])
    assert good < bad
    p = s.predict_proba(x[600:601])[0]
    top = s.suggest(x[600:601], threshold=0.5)[0]  # what the chips pre-show: values >= 0.5, likeliest first
    assert [v for v, _ in top] == sorted([v for j, v in enumerate(VALUES) if p[j] >= 0.5],
                                         key=lambda v: -p[VALUES.index(v)])


def test_audit_finds_wrong_sets_labelled_in_the_store(tmp_path):
    x, sets = clustered(300, seed=1)
    wrong = [3, 50, 120]
    store = LabelStore(tmp_path / "l.sqlite")
    store.set_multi("attribute")
    ids = [f"p{i}" for i in range(len(sets))]
    given = [list(s) for s in sets]
    for i in wrong:  # a missing or an extra value
        given[i] = [v for v in VALUES if v not in sets[i]]
    store.change_values([(ids[i], given[i], []) for i in range(len(ids))], "attribute", annotator="ana")
    table = store.value_sets("attribute").set_index("item_id").reindex(ids)
    read = [list(v) if isinstance(v, tuple) else [] for v in table["values"]]
    t = find_multilabel_issues(x, read, VALUES)
    top = set(t["position"].head(10))
    assert set(wrong) <= top
    assert t.set_index("position").loc[wrong, "is_issue"].all()
    store.close()

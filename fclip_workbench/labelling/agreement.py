"""How reliable a team's labels are: agreement between annotators, accuracy, and consensus (no store code).

Inputs are the label store's tables: `store.answers(field)` (the independent answers on overlap
products, DataFrame[item_id, annotator, value, time, event_id]) and `store.labels(field)` (the current
labels). `LabelStore.agreement(field)` and `LabelStore.consensus(field, pred_probs)` call these.

- `pairwise_kappa`: Cohen's kappa for each pair of annotators on the products both answered
  (scikit-learn's `cohen_kappa_score`);
- `alpha`: Krippendorff's alpha (nominal) over every overlap answer of a field (`krippendorff`);
- `accuracy`: each annotator's answers against the settled labels (agreed or adjudicated);
- `consensus_table`: the consensus label, a quality score per product and the annotators' agreement, by
  cleanlab's multi-annotator method (CROWDLAB) with the suggester's probabilities, or by majority vote
  when no probabilities are given.

Example:
    >>> import pandas as pd
    >>> ans = pd.DataFrame({"item_id": ["p1", "p1", "p2", "p2", "p3", "p3"],
    ...                     "annotator": ["ana", "bob"] * 3, "value": ["red", "red", "blue", "red", "blue", "blue"]})
    >>> pairwise_kappa(ans)[["annotator_a", "annotator_b", "items", "agreement"]].values.tolist()
    [['ana', 'bob', 3, 0.6666666666666666]]
    >>> round(alpha(ans), 3)
    0.444
"""
from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fclip_workbench.errors import InvalidArgumentError

KAPPA_COLUMNS = ["annotator_a", "annotator_b", "items", "agreement", "kappa"]
ACCURACY_COLUMNS = ["annotator", "items", "correct", "accuracy"]
CONSENSUS_COLUMNS = ["item_id", "consensus_label", "quality", "agreement", "annotations", "method"]


def answer_matrix(answers: pd.DataFrame) -> pd.DataFrame:
    """Products x annotators, each cell an answer (NaN: not answered by that annotator); one answer per pair.

    >>> answer_matrix(pd.DataFrame({"item_id": ["p1", "p1"], "annotator": ["a", "b"], "value": ["x", "y"]})).values.tolist()
    [['x', 'y']]
    """
    if not len(answers):
        return pd.DataFrame()
    return answers.drop_duplicates(["item_id", "annotator"], keep="last").pivot(
        index="item_id", columns="annotator", values="value")


def _values(m: pd.DataFrame) -> set[str]:
    """Every value given in an answer matrix."""
    return {str(v) for v in m.to_numpy().ravel() if pd.notna(v)}


def pairwise_kappa(answers: pd.DataFrame) -> pd.DataFrame:
    """Cohen's kappa per pair of annotators on the products both answered: DataFrame[annotator_a,
    annotator_b, items, agreement (share equal), kappa (NaN when a single value was ever given)]."""
    from sklearn.metrics import cohen_kappa_score

    m = answer_matrix(answers)
    rows = []
    for a, b in itertools.combinations(sorted(m.columns), 2):
        both = m[[a, b]].dropna()
        if not len(both):
            continue
        x, y = both[a].astype(str).to_numpy(), both[b].astype(str).to_numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one value only: kappa is undefined (NaN), said in the docstring
            k = float(cohen_kappa_score(x, y)) if len(set(x) | set(y)) > 1 else float("nan")
        rows.append((a, b, len(both), float(np.mean(x == y)), k))
    return pd.DataFrame(rows, columns=KAPPA_COLUMNS)


def alpha(answers: pd.DataFrame) -> float:
    """Krippendorff's alpha (nominal) of a field's overlap answers; NaN when no product has two answers or a
    single value was ever given."""
    import krippendorff

    m = answer_matrix(answers)
    if not len(m) or int((m.notna().sum(axis=1) >= 2).sum()) == 0:
        return float("nan")
    codes = {v: k for k, v in enumerate(sorted(_values(m)))}
    if len(codes) < 2:
        return float("nan")
    data = m.T.apply(lambda col: col.map(lambda v: codes.get(str(v), np.nan) if pd.notna(v) else np.nan))
    return float(krippendorff.alpha(reliability_data=data.to_numpy(dtype=float), level_of_measurement="nominal"))


def accuracy(answers: pd.DataFrame, settled: pd.Series) -> pd.DataFrame:
    """Each annotator's answers against `settled` (item_id -> the settled label): DataFrame[annotator, items,
    correct, accuracy], on the products that have both."""
    if not len(answers):
        return pd.DataFrame(columns=ACCURACY_COLUMNS)
    a = answers.assign(truth=answers["item_id"].map(settled)).dropna(subset=["truth"])
    rows = [(name, len(g), int((g["value"] == g["truth"]).sum()), float((g["value"] == g["truth"]).mean()))
            for name, g in a.groupby("annotator")]
    return pd.DataFrame(rows, columns=ACCURACY_COLUMNS)


@dataclass
class Agreement:
    """A field's agreement figures (`LabelStore.agreement(field)`)."""

    field: str
    answered_twice: int  # overlap products with two answers
    agreed: int  # ... whose answers were equal
    settled: int  # ... with a label now (agreed or adjudicated)
    pending: int  # ... waiting for an adjudicator
    alpha: float  # Krippendorff's alpha, nominal
    kappa: pd.DataFrame  # KAPPA_COLUMNS
    accuracy: pd.DataFrame  # ACCURACY_COLUMNS, against the settled labels

    def __str__(self) -> str:
        share = f"{self.agreed / self.answered_twice:.0%}" if self.answered_twice else "n/a"
        lines = [f"{self.field}: {self.answered_twice} products answered twice, {self.agreed} agreed ({share}), "
                 f"{self.pending} waiting for adjudication; Krippendorff's alpha "
                 + ("n/a" if math.isnan(self.alpha) else f"{self.alpha:.3f}")]
        lines += [f"  kappa {r.annotator_a}-{r.annotator_b}: {r.kappa:.3f} on {r.items} products"
                  for r in self.kappa.itertuples()]
        lines += [f"  accuracy {r.annotator}: {r.accuracy:.1%} of {r.items}" for r in self.accuracy.itertuples()]
        return "\n".join(lines)


def agreement_of(field: str, answers: pd.DataFrame, labels: pd.DataFrame) -> Agreement:
    """The `Agreement` of `answers` (store.answers) given the current `labels` (store.labels)."""
    m = answer_matrix(answers)
    twice = m[m.notna().sum(axis=1) >= 2] if len(m) else m
    agreed = int((twice.nunique(axis=1) == 1).sum()) if len(twice) else 0
    current = labels.set_index("item_id")["value"] if len(labels) else pd.Series(dtype=object)
    settled = current[current.index.isin(twice.index)] if len(twice) else current.iloc[:0]
    return Agreement(field=field, answered_twice=len(twice), agreed=agreed, settled=len(settled),
                     pending=len(twice) - len(settled), alpha=alpha(answers), kappa=pairwise_kappa(answers),
                     accuracy=accuracy(answers, settled))


def annotations_of(answers: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Every annotator's label per product: the overlap answers, plus the current label of each product as
    its decider's annotation (an adjudication counts; an "agreed" label repeats an answer and does not).
    DataFrame[item_id, annotator, value]."""
    a = answers[["item_id", "annotator", "value"]] if len(answers) else pd.DataFrame(columns=["item_id", "annotator", "value"])
    d = labels[["item_id", "annotator", "value"]] if len(labels) else a.iloc[:0]
    d = d[~d.set_index(["item_id", "annotator"]).index.isin(a.set_index(["item_id", "annotator"]).index)]
    return pd.concat([a, d], ignore_index=True)


def consensus_table(annotated: pd.DataFrame, pred_probs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The consensus label per product: DataFrame[item_id, consensus_label, quality, agreement, annotations,
    method].

    `annotated`: `annotations_of(...)`. `pred_probs`: the suggester's probabilities, rows indexed by item id,
    one column per class; then cleanlab's CROWDLAB gives the consensus and its quality (0..1, low: check
    it). A value annotated but absent from the columns gets a tiny probability. Without `pred_probs`: the
    majority vote, quality = the share of annotators who gave it.
    """
    if not len(annotated):
        return pd.DataFrame(columns=CONSENSUS_COLUMNS)
    m = answer_matrix(annotated)  # products x annotators
    if pred_probs is None:
        votes = m.apply(lambda r: r.dropna().value_counts(), axis=1).fillna(0)
        top = votes.idxmax(axis=1)
        n = m.notna().sum(axis=1)
        share = votes.max(axis=1) / n
        return pd.DataFrame({"item_id": m.index, "consensus_label": top.values, "quality": share.values,
                             "agreement": share.values, "annotations": n.values, "method": "majority vote"})
    if not isinstance(pred_probs, pd.DataFrame):
        raise InvalidArgumentError("pred_probs must be a DataFrame: one row per item id (index), one column per "
                                   "class (e.g. session.probabilities())")
    missing = [i for i in m.index if i not in pred_probs.index]
    if missing:
        raise InvalidArgumentError(f"pred_probs has no row for {len(missing)} labelled products, e.g. "
                                   f"{missing[:3]}; give the suggester's probabilities of every labelled product")
    from cleanlab.multiannotator import get_label_quality_multiannotator

    classes = list(pred_probs.columns) + sorted(_values(m) - set(map(str, pred_probs.columns)))
    code = {c: k for k, c in enumerate(classes)}
    probs = np.full((len(m), len(classes)), 1e-6)
    probs[:, :pred_probs.shape[1]] = np.clip(pred_probs.loc[m.index].to_numpy(dtype=float), 1e-6, None)
    probs /= probs.sum(axis=1, keepdims=True)  # (n_items, n_classes)
    coded = m.apply(lambda col: col.map(lambda v: code[str(v)] if pd.notna(v) else np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab warns about annotators with few labels: the table says so
        out = get_label_quality_multiannotator(coded.reset_index(drop=True), probs, verbose=False,
                                               return_detailed_quality=False, return_annotator_stats=False)
    q = out["label_quality"]
    return pd.DataFrame({"item_id": m.index, "consensus_label": [classes[int(c)] for c in q["consensus_label"]],
                         "quality": q["consensus_quality_score"].to_numpy(), "agreement":
                         q["annotator_agreement"].to_numpy(), "annotations": q["num_annotations"].to_numpy(),
                         "method": "crowdlab"})


__all__ = ["Agreement", "agreement_of", "pairwise_kappa", "alpha", "accuracy", "answer_matrix", "annotations",
           "consensus_table", "KAPPA_COLUMNS", "ACCURACY_COLUMNS", "CONSENSUS_COLUMNS"]

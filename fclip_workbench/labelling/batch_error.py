"""How many labels of a confirmed batch are wrong: the count the suggester's probabilities imply, with an interval.

A batch sets one value for N products. When the suggester gives product i the calibrated probability
p_i that the value is right, and products are wrong independently, the number wrong is a sum of
independent Bernoulli(1 - p_i): a Poisson-binomial count. Its mean is sum(1 - p_i); its exact
distribution comes from convolving the N Bernoullis one at a time (O(N^2): a few milliseconds for
N = 2,000). The interval is the exact central one: from the alpha/2 quantile to the 1 - alpha/2
quantile of that distribution (alpha = 1 - level), so it holds at least `level` of the probability
(`BatchError.coverage` says how much, the count being discrete).

The stated error is only as good as the calibration: benchmarks/bench_batch_error.py compares it with
the realised error on held-out KAGL products (docs/results/labelling.md, "A batch states its error").

Example:
    >>> e = batch_error([0.99] * 20 + [0.7] * 4)
    >>> str(e)
    'expected wrong: 1.4 of 24 (90 % interval 0–3)'
    >>> e.contains(2), round(e.rate, 3)
    (True, 0.058)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from fclip_workbench.errors import InvalidArgumentError

DEFAULT_LEVEL = 0.9  # the interval's probability: 90 % central
_TOLERANCE = 1e-12  # cumulative sums that reach a quantile up to rounding count as reaching it

__all__ = ["BatchError", "DEFAULT_LEVEL", "batch_error", "check_probabilities", "wrong_count_distribution"]


@dataclass(frozen=True)
class BatchError:
    """The number wrong among `n` batch labels: its mean and an exact central interval [low, high].

    >>> BatchError(24, 1.3, 0, 3, 0.9, 0.95)
    BatchError(n=24, expected_wrong=1.3, low=0, high=3, level=0.9, coverage=0.95)
    """

    n: int  # products in the batch
    expected_wrong: float  # sum(1 - p_i)
    low: int  # the interval's ends, counts of wrong labels (both included)
    high: int
    level: float  # the interval's nominal probability, e.g. 0.9
    coverage: float  # its exact probability under the distribution (>= level)

    @property
    def rate(self) -> float:
        """The expected share wrong, expected_wrong / n (nan for an empty batch).

        >>> BatchError(10, 0.5, 0, 2, 0.9, 0.98).rate
        0.05
        """
        return self.expected_wrong / self.n if self.n else float("nan")

    def contains(self, wrong: int) -> bool:
        """Whether a realised count of wrong labels lies in the interval.

        >>> BatchError(10, 0.5, 0, 2, 0.9, 0.98).contains(3)
        False
        """
        return self.low <= wrong <= self.high

    def __str__(self) -> str:
        """ "expected wrong: 1.3 of 24 (90 % interval 0–3)"."""
        e = self.expected_wrong
        shown = "< 0.1" if 0 < e < 0.05 else f"{e:.1f}"
        return f"expected wrong: {shown} of {self.n} ({_percent(self.level)} interval {self.low}–{self.high})"


def _percent(level: float) -> str:
    """0.9 -> '90 %', 0.995 -> '99.5 %'.

    >>> _percent(0.9), _percent(0.995)
    ('90 %', '99.5 %')
    """
    return f"{round(level * 100, 6):g} %"


def check_probabilities(p: Iterable[float] | np.ndarray, what: str = "probabilities") -> np.ndarray:
    """`p` as a (n,) float64 array, refused (one line, naming the bad value) when empty, not 1-d, not
    numbers, NaN or outside [0, 1].

    >>> check_probabilities([0.2, 1])
    array([0.2, 1. ])
    >>> check_probabilities([0.2, 1.5])
    Traceback (most recent call last):
    ...
    fclip_workbench.errors.InvalidArgumentError: probabilities must lie in [0, 1]: 1.5 at position 1
    """
    if isinstance(p, (str, bytes)):
        raise InvalidArgumentError(f"{what} must be numbers in [0, 1], not a string ({p!r})")
    try:
        arr = np.asarray(list(p) if not isinstance(p, np.ndarray) else p, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"{what} must be numbers in [0, 1]: {e}") from e
    if arr.ndim != 1:
        raise InvalidArgumentError(f"{what} must be one number per product (1-d), got shape {arr.shape}")
    if arr.size == 0:
        raise InvalidArgumentError(f"no {what}: a batch needs at least one product")
    bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0) | (arr > 1))
    if bad.size:
        i = int(bad[0])
        more = f" (and {bad.size - 1} more)" if bad.size > 1 else ""
        raise InvalidArgumentError(f"{what} must lie in [0, 1]: {arr[i]:g} at position {i}{more}")
    return arr


def _check_level(level: float) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) \
            or not math.isfinite(float(level)) or not 0 < float(level) < 1:
        raise InvalidArgumentError(f"the interval's level must be a probability strictly between 0 and 1 "
                                   f"(e.g. 0.9), got {level!r}")
    return float(level)


def wrong_count_distribution(p: Iterable[float] | np.ndarray) -> np.ndarray:
    """(n + 1,) P(exactly k wrong), k = 0..n, when product i is right with probability p_i, independently:
    the exact Poisson-binomial distribution of sum(Bernoulli(1 - p_i)), by convolution.

    >>> wrong_count_distribution([0.5, 0.5]).tolist()
    [0.25, 0.5, 0.25]
    >>> wrong_count_distribution([1.0, 0.9]).round(3).tolist()
    [0.9, 0.1, 0.0]
    """
    q = 1.0 - check_probabilities(p)  # (n,) probability each product is wrong
    pmf = np.zeros(q.size + 1, dtype=np.float64)  # (n + 1,)
    pmf[0] = 1.0
    for m, qi in enumerate(q, start=1):  # pmf over the first m products, in place
        pmf[1:m + 1] = pmf[1:m + 1] * (1.0 - qi) + pmf[:m] * qi
        pmf[0] *= 1.0 - qi
    return pmf


def batch_error(p: Iterable[float] | np.ndarray, level: float = DEFAULT_LEVEL) -> BatchError:
    """The number wrong among products whose labels are right with probabilities `p` (n,): its mean
    sum(1 - p_i) and the exact central `level` interval of its Poisson-binomial distribution.

    >>> str(batch_error([1.0] * 5))
    'expected wrong: 0.0 of 5 (90 % interval 0–0)'
    >>> str(batch_error([0.5] * 10, level=0.95))   # Binomial(10, 0.5)
    'expected wrong: 5.0 of 10 (95 % interval 2–8)'
    """
    level = _check_level(level)
    probs = check_probabilities(p)
    pmf = wrong_count_distribution(probs)  # (n + 1,)
    cdf = np.cumsum(pmf)  # (n + 1,)
    alpha = 1.0 - level
    low = int(np.searchsorted(cdf, alpha / 2 - _TOLERANCE, side="left"))
    high = int(np.searchsorted(cdf, 1.0 - alpha / 2 - _TOLERANCE, side="left"))
    high = min(max(high, low), probs.size)
    coverage = float(min(1.0, pmf[low:high + 1].sum()))
    return BatchError(n=int(probs.size), expected_wrong=float((1.0 - probs).sum()), low=low, high=high,
                      level=level, coverage=coverage)

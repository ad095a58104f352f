"""The course's check machinery (registry, verdicts, solutions); the checkers are in `checks.py`.

Exercise checks for the course notebooks: `check(name, value, **context)` prints "✓ ..." or a hint.

A checker recomputes the expected value from the learner's own context (the searcher, the map,
the table the notebook just built), so no number is hard-coded and none can drift; it compares
with a tolerance and, on a wrong answer, says what kind of mistake it looks like, never the
answer. `check` never raises: a notebook with blank exercises still runs to the end.

Solutions live apart, in `notebooks/solutions/NN_name.py`: one `# %% solution: NAME` section per
exercise; `solve(nb, solutions)` swaps each cell tagged `exercise-NAME` for its section (what CI
and a facilitator's "show me the answers" copy use).

Example:
    >>> from fclip_workbench.course import verify
    >>> r = verify("chance_r10", 0.05, n=200)
    >>> r.ok, str(r).startswith("✓")
    (True, True)
    >>> verify("chance_r10", ..., n=200).ok
    False
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# a checker: (value, **context) -> True when right, a specific hint (str) for a recognised mistake,
# False for any other wrong answer (the exercise's general hint is shown); it may raise, verify catches
Checker = Callable[..., "bool | str"]
CHECKERS: dict[str, tuple[Checker, str, str]] = {}  # name -> (checker, what a right answer shows, general hint)
EXERCISE_TAG = "exercise-"
SOLUTION_MARK = re.compile(r"^# %% solution: ([\w-]+)\s*$", re.M)


@dataclass(frozen=True)
class Result:
    """One check's verdict: `ok`, and the line shown to the learner."""
    name: str
    ok: bool
    message: str

    def __str__(self) -> str:
        return f"{'✓' if self.ok else '✗'} {self.name}: {self.message}"


def register(name: str, praise: str, hint: str) -> Callable[[Checker], Checker]:
    """Decorator: register `fn(value, **context) -> True | hint | False` as the checker of exercise `name`;
    `praise` is shown on a right answer, `hint` on a blank or unrecognised wrong one."""
    def deco(fn: Checker) -> Checker:
        CHECKERS[name] = (fn, praise, hint)
        return fn
    return deco


def verify(name: str, value: Any, **context: Any) -> Result:
    """The verdict on `value` for exercise `name`; never raises (a failing checker becomes a hint)."""
    if name not in CHECKERS:
        return Result(name, False, f"no exercise called {name!r}; known: {', '.join(sorted(CHECKERS))}")
    fn, praise, general = CHECKERS[name]
    if value is ... or value is None:
        return Result(name, False, f"no answer yet: replace the `...` with your code. Hint: {general}")
    try:
        verdict = fn(value, **context)
    except Exception as e:  # a malformed answer (wrong type, wrong shape) is a hint, not a crash
        return Result(name, False, f"could not read your answer ({type(e).__name__}: {e}). Hint: {general}")
    if verdict is True:
        return Result(name, True, praise)
    return Result(name, False, f"not yet. Hint: {verdict if isinstance(verdict, str) else general}")


def check(name: str, value: Any, **context: Any) -> None:
    """Print the verdict on `value` for exercise `name` ("✓ ..." or "✗ ...: Hint: ..."); never raises."""
    print(verify(name, value, **context))


def close(a: Any, b: Any, tol: float = 1e-3) -> bool:
    """True when two numbers (or arrays of the same shape) agree within `tol` (absolute); NaN matches NaN
    (a map with no positive mass has no energy share, for the learner as for the checker)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and bool(np.all((np.abs(a - b) <= tol) | (np.isnan(a) & np.isnan(b))))


# ------------------------------------------------------------------ solutions
def solution_cells(path: str | Path) -> dict[str, str]:
    """{exercise name: code} from a solutions file (`# %% solution: NAME` sections)."""
    text = Path(path).read_text()
    parts = SOLUTION_MARK.split(text)  # [preamble, name1, code1, name2, code2, ...]
    return {parts[i]: parts[i + 1].strip("\n") for i in range(1, len(parts), 2)}


def exercise_names(nb) -> list[str]:
    """Names of a notebook's exercises, in order (cells tagged `exercise-NAME`)."""
    return [t[len(EXERCISE_TAG):] for c in nb.cells for t in c.get("metadata", {}).get("tags", [])
            if t.startswith(EXERCISE_TAG)]


def solve(nb, solutions: dict[str, str]):
    """A copy of notebook `nb` (nbformat) with every exercise cell replaced by its solution.

    Raises ValueError naming any exercise without a solution, or solution without an exercise.
    """
    import copy

    names = exercise_names(nb)
    missing, extra = set(names) - set(solutions), set(solutions) - set(names)
    if missing or extra:
        raise ValueError(f"exercises without a solution: {sorted(missing)}; solutions without an exercise: "
                         f"{sorted(extra)}")
    out = copy.deepcopy(nb)
    for cell in out.cells:
        for t in cell.get("metadata", {}).get("tags", []):
            if t.startswith(EXERCISE_TAG):
                cell.source = solutions[t[len(EXERCISE_TAG):]]
    return out


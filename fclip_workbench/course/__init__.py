"""The course notebooks' exercises: `check(name, value, **context)` prints "✓ ..." or a hint, never the answer.

Example:
    >>> from fclip_workbench.course import check
    >>> check("chance_r10", 10 / 200, n=200)
    ✓ chance_r10: right: 10 of n candidates by luck is what any model must beat
"""
from fclip_workbench.course import checks as _checks  # noqa: F401  (registers every exercise's checker)
from fclip_workbench.course.core import CHECKERS, Result, check, close, exercise_names, solution_cells, solve, verify

__all__ = ["CHECKERS", "Result", "check", "close", "exercise_names", "solution_cells", "solve", "verify"]

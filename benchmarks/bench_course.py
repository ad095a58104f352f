"""Benchmark: how long each course notebook takes top to bottom with its own defaults, as a learner runs it.

Each notebook in notebooks/ runs through papermill with no parameters changed (the course defaults),
solved (`--solved`: the exercises filled from notebooks/solutions/, as a facilitator's demo) or blank,
in the order of the course, with FCLIP_HOME in a fresh folder unless `--home` is given, so the first
notebook pays for the embedding cache as a fresh laptop does and the later ones reuse it. Prints one
line per notebook, the course total, and the load average before and after (this machine is shared:
a busy machine shows longer times than a quiet laptop).

    nice -n 10 python benchmarks/bench_course.py                 # every notebook, blank
    nice -n 10 python benchmarks/bench_course.py --solved 01 04  # two of them, solved

Output lines: `notebook=01_embed_and_search.ipynb seconds=74.2 ok=True` ... `course_total_s=...`.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import papermill

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
GOAL_EACH_S, GOAL_TOTAL_S = 180, 900  # issue #21: each notebook at most 3 minutes, the course at most 15


def course_notebooks(only: list[str]) -> list[Path]:
    """The course's notebooks in order (NN_*.ipynb), or those whose number or name starts with `only`."""
    found = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    picked = [p for p in found if not only or any(p.name.startswith(o) for o in only)]
    if not picked:
        raise SystemExit(f"no notebook matches {only}; there are {[p.name for p in found]}")
    return picked


def run_one(path: Path, solved: bool, out_dir: Path) -> tuple[float, bool, str]:
    """(seconds, ran to the end, first error line) for one notebook run top to bottom."""
    source = nbformat.read(path, as_version=4)
    if solved:
        from fclip_workbench.course import solution_cells, solve

        solutions = NOTEBOOKS / "solutions" / f"{path.stem}.py"
        if solutions.is_file():
            source = solve(source, solution_cells(solutions))
    todo = out_dir / f"in-{path.name}"
    nbformat.write(source, todo)
    started = time.perf_counter()
    try:
        papermill.execute_notebook(str(todo), str(out_dir / path.name), cwd=str(NOTEBOOKS), progress_bar=False,
                                   kernel_name="python3")
        return time.perf_counter() - started, True, ""
    except Exception as e:  # papermill's PapermillExecutionError: report it on the line, keep timing the rest
        return time.perf_counter() - started, False, str(e).strip().splitlines()[-1][:160]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("only", nargs="*", help="notebook numbers or name prefixes (default: all)")
    ap.add_argument("--solved", action="store_true", help="run the notebooks with their solutions filled in")
    ap.add_argument("--home", default=None, help="FCLIP_HOME to use (default: a fresh temporary folder: cold caches)")
    args = ap.parse_args(argv)
    notebooks = course_notebooks(args.only)
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["FCLIP_HOME"] = args.home or str(Path(scratch) / "home")
        print(f"load_before={os.getloadavg()[0]:.1f} cpus={os.cpu_count()} FCLIP_HOME={os.environ['FCLIP_HOME']}"
              f" solved={args.solved}", flush=True)
        total, failed = 0.0, 0
        for path in notebooks:
            seconds, ok, error = run_one(path, args.solved, Path(scratch))
            total += seconds
            failed += not ok
            flag = "" if seconds <= GOAL_EACH_S else f" over_goal={GOAL_EACH_S}s"
            print(f"notebook={path.name} seconds={seconds:.1f} ok={ok}{flag}" + (f" error={error!r}" if error else ""),
                  flush=True)
    print(f"course_total_s={total:.1f} goal_s={GOAL_TOTAL_S} notebooks={len(notebooks)} failed={failed} "
          f"load_after={os.getloadavg()[0]:.1f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Check that every number of an older README appears somewhere in docs/ (figures moved, none lost).

Usage: python scripts/check_moved_figures.py [REV]   (REV: the git revision of the old README; default HEAD)

Numbers are maximal runs of digits with inner '.' or ',' ("39,953", "0.746", "2026-11-27" gives 2026,
11 and 27). Prints how many distinct numbers the old README holds, how many are found in docs/*.md
(and docs/**/*.md), and every missing one with its first line in the README; exit status 1 when any is missing.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NUMBER = re.compile(r"(?<![\d.,])\d+(?:[.,]\d+)*")


def numbers(text: str) -> set[str]:
    """Distinct numbers of `text`.

    >>> sorted(numbers("R@10 0.762, 39,953 rows; 1.10x (2026-11-27)."))
    ['0.762', '1.10', '10', '11', '2026', '27', '39,953']
    """
    return set(NUMBER.findall(text))


def main(rev: str = "HEAD") -> int:
    old = subprocess.run(["git", "show", f"{rev}:README.md"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    docs = "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").rglob("*.md")))
    wanted, found = numbers(old), numbers(docs)
    missing = sorted(wanted - found)
    print(f"README at {rev}: {len(old.splitlines())} lines, {len(wanted)} distinct numbers; "
          f"found in docs/: {len(wanted) - len(missing)}; missing: {len(missing)}")
    for n in missing:
        line = next(l for l in old.splitlines() if n in NUMBER.findall(l))
        print(f"  {n!r}: {line.strip()[:110]}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))

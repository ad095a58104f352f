"""The README is a short front door (issue 18): at most 150 lines, the two commands first, and every
link into the docs resolves to a page that exists; CI runs the README's test command."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_the_readme_is_at_most_150_lines():
    n = len(README.splitlines())
    assert n <= 150, f"README.md has {n} lines: move details into docs/"


def test_the_readme_starts_with_the_two_commands():
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", README, re.S)
    assert first_block is not None and README.index("```") < README.index("\n## "), "no command block first"
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines() if line.strip()]
    assert commands == ["make lab", "make test"], commands
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^lab:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_ci_runs_the_readmes_test_command_and_builds_the_docs():
    ci = (ROOT / ".ci" / "run").read_text()
    lines = [line.split("#")[0].strip() for line in ci.splitlines()]
    assert "make test" in lines and "make lint" in lines and any(line.endswith("make docs") for line in lines)


def test_the_readmes_links_into_the_repository_exist():
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local, "the README links into the docs"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"

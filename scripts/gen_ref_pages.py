"""Generate the API reference and the error-message index for the docs (run by mkdocs-gen-files).

The package is WALKED at build time, so the reference follows whatever module layout exists:
one page per public module (private `_name` modules, `apps/` and `weights/` are left out),
`reference/SUMMARY.md` for the navigation, and `troubleshooting-messages.md`: every
`raise SomeError("...")` of an `FclipError` subclass in the package, its message as written
(f-string fields shown as `{...}`), grouped by class.

Run by `mkdocs build` (see mkdocs.yml); `python scripts/gen_ref_pages.py --print` prints the
message index to stdout instead (no MkDocs needed).
"""
from __future__ import annotations

import ast
import html
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "fclip_workbench"
SKIP_DIRS = {"apps", "weights", "__pycache__"}  # notebooks and weights, not API


def modules() -> list[tuple[tuple[str, ...], Path]]:
    """(dotted parts, file) of every public module of the package, sorted."""
    out = []
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = tuple(rel.parts)
        if any(p in SKIP_DIRS for p in parts):
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        elif parts[-1].startswith("_") or parts[-1] == "__main__":
            continue
        if any(p.startswith("_") for p in parts[1:]):
            continue
        out.append((parts, path))
    return out


# ------------------------------------------------------------------ error messages
def _text(node: ast.AST) -> str | None:
    """The message of a raise's first argument: literal text, f-string fields as {expr}; None if not text."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        bits = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                bits.append(str(v.value))
            elif isinstance(v, ast.FormattedValue):
                expr = ast.unparse(v.value)
                bits.append("{" + (expr if len(expr) <= 24 and "join" not in expr else "...") + "}")
        return "".join(bits)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        left, right = _text(node.left), _text(node.right)
        if isinstance(node.op, ast.Mod):
            return left
        return (left or "{...}") + (right or "{...}") if (left or right) else None
    if isinstance(node, ast.Name):
        return "{" + node.id + "}"
    if isinstance(node, ast.Call):
        return "{" + ast.unparse(node)[:40] + "}"
    return None


def user_error_classes(trees: dict[str, ast.Module]) -> set[str]:
    """Names of the classes that derive from FclipError anywhere in the package (by base-class name)."""
    bases: dict[str, set[str]] = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases.setdefault(node.name, set()).update(
                    b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else "" for b in node.bases)
    user = {"FclipError"}
    changed = True
    while changed:
        changed = False
        for name, bs in bases.items():
            if name not in user and bs & user:
                user.add(name)
                changed = True
    return user


def error_messages() -> dict[str, list[tuple[str, str]]]:
    """{error class: [(message, module.function)]} of every raise of a user error in the package."""
    trees = {".".join(parts): ast.parse(path.read_text(encoding="utf-8")) for parts, path in modules()}
    user = user_error_classes(trees)
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for mod, tree in trees.items():
        def visit(node: ast.AST, where: str) -> None:
            for child in ast.iter_child_nodes(node):
                name = where
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = f"{where}.{child.name}"
                if isinstance(child, ast.Raise) and isinstance(child.exc, ast.Call):
                    func = child.exc.func
                    cls = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                    if cls in user and child.exc.args:
                        msg = _text(child.exc.args[0])
                        if msg:
                            found[cls].append((" ".join(msg.split()), name))
                visit(child, name)
        visit(tree, mod)
    return found


def messages_page() -> str:
    found = error_messages()
    total = sum(len(v) for v in found.values())
    lines = ["# Every error message", "",
             "Generated from the package's source when the site is built: each `raise` of an error a user can",
             f"meet ({len(found)} classes, {total} places), with its message as written. `{{...}}` is filled in at run",
             "time with the value at fault. What each class means and what to do about it is in",
             "[Troubleshooting](troubleshooting.md). Find your message with the browser's search (Ctrl+F) on",
             "a distinctive word of it.", ""]
    for cls in sorted(found, key=lambda c: (-len(found[c]), c)):
        lines += [f"## {cls}", ""]
        for msg, where in sorted(set(found[cls]), key=lambda mw: (mw[1], mw[0])):
            lines.append(f"- <code>{html.escape(msg)}</code> <small>({html.escape(where)})</small>")
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------ MkDocs
def build() -> None:
    import mkdocs_gen_files

    nav = mkdocs_gen_files.Nav()
    for parts, path in modules():
        doc = Path("reference", *parts[1:], "index.md") if path.name == "__init__.py" and len(parts) > 1 else \
            Path("reference", "index.md") if len(parts) == 1 else Path("reference", *parts[1:]).with_suffix(".md")
        if path.name == "index.py":  # search/index.py: its page must not take the package page's name (index.md)
            doc = doc.with_name("index-module.md")
        nav[parts[1:] if len(parts) > 1 else (PACKAGE,)] = doc.relative_to("reference").as_posix()
        with mkdocs_gen_files.open(doc, "w") as f:
            f.write(f"::: {'.'.join(parts)}\n")
        mkdocs_gen_files.set_edit_path(doc, path.relative_to(ROOT))
    with mkdocs_gen_files.open("reference/SUMMARY.md", "w") as f:
        f.writelines(nav.build_literate_nav())
    with mkdocs_gen_files.open("troubleshooting-messages.md", "w") as f:
        f.write(messages_page())


if __name__ == "__main__" and "--print" in sys.argv:
    print(messages_page())
else:
    build()

"""Griffe extension for the API reference: docstring examples (`>>>` blocks) shown as Python code.

The package's docstrings put doctests under a plain "Example:" line. Read as Markdown, their
output lines (`[['b']]`, `'a'`) would be taken for reference links; this extension fences each
`>>>` block (prompt lines, `...` continuations and the output up to the next blank line) as
`pycon` code before the docstring is rendered. Used by mkdocs.yml (mkdocstrings `extensions`).
"""
from __future__ import annotations

import re

import griffe

PROMPT = re.compile(r"^(\s*)>>>( |$)")


def fence_doctests(text: str) -> str:
    r"""Wrap every `>>>` block of `text` in a ```pycon fence at the block's indentation.

    >>> fence_doctests("Example:\n  >>> 1 + 1\n  2").splitlines()
    ['Example:', '', '  ```pycon', '  >>> 1 + 1', '  2', '  ```']
    """
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        m = PROMPT.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent = m.group(1)
        block = []
        while i < len(lines) and lines[i].strip():
            line = lines[i]
            block.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        if out and out[-1].strip():
            out.append("")
        out += [indent + "```pycon", *(indent + b for b in block), indent + "```"]
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Fence the doctest blocks of every docstring that griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)

"""Text templates: product captions for training, prompts for zero-shot classification.

Templates are `str.format` strings over a product's fields; a template whose
fields are missing or empty for a product is skipped for that product.

Example:
    >>> product_texts({"title": "Puma Men Grey T-shirt", "articleType": "Tshirts",
    ...                "baseColour": "Grey", "gender": "Men"}, ("{title}", "a {baseColour} {articleType}"))
    ['Puma Men Grey T-shirt', 'a Grey Tshirts']
"""
from __future__ import annotations

import string
from typing import Mapping, Sequence

from fclip_workbench.errors import FclipError

# Captions sampled per training step (KAGL field names; {title} is the product name).
KAGL_CAPTIONS: tuple[str, ...] = (
    "{title}",
    "{title}",
    "{articleType}",
    "a photo of a {articleType}",
    "a {baseColour} {articleType}",
    "a {baseColour} {articleType} for {gender}",
    "{gender} {subCategory} in {baseColour}",
    "{usage} {articleType}",
)

# Prompts averaged per class for zero-shot classification (CLIP's prompt ensembling).
ZERO_SHOT_PROMPTS: tuple[str, ...] = (
    "{label}",
    "a photo of a {label}",
    "a product photo of a {label}",
)


def template_fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def product_texts(fields: Mapping[str, object], templates: Sequence[str]) -> list[str]:
    """Each template filled from `fields`; templates needing an empty/missing field are skipped."""
    out = []
    for t in templates:
        names = template_fields(t)
        values = {n: str(fields.get(n, "") or "").strip() for n in names}
        if all(values.values()):
            out.append(t.format(**values))
    return out


def check_prompts(prompts: Sequence[str]) -> None:
    """Raise `FclipError` unless every prompt has a `{label}` field and no other field.

    >>> check_prompts(["a photo of a {label}", "{colour} {label}"])
    Traceback (most recent call last):
    ...
    fclip_workbench.errors.FclipError: Zero-shot prompt '{colour} {label}' has field(s) ['colour']; prompts may only use {label}
    """
    if isinstance(prompts, str) or len(prompts) == 0:
        raise FclipError(f"Give a list of zero-shot prompts such as {list(ZERO_SHOT_PROMPTS)}, got {prompts!r}")
    for p in prompts:
        try:
            fields = template_fields(p)
        except ValueError as e:
            raise FclipError(f"Zero-shot prompt {p!r} is not a valid template: {e}") from e
        other = [f for f in fields if f != "label"]
        if other:
            raise FclipError(f"Zero-shot prompt {p!r} has field(s) {other}; prompts may only use {{label}}")
        if "label" not in fields:
            raise FclipError(f"Zero-shot prompt {p!r} has no {{label}} field, e.g. 'a photo of a {{label}}'")


def fill_prompts(label: str, prompts: Sequence[str] = ZERO_SHOT_PROMPTS) -> list[str]:
    """Each prompt with `label` filled in (`check_prompts` rules).

    >>> fill_prompts("dress", ("a photo of a {label}",))
    ['a photo of a dress']
    """
    check_prompts(prompts)
    return [p.format(label=label) for p in prompts]

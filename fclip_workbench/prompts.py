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


def fill_prompts(label: str, prompts: Sequence[str] = ZERO_SHOT_PROMPTS) -> list[str]:
    """>>> fill_prompts("dress", ("a photo of a {label}",))
    ['a photo of a dress']
    """
    return [p.format(label=label) for p in prompts]

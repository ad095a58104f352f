"""mask_queries decides by the data (label-index masks with a label list, or binary masks), never by the
catalog's name: CCP's held-out subset gets one query per garment, as CCP does."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fclip_workbench.data.catalog import Catalog
from fclip_workbench.data.datasets.ccp import heldout_photos, load_ccp
from fclip_workbench.errors import InvalidArgumentError
from fclip_workbench.grounding.metrics import mask_legend, mask_queries


def fake_ccp(root, n=12):
    """A CCP-shaped folder: label_list.json, photos/, masks/ with shoes (bottom) and a dress (middle)."""
    (root / "photos").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "label_list.json").write_text(json.dumps(["null", "skin", "hair", "shoes", "dress", "belt"]))
    for i in range(n):
        mask = np.zeros((60, 40), np.uint8)
        mask[5:10] = 1  # skin: not a garment
        mask[15:45, 8:32] = 4
        mask[50:58, 5:35] = 3
        mask[46, 0] = 5  # a belt of one pixel: under 2 % of the photo
        Image.fromarray(mask).save(root / "masks" / f"{i:04d}.png")
        Image.new("RGB", (40, 60), (100, 100, 100)).save(root / "photos" / f"{i:04d}.jpg")
    return load_ccp(root)


@pytest.mark.parametrize("name", ["ccp", "ccp-heldout", "my-street-photos"])
def test_label_index_masks_give_one_query_per_garment_whatever_the_name(tmp_path, name):
    cat = fake_ccp(tmp_path / "ccp")
    cat = cat.subset(range(len(cat)), name=name)
    queries = mask_queries(cat, 0)
    assert [q for q, _ in queries] == ["shoes", "dress"]
    assert queries[0][1].sum() == 8 * 30 and queries[1][1].sum() == 30 * 24


def test_heldout_photos_keep_per_garment_queries(tmp_path):
    cat = heldout_photos(fake_ccp(tmp_path / "ccp", n=40))
    assert cat.name == "ccp-heldout" and len(cat) > 0
    assert [q for q, _ in mask_queries(cat, 0)] == ["shoes", "dress"]


def test_binary_masks_give_one_query_even_when_named_ccp(tmp_path):
    (tmp_path / "images").mkdir()
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 20:40] = 255
    Image.fromarray(mask).save(tmp_path / "images" / "m.png")
    Image.new("RGB", (64, 64)).save(tmp_path / "images" / "a.png")
    import pandas as pd

    table = pd.DataFrame([{"item_id": "a", "image": "a.png", "text": "red dress", "garment": "dress", "mask": "m.png"}])
    cat = Catalog(table, image_root=tmp_path / "images", name="ccp")
    assert mask_legend(cat) is None
    (q, m), = mask_queries(cat, 0)
    assert q == "dress" and m.sum() == 400


def test_a_mask_value_beyond_the_label_list_is_one_line(tmp_path):
    cat = fake_ccp(tmp_path / "ccp", n=1)
    (tmp_path / "ccp" / "label_list.json").write_text(json.dumps(["null", "skin", "hair", "shoes"]))
    with pytest.raises(InvalidArgumentError, match="label 5, the label list only 4"):
        mask_queries(cat, 0)


@pytest.mark.needs_data("ccp")
def test_real_heldout_ccp_photos_are_queried_per_garment():
    from fclip_workbench.paths import find_dataset

    cat = heldout_photos(load_ccp(find_dataset("ccp"), limit=60))
    queries = mask_queries(cat, 0)
    garments = cat.table.iloc[0]["labels"].split("|")
    assert len(queries) >= 2 and {q for q, _ in queries} <= set(garments)
    assert all(" " not in q or q in garments for q, _ in queries)  # garment labels, not the outfit caption

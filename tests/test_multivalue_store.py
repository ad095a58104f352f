"""Multi-valued fields in the label store: a set per item, add/remove events, undo, merges, transfer."""
from __future__ import annotations

import sqlite3
import threading

import pytest

from fclip_workbench.errors import InvalidArgumentError, LabelStoreError, LabelValueError, UndoConflictError
from fclip_workbench.labelling.labels import LabelStore
from fclip_workbench.labelling.taxonomy import Taxonomy

ATTRS = ["floral", "striped", "v-neck", "crew neck", "sleeveless", "pocket"]


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    url = str(tmp_path / "labels.sqlite") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    s = LabelStore(url, timeout=10)
    s.set_taxonomy("attribute", Taxonomy("attribute", ATTRS, multi=True))
    yield s
    s.close()


def url_of(store: LabelStore) -> str:
    return store.url.render_as_string(hide_password=False) if store.url is not None else str(store.path)


def test_values_are_a_set_changed_one_value_per_event(store):
    assert store.is_multi("attribute") and store.taxonomy("attribute").multi
    store.add_value("p1", "attribute", "Floral", annotator="ana")  # canonical spelling from the taxonomy
    store.add_value("p1", "attribute", "v-neck", annotator="ana")
    assert store.add_value("p1", "attribute", "floral", annotator="ana") is None  # already there: no event
    assert store.get_values("p1", "attribute") == {"floral", "v-neck"}
    ev = store.remove_value("p1", "attribute", "floral", annotator="bo")
    assert (ev.old_value, ev.new_value) == ("floral", None)
    assert store.get_values("p1", "attribute") == {"v-neck"}
    hist = store.history("p1", "attribute")
    assert hist[["old_value", "new_value"]].values.tolist() == [[None, "floral"], [None, "v-neck"], ["floral", None]]
    sets = store.value_sets("attribute")
    assert sets[["item_id", "values"]].values.tolist() == [["p1", ("v-neck",)]]
    with pytest.raises(LabelValueError, match="not a attribute in the taxonomy"):
        store.add_value("p1", "attribute", "polka", annotator="ana")
    with pytest.raises(InvalidArgumentError, match="multi-valued"):
        store.set("p1", "attribute", "floral", annotator="ana")
    with pytest.raises(InvalidArgumentError, match="single-valued"):
        store.add_value("p1", "colour", "red", annotator="ana")
    store.set("p1", "colour", "red", annotator="ana")  # single-valued fields unchanged
    assert store.get("p1", "colour") == "red"
    with pytest.raises(LabelStoreError, match="cannot become multi-valued"):
        store.set_multi("colour")
    with pytest.raises(InvalidArgumentError, match="cannot be overlapped"):
        store.set_overlap("attribute", 0.1)


def test_set_values_saves_only_the_toggles_so_annotators_merge(store):
    store.set_values("p1", "attribute", ["floral", "pocket"], annotator="ana")
    shown_ana = store.get_values("p1", "attribute")
    shown_bo = store.get_values("p1", "attribute")
    # both edit the same item from what they were shown: ana removes floral, bo adds v-neck
    store.set_values("p1", "attribute", shown_ana - {"floral"}, annotator="ana", shown=shown_ana)
    store.set_values("p1", "attribute", shown_bo | {"v-neck"}, annotator="bo", shown=shown_bo)
    assert store.get_values("p1", "attribute") == {"pocket", "v-neck"}  # neither overwrote the other


def test_concurrent_adds_of_different_values_all_land(store):
    other = LabelStore(url_of(store), timeout=20)
    errors: list[BaseException] = []

    def add(s: LabelStore, who: str, values: list[str]) -> None:
        try:
            for v in values:
                s.add_value("p1", "attribute", v, annotator=who)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=add, args=(store, "ana", ATTRS[:3])),
               threading.Thread(target=add, args=(other, "bo", ATTRS[3:]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    assert not errors
    assert store.get_values("p1", "attribute") == set(ATTRS)


def test_undo_reverts_ones_own_change_and_respects_others(store):
    store.add_value("p1", "attribute", "floral", annotator="ana")
    store.add_value("p1", "attribute", "v-neck", annotator="bo")
    store.remove_value("p1", "attribute", "floral", annotator="ana")
    ev = store.undo("ana")  # the remove: floral back
    assert ev.source == "undo" and store.get_values("p1", "attribute") == {"floral", "v-neck"}
    store.undo("ana")  # the add: floral gone, bo's v-neck stays
    assert store.get_values("p1", "attribute") == {"v-neck"}
    assert store.undo("ana") is None
    # a multi-value save is undone as a whole; someone else's change to ANOTHER value does not block it
    store.set_values("p2", "attribute", ["striped", "pocket"], annotator="ana")
    store.add_value("p2", "attribute", "sleeveless", annotator="bo")
    store.undo("ana")
    assert store.get_values("p2", "attribute") == {"sleeveless"}
    # a change to the SAME value does
    store.add_value("p3", "attribute", "pocket", annotator="ana")
    store.remove_value("p3", "attribute", "pocket", annotator="bo")
    with pytest.raises(UndoConflictError, match="bo removed 'pocket'"):
        store.undo("ana")
    assert store.get_values("p3", "attribute") == set()


def test_batch_change_is_one_transaction(store):
    store.change_values([("p1", ["floral"], []), ("p2", ["floral", "pocket"], [])], "attribute",
                        annotator="ana", source="batch")
    with pytest.raises(LabelValueError):
        store.change_values([("p1", [], ["floral"]), ("p2", ["bogus"], [])], "attribute", annotator="ana")
    assert store.get_values("p1", "attribute") == {"floral"}  # nothing of the refused batch written
    with pytest.raises(InvalidArgumentError, match="both added and removed"):
        store.change_values([("p1", ["pocket"], ["pocket"])], "attribute", annotator="ana")
    store.undo("ana")
    assert store.value_sets("attribute").empty


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_import_round_trip(store, tmp_path, suffix):
    store.set_values("p1", "attribute", ["floral", "v-neck"], annotator="ana")
    store.set_values("p2", "attribute", ["pocket"], annotator="bo")
    store.set("p1", "colour", "red", annotator="ana")
    out = store.export(tmp_path / f"labels{suffix}")
    copy = LabelStore(tmp_path / "copy.sqlite")
    copy.set_multi("attribute")
    copy.set_values("p1", "attribute", ["striped"], annotator="cy")  # replaced by the file's set
    copy.set_values("p9", "attribute", ["striped"], annotator="cy")  # not in the file: untouched
    report = copy.import_(out, annotator="cy")
    assert report.ok, str(report)
    assert copy.get_values("p1", "attribute") == {"floral", "v-neck"}
    assert copy.get_values("p2", "attribute") == {"pocket"}
    assert copy.get_values("p9", "attribute") == {"striped"}
    assert copy.get("p1", "colour") == "red"
    again = copy.import_(out, annotator="cy")
    assert not again.applied and again.unchanged == 3
    copy.undo("cy")  # the first import as a whole: p1's set before it is back
    assert copy.get_values("p1", "attribute") == {"striped"} and copy.get_values("p2", "attribute") == set()
    copy.undo("cy")  # then cy's own p9 save
    assert copy.get_values("p9", "attribute") == set()
    copy.close()


def test_v2_store_is_upgraded_and_read_only_reads_it(tmp_path):
    path = tmp_path / "v2.sqlite"
    with LabelStore(path) as s:
        s.set("p1", "colour", "red", annotator="ana")
    con = sqlite3.connect(path)
    con.execute("UPDATE label_meta SET value='2' WHERE key='schema_version'")
    con.commit()
    con.close()
    with LabelStore(path, read_only=True) as ro:
        assert ro.get("p1", "colour") == "red" and ro.multi_fields() == frozenset()
        assert ro.schema_version == "2"
    with LabelStore(path) as s:
        s.set_multi("attribute")
        s.add_value("p1", "attribute", "floral", annotator="ana")
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM label_meta WHERE key='schema_version'").fetchone() == ("3",)
    con.close()
    with LabelStore(path, read_only=True) as ro:
        assert ro.get_values("p1", "attribute") == {"floral"}

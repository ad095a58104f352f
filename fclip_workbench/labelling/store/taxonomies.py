"""Taxonomy storage: the allowed values of each field, stored for every process, and the value check.

A field with a stored taxonomy takes only its values (in their canonical spelling, looked up ignoring
case); `add_to_taxonomy=True` adds a new one. A field without one takes any canonical text. An empty
taxonomy is refused (it would leave the field free while looking constrained).

Example:
    >>> import tempfile, os
    >>> from fclip_workbench.labelling.labels import LabelStore
    >>> s = LabelStore(os.path.join(tempfile.mkdtemp(), "l.sqlite"))
    >>> s.set_taxonomy(" colour", Taxonomy("colour", ["Red", "Blue"])).values, s.taxonomy("colour ").values
    (['Red', 'Blue'], ['Red', 'Blue'])
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

import sqlalchemy as sa

from fclip_workbench.errors import InvalidArgumentError, LabelValueError, TaxonomyError
from fclip_workbench.labelling.taxonomy import Taxonomy, lookup_key
from fclip_workbench.labelling.store import canon
from fclip_workbench.labelling.store.parts import StoreParts
from fclip_workbench.labelling.store.records import SHOW_VALUES
from fclip_workbench.labelling.store.schema import now, taxonomies_t

log = logging.getLogger("fclip_workbench.labelling.labels")
_NO_TAXONOMY_TTL = 2.0  # seconds a "no taxonomy" answer is trusted (another process may set one)


def refusal(field: str, value: str, tx: Taxonomy) -> str:
    return (f"{value!r} is not a {field} in the taxonomy; valid values: {tx.describe(SHOW_VALUES)} "
            "(or add it with add_to_taxonomy=True)")


class TaxonomyStorage(StoreParts):
    """`LabelStore`'s taxonomy methods (needs `StoreConnection`'s `_read`, `_write`, `_lock_keys`)."""

    def set_taxonomy(self, field: str, taxonomy: Taxonomy, annotator: str | None = None) -> Taxonomy:
        """Attach `taxonomy` to `field` (stored, seen by every process): its values are merged with those
        already stored (nothing an annotator added is dropped); a `multi` taxonomy declares the field
        multi-valued (`set_multi`). Returns the stored taxonomy.

        >>> import tempfile, os
        >>> from fclip_workbench.labelling.labels import LabelStore
        >>> s = LabelStore(os.path.join(tempfile.mkdtemp(), "l.sqlite"))
        >>> s.set_taxonomy("colour", Taxonomy("colour", ["Red", "Blue"])).values
        ['Red', 'Blue']
        """
        field = canon.field(field)
        if not isinstance(taxonomy, Taxonomy):
            raise InvalidArgumentError(f"taxonomy must be a Taxonomy, not {type(taxonomy).__name__}; "
                                       "build one with Taxonomy.from_catalog / from_file / from_values")
        if not len(taxonomy):
            raise TaxonomyError(f"taxonomy for {field!r} has no values; give at least one value "
                                "(a field without a taxonomy takes any value: then set none)")
        who = canon.annotator(annotator) if annotator is not None else None

        def work(conn: sa.Connection) -> Taxonomy:
            self._lock_keys(conn, [f"taxonomy\x1f{field}"])
            self._add_values(conn, field, taxonomy.values, taxonomy.source, who)
            stored = self._load_taxonomy(conn, field)
            if stored is None:  # cannot happen: the values were just written in this transaction
                raise TaxonomyError(f"taxonomy for {field!r} was not stored; retry")
            return stored

        if taxonomy.multi:  # e.g. Fashionpedia attributes: a set of values per item (refused once single-labelled)
            self.set_multi(field)
        return self._write(work)

    def taxonomy(self, field: str, conn: sa.Connection | None = None, refresh: bool = False) -> Taxonomy | None:
        """The taxonomy stored for `field`, or None when values are free."""
        field = canon.field(field)
        cached = self._taxonomies.get(field)
        if not refresh and cached is not None and (cached[0] is not None
                                                   or time.monotonic() - cached[1] < _NO_TAXONOMY_TTL):
            return cached[0]
        if conn is None:
            with self._read() as c:
                return self._load_taxonomy(c, field)
        return self._load_taxonomy(conn, field)

    def _load_taxonomy(self, conn: sa.Connection, field: str) -> Taxonomy | None:
        rows = conn.execute(sa.select(taxonomies_t.c.value, taxonomies_t.c.source)
                            .where(taxonomies_t.c.field == field).order_by(taxonomies_t.c.position)).all()
        tx = None
        if rows:
            tx = Taxonomy(field, source=rows[0].source, multi=self.is_multi(field, conn))
            for r in rows:
                try:
                    tx.add(r.value)
                except TaxonomyError as e:  # written by an older version without the text rules
                    log.warning("stored %s value %r skipped: %s", field, r.value, e)
        self._taxonomies[field] = (tx, time.monotonic())
        return tx

    def _add_values(self, conn: sa.Connection, field: str, values: Sequence[str], source: str,
                    annotator: str | None) -> None:
        have = {r.key for r in conn.execute(sa.select(taxonomies_t.c.key).where(taxonomies_t.c.field == field))}
        start = conn.execute(sa.select(sa.func.coalesce(sa.func.max(taxonomies_t.c.position), -1))
                             .where(taxonomies_t.c.field == field)).scalar_one() + 1
        when = now()
        rows: list[dict[str, object]] = []
        for v in values:
            key = lookup_key(v)
            if key in have:
                continue
            have.add(key)
            rows.append({"field": field, "key": key, "value": v, "position": start + len(rows), "source": source,
                         "added_by": annotator, "time": when})
        if rows:
            conn.execute(taxonomies_t.insert(), rows)

    def _check_value(self, conn: sa.Connection | None, field: str, value: object, taxonomy: Taxonomy | None,
                     add: bool) -> tuple[str | None, bool]:
        """(canonical value, whether it must be added to the stored taxonomy); None removes the label."""
        if value is None:
            return None, False
        value = canon.value(field, value)
        tx = taxonomy if taxonomy is not None else self.taxonomy(field, conn=conn)
        if tx is None:
            return value, False
        found = tx.canonical(value)
        if found is None and taxonomy is None:
            fresh = self.taxonomy(field, conn=conn, refresh=True)  # another process may have added it
            if fresh is not None:
                tx, found = fresh, fresh.canonical(value)
        if found is not None:
            return found, False
        if not add:
            raise LabelValueError(refusal(field, value, tx))
        return value, True

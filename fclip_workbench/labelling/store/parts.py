"""`StoreParts`: what the parts of `LabelStore` use of each other, declared for type checkers.

`LabelStore` is composed of mixins (`Transfer`, `Reading`, `EventLog`, `TeamLabels`, `TaxonomyStorage`) and
`StoreConnection`; each mixin calls methods that another part defines (`_read`, `_write`, `_lock_keys`,
`taxonomy`, ...). The mixins derive from `StoreParts`, which declares those attributes and methods. The
method stubs exist only for type checkers (`TYPE_CHECKING`): at run time `StoreParts` is an empty class, so
it shadows nothing of the parts that define them, whatever their order in `LabelStore`'s bases.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence, TypeVar

import sqlalchemy as sa

if TYPE_CHECKING:
    import pandas as pd

    from fclip_workbench.labelling.store.records import LabelEvent
    from fclip_workbench.labelling.taxonomy import Taxonomy

T = TypeVar("T")


class StoreParts:
    """The attributes and methods the `LabelStore` mixins use, defined by the class that composes them."""

    # set by LabelStore.__init__ / StoreConnection.__init__
    name: str
    backend: str
    known_ids: frozenset[str] | None
    _taxonomies: dict[str, tuple[Taxonomy | None, float]]  # field -> (stored taxonomy, when read)
    _multi_cache: frozenset[str] | None  # multi-valued fields (`MultiValues.multi_fields`)

    if TYPE_CHECKING:
        # StoreConnection
        def _read(self) -> sa.Connection: ...

        def _write(self, work: Callable[[sa.Connection], T], opening: bool = False) -> T: ...

        def _lock_keys(self, conn: sa.Connection, keys: Iterable[str]) -> None: ...

        @staticmethod
        def _item_key(item_id: str, field: str) -> str: ...

        # TaxonomyStorage
        def taxonomy(self, field: str, conn: sa.Connection | None = None,
                     refresh: bool = False) -> Taxonomy | None: ...

        def _add_values(self, conn: sa.Connection, field: str, values: Sequence[str], source: str,
                        annotator: str | None) -> None: ...

        def _check_value(self, conn: sa.Connection | None, field: str, value: object, taxonomy: Taxonomy | None,
                         add: bool) -> tuple[str | None, bool]: ...

        # Reading
        def labels(self, field: str) -> pd.DataFrame: ...

        def fields(self) -> list[str]: ...

        def history(self, item_id: object | None = None, field: str | None = None) -> pd.DataFrame: ...

        # EventLog
        def _check_item(self, item_id: object, known: frozenset[str] | None = None) -> str: ...

        # MultiValues
        def set_multi(self, field: str, multi: bool = True) -> None: ...

        def multi_fields(self) -> frozenset[str]: ...

        def is_multi(self, field: str, conn: sa.Connection | None = None) -> bool: ...

        def value_sets(self, field: str) -> pd.DataFrame: ...

        def _apply_values(self, conn: sa.Connection, field: str, ops: Sequence[tuple[str, str, bool]],
                          annotator: str, source: str, batch_id: str | None,
                          undoes: Mapping[tuple[str, str], int] | None = None) -> list[LabelEvent]: ...

        def _undo_values(self, conn: sa.Connection, annotator: str, field: str, evs: Sequence[LabelEvent],
                         batch_id: str | None) -> list[LabelEvent]: ...

        # TeamLabels
        def _undo_answer(self, conn: sa.Connection, annotator: str, answer: LabelEvent) -> LabelEvent: ...

        def _current_rows(self, conn: sa.Connection, field: str, item_ids: Sequence[str]) -> dict[str, sa.Row]: ...

        def _apply(self, conn: sa.Connection, field: str, pairs: Sequence[tuple[str, str | None]], annotator: str,
                   source: str, batch_id: str | None,
                   undoes: Sequence[int | None] | None = None) -> list[LabelEvent]: ...

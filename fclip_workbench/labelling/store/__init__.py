"""The label store, one module per responsibility; `fclip_workbench.labelling.labels.LabelStore` puts them together.

- `records`: what the store hands back (LabelEvent, ImportReport, LabelStats, RowProblem) and ANY_EVENT;
- `schema`: the tables and the conversions of rows and times;
- `connection`: opening SQLite/PostgreSQL, transactions with retry, locks, one-line database errors;
- `canon`: the one canonical form of every id, field, value and name the store takes or reads by;
- `taxonomies`: the stored allowed values per field and the value check;
- `eventlog`: the append-only event log: writes, compare-and-set, undo;
- `reading`: current labels, history, statistics;
- `overlap`: team labelling: overlap products answered twice, adjudication, roles;
- `transfer`: export (formula-safe CSV, Parquet) and import of label files.
"""

"""Data quality: Great Expectations suites kept as data (`schemas/expectations/`), `validate`, publish gates.

- `suites`: load a table's suite, derived columns (referential, rank-gap ... checks), drift bounds.
- `validate`: `validate_frame` / `validate_table` and the `recsys-spark validate` job.
- `reports`: the JSON summary, the status board and the printed summary (`_reports/quality/`).
- `gate`: `enable_gates(lake, date)` validates each table before the lake publishes it.
"""

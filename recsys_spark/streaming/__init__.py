"""Streaming incremental updates: landed event files → `events` exactly once, plus fresh per-day state.

- `ingest_stream`: reading a micro-batch's files with batch ingest's checks; exactly-once appends.
- `incremental`: `stream_counters` and `stream_cooccurrence` of the days a batch touched.
- `job`: `recsys-spark stream` (`StreamConfig`, `run`), the heartbeat and the lock.
"""

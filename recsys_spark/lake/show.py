"""`recsys-spark tables`: what is in a lake, one line per table (version, rows, last change)."""

from __future__ import annotations

from dataclasses import dataclass

from recsys_spark.config import CommonConfig, option


@dataclass
class TablesConfig(CommonConfig):
    """Lists every Delta table in the lake with its latest version, row count and last operation."""

    history: bool = option(False, "Also print every version of every table.")


def run(cfg: TablesConfig, spark, lake) -> int:
    names = lake.tables()
    if not names:
        print(f"no tables in {lake.root}")
        return 0
    width = max(len(n) for n in names)
    print(f"{'table'.ljust(width)}  version  {'rows':>12}  last operation")
    for name in names:
        entries = lake.history(name)
        latest = entries[0]
        rows = lake.read(name).count()
        print(f"{name.ljust(width)}  {latest['version']:>7}  {rows:>12,}  {latest.get('operation', '')}")
        if cfg.history:
            for entry in entries:
                print(
                    f"{'':{width}}    v{entry['version']}: {entry.get('operation', '')} at {entry.get('timestamp')}"
                )
    return 0

"""Generated events landed as files for the stream, the way an upstream collector would land them.

`recsys-spark generate --land-days N` keeps the last N days out of `events` and writes them here as
JSON lines, one file per day and hour, named `generated-<day>T<hour>-<run>.jsonl`, so the streaming
ingest can be demonstrated and tested on synthetic data. The run token keeps a second generation's
files apart from the first's, which a stream's checkpoint has already seen by name. Spark writes into a folder whose name starts with
`_` (the stream ignores it), then each finished file is renamed into `_landing/events/`: the stream
never sees half a file.
"""

from __future__ import annotations

import logging
import uuid

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_spark.lake.commit import filesystem, remove_dir

log = logging.getLogger(__name__)

LANDED_COLUMNS = ["user_id", "item_id", "event", "ts", "session_id", "dwell_ms"]


def land_events(events: DataFrame, lake, name_prefix: str = "generated") -> list[str]:
    """Write `events` (the events contract) as JSON-lines files into `<lake>/_landing/events/`.

    Returns the landed files' paths. Timestamps keep their microseconds (ISO 8601, UTC).
    """
    token = uuid.uuid4().hex[:8]
    staging = lake.path("_landing", f"_{name_prefix}-{token}")
    hourly = events.select(
        *[c for c in LANDED_COLUMNS if c != "ts"],
        F.date_format("ts", "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'").alias("ts"),
        F.date_format("ts", "yyyy-MM-dd'T'HH").alias("_hour"),
    )
    try:
        # One file per hour: the partition folders name the hour, the single task per hour writes one file.
        hourly.repartition("_hour").sortWithinPartitions("ts").write.partitionBy("_hour").option(
            "ignoreNullFields", "true"
        ).json(staging)
        fs, staging_path = filesystem(staging)
        _, landing_path = filesystem(lake.path("_landing", "events"))
        fs.create_dir(landing_path, recursive=True)
        landed = []
        for info in sorted(fs.get_file_info(_selector(staging_path)), key=lambda i: i.path):
            if not info.base_name.startswith("part-") or "_hour=" not in info.path:
                continue
            hour = info.path.split("_hour=", 1)[1].split("/", 1)[0]
            target = f"{landing_path}/{name_prefix}-{hour}-{token}.jsonl"
            fs.move(info.path, target)
            landed.append(target)
    finally:
        remove_dir(staging)
    log.info("landed %d event files in %s", len(landed), lake.path("_landing", "events"))
    return landed


def _selector(path: str):
    import pyarrow.fs as pafs

    return pafs.FileSelector(path, recursive=True)

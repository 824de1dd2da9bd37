"""Model versions under `<lake>/_models/<model>/` and the atomic `LATEST.json` pointer.

```
_models/two_tower/
  full/full-2026-11-05/        checkpoint.pt, user_tower.pt (or scorer.pt), item_vectors.parquet,
                               vocab/<field>/, manifest.json
  incremental/inc-2026-11-06-001/   the one incremental slot: ID embeddings updated since that full
  LATEST.json                  {"full": {...}, "incremental": {...} | null, "serving": version}
```

A version is written to `_staging/` first and moved into place only when complete; `LATEST.json`
is replaced by writing a temporary file and renaming it, so a reader sees the old pointer or the
new one, and a killed run leaves the published versions and the pointer as they were. A full
version drops the incremental slot (the next incremental starts from the new full).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass

from recsys_spark.lake.commit import filesystem, write_atomically

FULL, INCREMENTAL = "full", "incremental"


@dataclass
class Registry:
    root: str  # URI of _models/<model>

    @classmethod
    def for_model(cls, lake, model: str) -> Registry:
        return cls(lake.path("_models", model))

    def _fs(self):
        return filesystem(self.root)

    def version_url(self, slot: str, version: str) -> str:
        return f"{self.root}/{slot}/{version}"

    def staging_url(self) -> str:
        return f"{self.root}/_staging/{uuid.uuid4().hex}"

    def latest(self) -> dict:
        fs, path = self._fs()
        try:
            with fs.open_input_stream(f"{path}/LATEST.json") as stream:
                return json.loads(stream.read())
        except FileNotFoundError:
            return {}

    def versions(self, slot: str) -> list[str]:
        from pyarrow import fs as pafs

        fs, path = self._fs()
        infos = fs.get_file_info(pafs.FileSelector(f"{path}/{slot}", allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    def full_before(self, day: dt.date) -> str | None:
        """The newest full version trained on a day before `day` (the warm start / the model to evaluate)."""
        older = [v for v in self.versions(FULL) if v.startswith("full-") and v[5:] < day.isoformat()]
        return older[-1] if older else None

    def publish(self, staging: str, slot: str, version: str, pointer: dict) -> str:
        """Move a complete `staging` folder to `slot/version` (replacing it), then switch LATEST.json."""
        fs, _ = self._fs()
        _, src = filesystem(staging)
        _, dst = filesystem(self.version_url(slot, version))
        fs.create_dir(dst.rsplit("/", 1)[0], recursive=True)
        _, trash = filesystem(self.staging_url())
        replaced = fs.get_file_info(dst).type.name != "NotFound"
        if replaced:  # re-running a day: the old copy stays valid until the new one is in place
            fs.move(dst, trash)
        fs.move(src, dst)
        self.write_latest(pointer)
        if replaced:
            fs.delete_dir(trash)
        return self.version_url(slot, version)

    def write_latest(self, pointer: dict) -> None:
        write_atomically(f"{self.root}/LATEST.json", json.dumps(pointer, indent=2, sort_keys=True).encode())

    def drop(self, slot: str, version: str) -> None:
        fs, path = self._fs()
        target = f"{path}/{slot}/{version}"
        if fs.get_file_info(target).type.name != "NotFound":
            fs.delete_dir(target)

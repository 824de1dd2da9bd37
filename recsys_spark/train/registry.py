"""Model versions under `<lake>/_models/<model>/`, switched by compare-and-swap on a versioned pointer.

```
_models/two_tower/
  full/full-2026-11-05/        checkpoint.pt, user_tower.pt (or scorer.pt), item_vectors.parquet,
                               vocab/<field>/, manifest.json
  incremental/inc-2026-11-06-001/   the incremental slot: ID embeddings updated since that full
  pointers/00000000000000000007.json  immutable pointer of generation 7 (created once, never rewritten)
  LATEST.json                  copy of the newest pointer: {"generation", "full", "incremental", "serving"}
```

A publish runs in this order, so a kill at any point leaves a pointer whose versions are complete:

1. the version folder, complete in `_staging/`, is moved into place (a re-run of a version name is
   swapped in with one `renameat2(RENAME_EXCHANGE)`, so the name never goes missing);
2. its `item_vectors` rows are committed as their own partition (other versions' rows stay);
3. the switch: `pointers/<g+1>.json` is created with an exclusive create (hard link of a complete
   temporary file: fails if another publisher took generation g+1 first), after re-reading the
   pointer and re-basing the change on it (`update(current)`; a change that cannot be re-based
   raises `RegistryConflict`);
4. `LATEST.json` is rewritten from the winning pointer (temporary file + rename); a run killed
   between 3 and 4 leaves LATEST.json one generation behind, which the next publish repairs and
   whose versions stay in place until then;
5. garbage collection: version folders and `item_vectors` partitions no pointer (newest or LATEST.json)
   references and outside the newest `keep_full` full versions are deleted.

Readers: LATEST.json (or `Registry.latest()`, which resolves the newest pointer file). The exclusive
create is atomic on POSIX file systems (and HDFS); on object stores it is a check-then-write, so there
one writer at a time (the Airflow `recsys_publish` pool) is still required.

`RECSYS_TEST_KILL_AT=<step>` SIGKILLs the process at the named step (placed, vectors, pointer, latest,
gc): the crash-safety tests use it; unset, it costs one dictionary lookup per step.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import errno
import json
import os
import posixpath
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from recsys_spark.lake.commit import delete_quietly, filesystem, write_atomically

FULL, INCREMENTAL = "full", "incremental"
KILL_ENV = "RECSYS_TEST_KILL_AT"
CAS_ATTEMPTS = 5
POINTERS_KEPT = 20  # older pointer files are history only; the newest one is the truth


class RegistryConflict(RuntimeError):
    """Another publisher changed the pointer in a way this publish cannot be re-based on."""


class VectorStore(Protocol):
    """The `item_vectors` rows of each version (the two-tower's; the ranker has none).

    Parameters
    ----------
    None
        A structural type (`typing.Protocol`), never instantiated: any object with these three
        methods is one (`train.job.LakeItemVectors`).
    """

    def commit(self, version: str, folder_url: str) -> None:
        """Commit the item vectors of the placed version `version` as its own rows.

        Parameters
        ----------
        version : str
            The model version, e.g. `full-2026-11-05`.
        folder_url : str
            The placed version folder holding `item_vectors.parquet`.

        Returns
        -------
        None
            Other versions' rows stay as they are.
        """

    def versions(self) -> set[str]:
        """The model versions that have rows.

        Returns
        -------
        set of str
            Their version names (empty when there are none).
        """

    def drop(self, versions: list[str]) -> None:
        """Remove the rows of `versions`.

        Parameters
        ----------
        versions : list of str
            Model versions to drop (empty: nothing to do).

        Returns
        -------
        None
            The other versions' rows stay.
        """


def kill_point(step: str) -> None:
    """Test hook: die here (SIGKILL, no cleanup) when RECSYS_TEST_KILL_AT names this step.

    Parameters
    ----------
    step : str
        The step reached: placed, vectors, pointer, latest or gc.

    Returns
    -------
    None
        Returns at once unless the environment names `step` (then the process is killed).
    """
    if os.environ.get(KILL_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def referenced(pointer: dict) -> set[str]:
    """Versions a pointer needs in place: the serving one, the full one and the incremental slot.

    Parameters
    ----------
    pointer : dict
        A pointer body (`full`, `incremental`, `serving`), possibly empty.

    Returns
    -------
    set of str
        The version names it references.
    """
    refs = {pointer.get("serving"), (pointer.get("full") or {}).get("version")}
    refs.add((pointer.get("incremental") or {}).get("version"))
    return {r for r in refs if r}


def full_update(entry: dict) -> Callable[[dict], dict | None]:
    """Pointer change of a full version: it serves unless a newer full is already in (a backfill then
    changes no pointer). Always re-based on the current pointer, so a full is never rolled back and
    never rolls a newer one back.

    Parameters
    ----------
    entry : dict
        The full version's pointer entry (`version`, `id`, ...).

    Returns
    -------
    callable
        `update(current_pointer)` for `Registry.publish`: the new pointer body, or None for a backfill.
    """

    def update(current: dict) -> dict | None:
        serving_full = (current.get("full") or {}).get("version", "")
        if entry["version"] < serving_full:
            return None  # backfill: published as a version, `serving` stays on the newer one
        return {"full": entry, "incremental": None, "serving": entry["version"]}

    return update


def incremental_update(entry: dict, started_from: dict) -> Callable[[dict], dict | None]:
    """Pointer change of an incremental trained from the pointer `started_from`: re-based only while
    its full and incremental slot are unchanged; otherwise its update would drop or roll back another.

    Parameters
    ----------
    entry : dict
        The incremental version's pointer entry (`version`, `base_id`, ...).
    started_from : dict
        The pointer the incremental was trained from.

    Returns
    -------
    callable
        `update(current_pointer)` for `Registry.publish`: the new pointer body; it raises
        `RegistryConflict` when the full or incremental slot of `current_pointer` differs from
        `started_from`.
    """

    def update(current: dict) -> dict | None:
        for slot in (FULL, INCREMENTAL):
            if current.get(slot) != started_from.get(slot):
                was = (started_from.get(slot) or {}).get("version")
                now = (current.get(slot) or {}).get("version")
                raise RegistryConflict(
                    f"{entry['version']} not published: the {slot} version changed from {was} to {now} "
                    f"(generation {current.get('generation')}) while it trained; run the update again"
                )
        return {**current, "incremental": entry, "serving": entry["version"]}

    return update


def _exchange(a: str, b: str) -> bool:
    """Swap two local paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, a.encode(), at_fdcwd, b.encode(), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), b)


@dataclass
class Registry:
    """The versions and the pointer of one model under `root` (layout and steps: module docstring).

    Parameters
    ----------
    root : str
        URI (or local path) of `_models/<model>`.
    """

    root: str  # URI of _models/<model>

    @classmethod
    def for_model(cls, lake, model: str) -> Registry:
        """The registry of `model` in `lake`.

        Parameters
        ----------
        lake : Lake
            The lake whose `_models` folder holds the model.
        model : str
            Model name, e.g. `two_tower` or `ranker`.

        Returns
        -------
        Registry
            Rooted at `<lake>/_models/<model>`.
        """
        return cls(lake.path("_models", model))

    def _fs(self):
        return filesystem(self.root)

    def _local(self) -> bool:
        return "://" not in self.root or self.root.startswith("file:")

    def version_url(self, slot: str, version: str) -> str:
        """Where a version's folder lives.

        Parameters
        ----------
        slot : {"full", "incremental"}
            The version's slot.
        version : str
            The version name.

        Returns
        -------
        str
            `<root>/<slot>/<version>`.
        """
        return f"{self.root}/{slot}/{version}"

    def staging_url(self) -> str:
        """A fresh folder under `_staging` to write a version into before `publish`.

        Returns
        -------
        str
            `<root>/_staging/<random>`, unique per call; not created here.
        """
        return f"{self.root}/_staging/{uuid.uuid4().hex}"

    # -- reading the pointer ---------------------------------------------------------------------
    def manifest(self, slot: str, version: str) -> dict:
        """A published version's `manifest.json` (the training summary; {} when absent).

        Parameters
        ----------
        slot : {"full", "incremental"}
            The version's slot.
        version : str
            The version name.

        Returns
        -------
        dict
            Rows, ranks, mean loss, the per-epoch curve `epochs` (versions trained since it exists) ...
        """
        _, path = self._fs()
        return self._read_json(f"{path}/{slot}/{version}/manifest.json")

    def _read_json(self, path: str) -> dict:
        fs, _ = self._fs()
        try:
            with fs.open_input_stream(path) as stream:
                return json.loads(stream.read())
        except FileNotFoundError:
            return {}

    def _latest_file(self) -> dict:
        _, path = self._fs()
        return self._read_json(f"{path}/LATEST.json")

    def _generations(self) -> list[int]:
        from pyarrow import fs as pafs

        fs, path = self._fs()
        infos = fs.get_file_info(pafs.FileSelector(f"{path}/pointers", allow_not_found=True))
        names = [i.base_name[:-5] for i in infos if i.base_name.endswith(".json")]
        return sorted(int(n) for n in names if n.isdigit())

    def latest(self) -> dict:
        """The newest pointer (`generation`, `full`, `incremental`, `serving`); {} before any publish.

        Resolved from `pointers/` (LATEST.json can lag one generation after a kill); a lake written
        before pointer files existed falls back to its LATEST.json as generation 0.

        Returns
        -------
        dict
            The pointer, or {} when nothing was ever published.
        """
        _, path = self._fs()
        generations = self._generations()
        if not generations:
            latest = self._latest_file()
            return {**latest, "generation": latest.get("generation", 0)} if latest else {}
        return self._read_json(f"{path}/pointers/{generations[-1]:020d}.json")

    def versions(self, slot: str) -> list[str]:
        """The version folders placed in a slot.

        Parameters
        ----------
        slot : {"full", "incremental"}
            The slot to list.

        Returns
        -------
        list of str
            Version names, sorted (oldest first for the dated names); empty when the slot is absent.
        """
        from pyarrow import fs as pafs

        fs, path = self._fs()
        infos = fs.get_file_info(pafs.FileSelector(f"{path}/{slot}", allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    def full_before(self, day: dt.date) -> str | None:
        """The newest full version trained on a day before `day` (the warm start / the model to evaluate).

        Parameters
        ----------
        day : date
            The day the caller trains or evaluates on.

        Returns
        -------
        str or None
            The version name (`full-<date>`), None when no full is older than `day`.
        """
        older = [v for v in self.versions(FULL) if v.startswith("full-") and v[5:] < day.isoformat()]
        return older[-1] if older else None

    # -- publishing ------------------------------------------------------------------------------
    def publish(
        self,
        staging: str,
        slot: str,
        version: str,
        update: Callable[[dict], dict | None],
        vectors: VectorStore | None = None,
        keep_full: int = 7,
    ) -> dict:
        """Publish the complete folder `staging` as `slot/version` (steps in the module docstring).

        `update(current_pointer)` returns the new pointer body, None to leave the pointer alone, or
        raises RegistryConflict; it is re-run on the re-read pointer when another publisher wins the
        generation first. Returns the pointer in force afterwards.

        Parameters
        ----------
        staging : str
            The complete version folder (e.g. from `staging_url`); it is moved, not copied.
        slot : {"full", "incremental"}
            The slot to publish into.
        version : str
            The version name (a full of that name is replaced; an incremental name must be new).
        update : callable
            `update(current_pointer)`, e.g. from `full_update` or `incremental_update`.
        vectors : VectorStore, optional
            Where the version's `item_vectors` rows are committed and dropped.
        keep_full : int, default 7
            Full versions kept by the garbage collection after the switch.

        Returns
        -------
        dict
            The pointer in force afterwards (unchanged when `update` returned None).

        Raises
        ------
        RegistryConflict
            If `update` cannot be re-based, an incremental's name is taken, or the pointer kept changing
            for `CAS_ATTEMPTS` tries; the version is then dropped unless a pointer references it.
        """
        self.repair_latest()
        self._place(staging, slot, version)
        kill_point("placed")
        if vectors is not None:
            vectors.commit(version, self.version_url(slot, version))
        kill_point("vectors")
        try:
            pointer = self._switch(update)
        except RegistryConflict:
            self._drop_if_unreferenced(slot, version, vectors)
            raise
        kill_point("pointer")
        self.repair_latest()
        kill_point("latest")
        self.collect_garbage(keep_full, vectors)
        return pointer

    def _place(self, staging: str, slot: str, version: str) -> None:
        fs, _ = self._fs()
        _, src = filesystem(staging)
        _, dst = filesystem(self.version_url(slot, version))
        fs.create_dir(posixpath.dirname(dst), recursive=True)
        if fs.get_file_info(dst).type.name == "NotFound":
            try:
                fs.move(src, dst)  # a rename: fails if a concurrent publisher placed the same name first
                return
            except OSError as exc:
                if slot == INCREMENTAL:
                    raise RegistryConflict(f"{version} is being published by another run") from exc
                raise
        if slot == INCREMENTAL:
            raise RegistryConflict(f"{version} already exists: another update took that name")
        # Re-running a full version: swap the new folder in so the name is never missing.
        if self._local() and _exchange(src, dst):
            delete_quietly(fs, src, directory=True)  # now holds the replaced copy
            return
        trash = filesystem(self.staging_url())[1]  # no atomic swap here: a short window without the name
        fs.move(dst, trash)
        fs.move(src, dst)
        delete_quietly(fs, trash, directory=True)

    def _switch(self, update: Callable[[dict], dict | None]) -> dict:
        """Compare-and-swap: create pointer g+1 from the pointer of generation g, or re-base and retry."""
        for _ in range(CAS_ATTEMPTS):
            current = self.latest()
            body = update(current)
            if body is None:
                return current
            generation = current.get("generation", 0) + 1
            pointer = {**body, "generation": generation}
            if self._create_pointer(generation, pointer):
                return pointer
        raise RegistryConflict(
            f"the pointer of {self.root} kept changing: {CAS_ATTEMPTS} publishes in a row won first"
        )

    def _create_pointer(self, generation: int, pointer: dict) -> bool:
        """Create `pointers/<generation>.json` only if absent; False when another publisher has it."""
        fs, path = self._fs()
        folder = f"{path}/pointers"
        fs.create_dir(folder, recursive=True)
        target = f"{folder}/{generation:020d}.json"
        data = json.dumps(pointer, indent=2, sort_keys=True).encode()
        if not self._local():
            # Object stores: check-then-write is not atomic (a conditional put would be); see docstring.
            if fs.get_file_info(target).type.name != "NotFound":
                return False
            write_atomically(f"{self.root}/pointers/{generation:020d}.json", data)
            return True
        tmp = f"{folder}/.{generation:020d}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, target)  # atomic and exclusive: the file appears complete or not at all
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def repair_latest(self) -> None:
        """Bring LATEST.json up to the newest pointer file (after a kill between the two).

        Returns
        -------
        None
            LATEST.json is rewritten only when it lags.
        """
        generations = self._generations()
        if generations and self._latest_file().get("generation") != generations[-1]:
            self.write_latest(self.latest())

    def write_latest(self, pointer: dict) -> None:
        """Replace LATEST.json with `pointer` (temporary file, then a move).

        Parameters
        ----------
        pointer : dict
            The pointer body to write.

        Returns
        -------
        None
            Readers see the old file or the new one.
        """
        write_atomically(f"{self.root}/LATEST.json", json.dumps(pointer, indent=2, sort_keys=True).encode())

    # -- garbage collection ----------------------------------------------------------------------
    def _in_use(self) -> set[str]:
        return referenced(self.latest()) | referenced(self._latest_file())

    def _drop_if_unreferenced(self, slot: str, version: str, vectors: VectorStore | None) -> None:
        if version in self._in_use():
            return
        if vectors is not None:
            vectors.drop([version])
        self.drop(slot, version)

    def collect_garbage(self, keep_full: int, vectors: VectorStore | None = None) -> None:
        """Delete versions no pointer needs: fulls outside the newest `keep_full`, superseded
        incrementals, and `item_vectors` partitions whose folder is gone.

        A concurrent publisher's version in flight (placed, not yet switched) is left alone: it is the
        newest full, or an incremental newer than the serving one on the current full (its manifest's
        `base_id` is the current full entry's `id`, unique per publish).

        Parameters
        ----------
        keep_full : int
            The newest full versions kept even when no pointer references them.
        vectors : VectorStore, optional
            Where orphaned `item_vectors` rows are dropped.

        Returns
        -------
        None
            Old pointer files beyond the newest `POINTERS_KEPT` are deleted too.
        """
        with_rows = vectors.versions() if vectors is not None else set()  # listed before the folders
        pointer = self.latest()
        in_use = self._in_use()
        fulls = self.versions(FULL)
        for v in fulls[: max(0, len(fulls) - keep_full)]:
            if v not in in_use:
                self.drop(FULL, v)
        current_full = (pointer.get("full") or {}).get("id")
        current_inc = (pointer.get("incremental") or {}).get("version", "")
        _, path = self._fs()
        for v in self.versions(INCREMENTAL):
            if v in in_use:
                continue
            base = self._read_json(f"{path}/{INCREMENTAL}/{v}/manifest.json").get("base_id")
            if v < current_inc or base is None or base != current_full:
                self.drop(INCREMENTAL, v)
        kill_point("gc")
        placed = set(self.versions(FULL)) | set(self.versions(INCREMENTAL))
        orphans = sorted(v for v in with_rows if v not in placed and v not in in_use)
        if orphans and vectors is not None:
            vectors.drop(orphans)
        generations = self._generations()
        for g in generations[: max(0, len(generations) - POINTERS_KEPT)]:
            delete_quietly(self._fs()[0], f"{path}/pointers/{g:020d}.json")

    def drop(self, slot: str, version: str) -> None:
        """Delete a version's folder (nothing to do if it is gone).

        Parameters
        ----------
        slot : {"full", "incremental"}
            The version's slot.
        version : str
            The version name.

        Returns
        -------
        None
            Its `item_vectors` rows are not touched (see `collect_garbage`).
        """
        fs, path = self._fs()
        delete_quietly(fs, f"{path}/{slot}/{version}", directory=True)  # another publisher may race us

"""One rank of a data-parallel training run: build or warm-start the model, train, and (rank 0) save.

Started by `launch` (Horovod by default) with a plain dict `spec` (see `recsys_spark/train/job.py`):
the parameters are broadcast from rank 0, the optimizer averages gradients across ranks on every
step (`hvd.DistributedOptimizer`, or the same under torch.distributed), and only rank 0 writes the
checkpoint, the TorchScript export and the item vectors.

Ranks read different shards that need not have the same number of batches; every step starts with a
one-integer allreduce of "I still have data", and a rank that has run out joins the remaining steps
with a zero loss (zero gradient), so the collectives stay matched and every row is trained on once.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np

INCREMENTAL = "incremental"


def _tensors(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    import torch

    out = {}
    for key, value in batch.items():
        if value.dtype == object:  # list columns come back as arrays of arrays
            value = np.stack(value)
        out[key] = torch.from_numpy(np.ascontiguousarray(value))
    return out


def build_model(spec: dict):
    """The starting model: the warm-start checkpoint grown to today's vocabularies, or a fresh one."""
    import torch

    from recsys_spark.lake.commit import read_bytes
    from recsys_spark.train.checkpoint import load_checkpoint
    from recsys_spark.train.features import FeatureSizes
    from recsys_spark.train.models import MODEL_CLASSES

    sizes = FeatureSizes.from_dict(spec["sizes"])
    torch.manual_seed(spec["seed"])
    if spec.get("base_checkpoint"):
        model = load_checkpoint(read_bytes(spec["base_checkpoint"]))
        model.grow(sizes, seed=spec["seed"])
    else:
        model = MODEL_CLASSES[spec["kind"]](sizes, **spec["hyper"])
    return model


def set_item_features(model, items_url: str) -> None:
    import torch

    from recsys_spark.train.data import read_table

    table = read_table(items_url).to_pydict()
    s = model.sizes
    category = torch.zeros(s.n_items, dtype=torch.int64)
    author = torch.zeros(s.n_items, dtype=torch.int64)
    dense = torch.zeros(s.n_items, s.item_dense_dim)
    idx = torch.tensor(table["item_idx"], dtype=torch.int64)
    category[idx] = torch.tensor(table["category_idx"], dtype=torch.int64)
    author[idx] = torch.tensor(table["author_idx"], dtype=torch.int64)
    if len(idx):
        dense[idx] = torch.tensor(np.asarray(table["item_dense"], dtype=np.float32))
    model.set_item_features(category, author, dense)


def log_q(freq_url: str, n_items: int):
    """log of each item's share of the training set's candidates (logQ correction of the two-tower)."""
    import torch

    from recsys_spark.train.data import read_table

    table = read_table(freq_url).to_pydict()
    counts = np.ones(n_items)  # unseen items: one pseudo-count, never in a batch anyway
    counts[np.asarray(table["item_idx"], dtype=np.int64)] = np.asarray(table["count"], dtype=np.float64)
    return torch.tensor(np.log(counts / counts.sum()), dtype=torch.float32)


def fingerprint(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def train_model(comm, spec: dict) -> dict:
    """Train on this rank's shard of `spec["store_url"]`; rank 0 writes to `spec["out_dir"]`."""
    import torch

    from recsys_spark.train.data import iterate_shard

    started = time.time()
    model = build_model(spec)
    set_item_features(model, spec["items_url"])
    if spec["mode"] == INCREMENTAL:  # ID embeddings only: dense layers stay exactly as published
        for p in model.dense_parameters():
            p.requires_grad_(False)
    comm.broadcast_model_(model)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = comm.distributed_optimizer(
        torch.optim.Adam([p for _, p in trainable], lr=spec["learning_rate"]), trainable
    )
    q = log_q(spec["freq_url"], model.sizes.n_items) if spec["kind"] == "two_tower" else None
    model.train()
    rows = steps = idle_steps = 0
    loss_sum = 0.0
    row_ids: list[int] = []
    epochs: list[dict] = []
    for epoch in range(spec["epochs"]):
        batches = iterate_shard(
            spec["store_url"],
            comm.rank,
            comm.size,
            spec["batch_size"],
            epoch,
            spec["seed"],
            group_by=spec.get("group_by"),
        )
        epoch_started, epoch_rows, epoch_loss = time.time(), rows, loss_sum
        while True:
            batch = next(batches, None)
            if not comm.allreduce_max(0 if batch is None else 1):
                break
            optimizer.zero_grad()
            if batch is None:
                loss = sum(p.sum() for _, p in trainable) * 0.0
                idle_steps += 1
            else:
                tensors = _tensors(batch)
                if q is not None:
                    drawn = spec.get("uniform_negatives") or 0
                    uniform = torch.randint(1, model.sizes.n_items, (drawn,)) if drawn else None
                    loss = model.loss(tensors, q, bool(spec.get("own_negatives")), uniform)
                else:
                    loss = model.loss(tensors)
                rows += len(batch["row_id"])
                loss_sum += float(loss.detach()) * len(batch["row_id"])
                if spec.get("record_rows"):
                    row_ids.extend(int(r) for r in batch["row_id"])
            loss.backward()
            optimizer.step()
            steps += 1
        done = rows - epoch_rows
        seconds = time.time() - epoch_started
        epochs.append(
            {
                "epoch": epoch + 1,
                "rows": done,
                "mean_loss": (loss_sum - epoch_loss) / max(done, 1),
                "rows_per_second": done / seconds if seconds else 0.0,
            }
        )
        if comm.rank == 0:  # the launcher forwards rank output to the job's log
            e = epochs[-1]
            print(
                f"train {spec['kind']} rank 0 epoch {e['epoch']}/{spec['epochs']}: {done} rows, "
                f"mean loss {e['mean_loss']:.4f}, {e['rows_per_second']:.0f} rows/s",
                flush=True,
            )
    seconds = time.time() - started
    # Identical parameters on every rank: the largest distance of any rank's weights from their mean.
    flat = torch.cat(
        [t.detach().double().reshape(-1) for t in model.state_dict().values() if t.is_floating_point()]
    )
    mean = flat.clone()
    comm.allreduce_mean_(mean)
    divergence = comm.allreduce_sum(float((flat - mean).abs().max()))
    if comm.rank == 0:
        _save(model, spec)
    return {
        "rank": comm.rank,
        "size": comm.size,
        "backend": comm.backend,
        "rows": rows,
        "steps": steps,
        "idle_steps": idle_steps,
        "mean_loss": loss_sum / max(rows, 1),
        "epochs": epochs,
        "seconds": seconds,
        "rows_per_second": rows / seconds if seconds else 0.0,
        "fingerprint": fingerprint(model),
        "param_divergence": divergence,
        "row_ids": row_ids if spec.get("record_rows") else None,
        "dense_fingerprint": _dense_fingerprint(model),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _dense_fingerprint(model) -> str:
    digest = hashlib.sha256()
    for p in model.dense_parameters():
        digest.update(p.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def _save(model, spec: dict) -> None:
    """Checkpoint, TorchScript export and item vectors into `out_dir`, through the lake's filesystem
    (rank 0 may run on an executor: only shared storage is visible to the driver afterwards)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from recsys_spark.lake.commit import filesystem
    from recsys_spark.train.checkpoint import save_checkpoint

    fs, out = filesystem(spec["out_dir"])
    fs.create_dir(out, recursive=True)

    def put(name: str, write) -> None:
        buffer = io.BytesIO()
        write(buffer)
        with fs.open_output_stream(f"{out}/{name}") as stream:
            stream.write(buffer.getvalue())

    put("checkpoint.pt", lambda f: save_checkpoint(model, f))
    model.eval()
    if spec["kind"] == "two_tower":
        put("user_tower.pt", model.export_user_tower)
        with torch.no_grad():
            vectors = model.all_item_vectors().numpy().astype(np.float32)
        idx = np.arange(1, len(vectors), dtype=np.int64)  # row 0 is "unknown item", not an item
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors[1:].ravel()), vectors.shape[1])
        table = pa.table({"item_idx": idx, "vector": column.cast(pa.list_(pa.float32()))})
        pq.write_table(table, f"{out}/item_vectors.parquet", filesystem=fs)
    else:
        put("scorer.pt", model.export_scorer)

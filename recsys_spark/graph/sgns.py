"""Skip-gram with negative sampling (word2vec's SGNS) in PyTorch, one rank of a data-parallel run.

Each rank reads its shard of the integer-encoded walks through Petastorm (row groups split by rank, so
every walk is read exactly once per epoch across ranks), builds (center, context) pairs as word2vec
does — frequent-item subsampling, a dynamic window drawn per center, negatives drawn from
count^0.75 — and applies word2vec's own sparse SGD update with a learning rate decaying linearly to
`learning_rate * 1e-4`. Ranks average their tables with an allreduce every `sync_every` batches and
at the end (periodic model averaging, as MLlib's Word2Vec does across partitions), so the run costs
O(batch) work per step instead of a dense O(vocabulary) gradient exchange.

References
----------
T. Mikolov, I. Sutskever, K. Chen, G. Corrado, J. Dean. "Distributed Representations of Words and
Phrases and their Compositionality." NIPS 2013 (skip-gram, negative sampling, subsampling).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from recsys_spark.config import option


@dataclass
class SgnsParams:
    """Hyper-parameters of `train_sgns`, word2vec's names and meanings.

    Parameters
    ----------
    dim : int
        Vector size.
    window : int
        Largest context distance; each center draws its window from U{1..window}.
    negative : int
        Negatives per (center, context) pair, drawn from count^0.75.
    epochs : int
        Passes over the walks.
    subsample : float
        Subsampling threshold t (0 keeps every occurrence).
    learning_rate : float
        Starting SGD rate, decaying linearly to `learning_rate * 1e-4`.
    batch_size : int
        Pairs per update.
    sync_every : int
        Batches between the ranks' table averaging.
    seed : int
        Seed of the initial vectors and of the sampling.
    """

    dim: int = option(64, "Vector dimension.", minimum=1)
    window: int = option(5, "Largest context window; word2vec draws 1..window per center.", minimum=1)
    negative: int = option(
        5, "Negative samples per positive pair, drawn proportionally to count^0.75.", minimum=1
    )
    epochs: int = option(5, "Passes over the walks.", minimum=1)
    subsample: float = option(1e-3, "Frequent-item subsampling threshold t (0 = off).", minimum=0)
    learning_rate: float = option(
        0.025, "Initial learning rate, decaying linearly to 1e-4 of it.", exclusive_minimum=0
    )
    batch_size: int = option(1024, "Pairs per SGD batch and rank.", minimum=1)
    sync_every: int = option(50, "Batches between the ranks' model averaging (allreduce).", minimum=1)
    seed: int = option(42, "Random seed.")


def keep_probabilities(counts: np.ndarray, subsample: float) -> np.ndarray:
    """word2vec's subsampling: keep an occurrence of w with probability (sqrt(f/t) + 1) * t / f.

    Parameters
    ----------
    counts : numpy.ndarray
        `(vocab,)` occurrence counts.
    subsample : float
        Threshold t; <= 0 keeps everything.

    Returns
    -------
    numpy.ndarray
        `(vocab,)` probabilities in (0, 1], f = count / total.
    """
    if subsample <= 0:
        return np.ones(len(counts))
    freq = counts / counts.sum()
    return np.minimum(1.0, (np.sqrt(freq / subsample) + 1.0) * subsample / freq)


def skipgram_pairs(walks: list[np.ndarray], keep: np.ndarray, window: int, rng: np.random.Generator):
    """(center, context) pairs of all walks: subsample, then a window b ~ U{1..window} per center.

    Parameters
    ----------
    walks : list of numpy.ndarray
        Walks as int64 token indices.
    keep : numpy.ndarray
        `(vocab,)` keep probabilities from `keep_probabilities`.
    window : int
        Largest context distance.
    rng : numpy.random.Generator
        Source of the subsampling and window draws.

    Returns
    -------
    tuple of numpy.ndarray
        `(centers, contexts)`, both `(n_pairs,)` int64.
    """
    kept = [w[rng.random(len(w)) < keep[w]] for w in walks]
    kept = [w for w in kept if len(w) > 1]
    if not kept:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    tokens = np.concatenate(kept)
    walk_of = np.repeat(np.arange(len(kept)), [len(w) for w in kept])
    reach = rng.integers(1, window + 1, size=len(tokens))
    centers, contexts = [], []
    for d in range(1, window + 1):
        same = walk_of[d:] == walk_of[:-d]
        fwd = same & (reach[:-d] >= d)  # center i, context i + d
        bwd = same & (reach[d:] >= d)  # center i + d, context i
        centers += [tokens[:-d][fwd], tokens[d:][bwd]]
        contexts += [tokens[d:][fwd], tokens[:-d][bwd]]
    return np.concatenate(centers), np.concatenate(contexts)


def _read_shard(walks_url: str, rank: int, size: int, seed: int) -> list[np.ndarray]:
    import warnings

    from petastorm import make_batch_reader

    walks: list[np.ndarray] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with make_batch_reader(
            walks_url,
            cur_shard=rank,
            shard_count=size,
            num_epochs=1,
            shuffle_row_groups=True,
            seed=seed,
            workers_count=1,
        ) as reader:
            for batch in reader:
                walks.extend(
                    t[t >= 0] for t in np.asarray(batch.tokens, dtype=np.int64)
                )  # drop the -1 padding
    return walks


def train_sgns(comm, walks_url: str, vocab_url: str, out_url: str, params: dict) -> dict:
    """One rank's training; rank 0 writes `(item_id, vector)` Parquet to `out_url`. Returns metrics.

    Parameters
    ----------
    comm : Comm
        Rank, size and collectives (see `train.launch`).
    walks_url : str
        Petastorm store of integer-encoded walks.
    vocab_url : str
        Parquet `(item_id, idx, count)` vocabulary.
    out_url : str
        Where rank 0 writes the vectors.
    params : dict
        `SgnsParams` fields.

    Returns
    -------
    dict
        This rank's metrics: rank, size, backend, walks, raw_tokens, pairs, ...
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from recsys_spark.lake.commit import filesystem

    p = SgnsParams(**params)
    fs, vocab_path = filesystem(vocab_url)
    vocab = pq.read_table(vocab_path, filesystem=fs).sort_by("idx")
    counts = vocab.column("count").to_numpy().astype(np.float64)
    size = len(counts)
    noise = np.cumsum(counts**0.75)
    noise /= noise[-1]
    keep = keep_probabilities(counts, p.subsample)

    gen = torch.Generator().manual_seed(p.seed)
    w_in = (torch.rand(size, p.dim, generator=gen) - 0.5) / p.dim
    w_out = torch.zeros(size, p.dim)
    comm.broadcast_(w_in)
    comm.broadcast_(w_out)

    shard = _read_shard(walks_url, comm.rank, comm.size, p.seed)
    raw_tokens = sum(len(w) for w in shard)
    started, step, pairs_done, loss_sum = time.time(), 0, 0, 0.0

    def epoch_pairs(epoch: int) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([p.seed, comm.rank, epoch])
        return (rng, *skipgram_pairs(shard, keep, p.window, rng))

    # Every rank takes the same number of steps per epoch (the collectives must pair up): the most
    # any rank has in its first epoch. Later epochs draw about as many pairs (same walks, same keep
    # probabilities); a rank short of pairs cycles them, one with more leaves the rest to other epochs.
    first = epoch_pairs(0)
    steps_per_epoch = comm.allreduce_max(max(1, int(np.ceil(len(first[1]) / p.batch_size))))
    total_steps = p.epochs * steps_per_epoch
    for epoch in range(p.epochs):
        rng, centers, contexts = first if epoch == 0 else epoch_pairs(epoch)
        first = None  # holds no pairs past their epoch
        order = rng.permutation(len(centers))
        for b in range(steps_per_epoch):
            if len(order) == 0:
                idx = np.empty(0, dtype=np.int64)
            else:  # ranks with fewer pairs cycle theirs, so every rank takes the same number of steps
                idx = order[np.arange(b * p.batch_size, (b + 1) * p.batch_size) % len(order)]
            lr = p.learning_rate * max(1e-4, 1.0 - step / total_steps)
            if len(idx):
                loss_sum += _sgns_update(w_in, w_out, centers[idx], contexts[idx], noise, p.negative, lr, rng)
                pairs_done += len(idx)
            step += 1
            if comm.size > 1 and step % p.sync_every == 0:
                comm.allreduce_mean_(w_in)
                comm.allreduce_mean_(w_out)
    if comm.size > 1:
        comm.allreduce_mean_(w_in)
        comm.allreduce_mean_(w_out)
    seconds = time.time() - started
    if comm.rank == 0:
        out_fs, out_path = filesystem(out_url)
        out_fs.create_dir(out_path, recursive=True)
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(w_in.numpy().ravel(), pa.float32()), p.dim)
        table = pa.table({"item_id": vocab.column("item_id"), "vector": vectors.cast(pa.list_(pa.float32()))})
        pq.write_table(table, f"{out_path}/part-0.parquet", filesystem=out_fs)
    return {
        "rank": comm.rank,
        "size": comm.size,
        "backend": comm.backend,
        "walks": len(shard),
        "raw_tokens": raw_tokens,
        "pairs": pairs_done,
        "seconds": seconds,
        "mean_loss": loss_sum / max(pairs_done, 1),
        "params": asdict(p),
    }


def _sgns_update(w_in, w_out, centers, contexts, noise, negative, lr, rng) -> float:
    """word2vec's update for a batch; returns the summed loss before the update."""
    import torch

    c = torch.from_numpy(centers)
    negs = np.searchsorted(noise, rng.random((len(contexts), negative)))
    targets = torch.from_numpy(np.concatenate([contexts[:, None], negs], axis=1))
    u = w_in[c]  # (B, d)
    v = w_out[targets]  # (B, 1 + K, d)
    scores = torch.bmm(v, u.unsqueeze(2)).squeeze(2)
    labels = torch.zeros_like(scores)
    labels[:, 0] = 1.0
    g = (labels - torch.sigmoid(scores)) * lr
    loss = -(
        torch.nn.functional.logsigmoid(scores[:, 0]).sum()
        + torch.nn.functional.logsigmoid(-scores[:, 1:]).sum()
    )
    grad_u = (g.unsqueeze(2) * v).sum(1)
    grad_v = g.unsqueeze(2) * u.unsqueeze(1)
    w_out.index_add_(0, targets.reshape(-1), grad_v.reshape(-1, w_out.shape[1]))
    w_in.index_add_(0, c, grad_u)
    return float(loss)

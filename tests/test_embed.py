"""Skip-gram embeddings: the pieces against references, and quality on planted clusters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys_spark.graph.embed import EmbedConfig, build_vocab, encode_walks, sgns_embeddings
from recsys_spark.graph.sgns import _sgns_update, keep_probabilities, skipgram_pairs
from recsys_spark.graph.walks import WalkParams, random_walks


def test_skipgram_pairs_match_a_reference_window():
    walks = [np.array([0, 1, 2, 3]), np.array([4, 5]), np.array([6])]
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    centers, contexts = skipgram_pairs(walks, np.ones(7), 2, rng_a)
    # Reference: same draws, plain loops.
    kept = [w[rng_b.random(len(w)) < 1.0] for w in walks]
    kept = [w for w in kept if len(w) > 1]
    reach = rng_b.integers(1, 3, size=sum(len(w) for w in kept))
    expected, k = [], 0
    for w in kept:
        for i in range(len(w)):
            for j in range(len(w)):
                if i != j and abs(i - j) <= reach[k + i]:
                    expected.append((int(w[i]), int(w[j])))
        k += len(w)
    assert sorted(zip(centers.tolist(), contexts.tolist())) == sorted(expected)


def test_keep_probability_is_word2vecs_formula():
    counts = np.array([1000.0, 10.0, 1.0])
    f = counts / counts.sum()
    t = 1e-3
    np.testing.assert_allclose(keep_probabilities(counts, t), np.minimum(1, (np.sqrt(f / t) + 1) * t / f))
    assert keep_probabilities(counts, 0).tolist() == [1, 1, 1]


def test_sgns_update_is_gradient_descent_on_the_sgns_loss():
    gen = torch.Generator().manual_seed(0)
    w_in, w_out = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)
    centers, contexts = np.array([0, 1, 0]), np.array([2, 3, 4])
    noise = np.cumsum(np.ones(6)) / 6
    lr = 0.1
    # Reference with autograd, on the same negatives (the same generator state).
    negs = np.searchsorted(noise, np.random.default_rng(5).random((3, 2)))
    a, b = w_in.clone().requires_grad_(), w_out.clone().requires_grad_()
    loss = 0
    for c, o, ns in zip(centers, contexts, negs):
        loss = (
            loss
            - torch.nn.functional.logsigmoid(a[c] @ b[o])
            - sum(torch.nn.functional.logsigmoid(-(a[c] @ b[n])) for n in ns)
        )
    loss.backward()
    returned = _sgns_update(w_in, w_out, centers, contexts, noise, 2, lr, np.random.default_rng(5))
    assert returned == pytest.approx(float(loss.detach()), rel=1e-5)
    torch.testing.assert_close(w_in, (a - lr * a.grad).detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w_out, (b - lr * b.grad).detach(), rtol=1e-5, atol=1e-6)


def planted_graph(spark, clusters=6, per_cluster=15, seed=0):
    """Dense edges inside clusters, a few across: neighbours in the embedding should share a cluster."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(clusters):
        members = [f"c{c}_{i}" for i in range(per_cluster)]
        for a in members:
            for b in rng.choice(members, 5, replace=False):
                if a != b:
                    rows.append((a, str(b), float(rng.integers(1, 4))))
            if rng.random() < 0.1:
                rows.append((a, f"c{(c + 1) % clusters}_{rng.integers(per_cluster)}", 1.0))
            if rng.random() < 0.1:  # dead ends: walks of different lengths
                rows.append((a, f"c{c}_end{rng.integers(2)}", 1.0))
    rows = list({(a, b): (a, b, w) for a, b, w in rows}.values())
    return spark.createDataFrame(rows, "src_item string, dst_item string, weight double")


def precision_at_10(vectors: dict[str, np.ndarray]) -> float:
    names = sorted(vectors)
    m = np.stack([vectors[n] for n in names])
    m = m / np.linalg.norm(m, axis=1, keepdims=True)
    sims = m @ m.T
    np.fill_diagonal(sims, -np.inf)
    cluster = np.array([n.split("_")[0] for n in names])
    top = np.argsort(-sims, axis=1)[:, :10]
    return float((cluster[top] == cluster[:, None]).mean())


def _train(spark, tmp_path, launcher, np_, epochs=3):
    walks = random_walks(
        planted_graph(spark),
        WalkParams("deepwalk", num_walks=10, walk_length=20, seed=1),
        f"file://{tmp_path}/w",
    )
    assert walks.selectExpr("size(items)").distinct().count() > 1  # ragged walks reach the ranks
    cfg = EmbedConfig(dim=16, epochs=epochs, launcher=launcher, np=np_, batch_size=256, seed=3)
    vectors, results = sgns_embeddings(spark, walks, cfg, f"file://{tmp_path}/scratch")
    got = {r.item_id: np.array(r.vector) for r in vectors.collect()}
    return walks.count(), got, results


def test_vocab_and_encoding(spark):
    walks = spark.createDataFrame(
        [(0, ["b", "a", "b"]), (1, ["c", "b"])], "walk_id long, items array<string>"
    )
    vocab = {r.item_id: (r.idx, r["count"]) for r in build_vocab(walks).collect()}
    assert vocab == {"b": (0, 3), "a": (1, 1), "c": (2, 1)}
    encoded = {r.walk_id: r.tokens for r in encode_walks(walks, build_vocab(walks)).collect()}
    assert encoded == {0: [0, 1, 0], 1: [2, 0]}
    assert {r.item_id for r in build_vocab(walks, min_count=2).collect()} == {"b"}


def test_local_sgns_recovers_planted_clusters(spark, tmp_path):
    _, vectors, results = _train(spark, tmp_path, "local", 1, epochs=5)
    assert len(vectors) >= 90 and all(v.shape == (16,) and np.isfinite(v).all() for v in vectors.values())
    assert precision_at_10(vectors) > 0.8  # random: 14/89 ≈ 0.16
    assert results[0]["pairs"] > 0


@pytest.mark.slow
def test_horovod_two_ranks_read_every_walk_once_and_learn(spark, tmp_path):
    total, vectors, results = _train(spark, tmp_path, "horovod", 2)
    assert sorted(r["rank"] for r in results) == [0, 1]
    assert all(r["backend"] == "horovod" and r["size"] == 2 for r in results)
    assert sum(r["walks"] for r in results) == total
    assert all(r["walks"] > 0 for r in results)
    assert precision_at_10(vectors) > 0.7


@pytest.mark.slow
def test_torch_distributor_launcher_runs_the_same_training(spark, tmp_path):
    _, vectors, results = _train(spark, tmp_path, "torch", 2)
    assert results[0]["backend"] == "torch" and results[0]["size"] == 2
    assert precision_at_10(vectors) > 0.7


def test_quality_measures_and_plot():
    from recsys_spark.graph.quality import precision_at_k, projection_svg, random_precision

    clusters = np.repeat(np.arange(4), 12)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8)) * 5
    good = centres[clusters] + rng.normal(size=(48, 8)) * 0.1
    assert precision_at_k(good, clusters, 10) == 1.0
    noise = rng.normal(size=(48, 8))
    assert precision_at_k(noise, clusters, 10) < 0.5
    assert random_precision(clusters) == pytest.approx(11 / 47)
    svg = projection_svg(good, clusters, "t")
    assert svg.startswith("<svg") and svg.count("<circle") == 48

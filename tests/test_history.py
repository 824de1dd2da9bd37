"""The two-tower's history readers (train/history.py) against NumPy references from their formulas,
and a two-tower with each reader exported as TorchScript giving the eager user vectors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from recsys_spark.catalog import HISTORY_ENCODERS
from recsys_spark.train.features import FeatureSizes, random_batch
from recsys_spark.train.history import history_encoder
from recsys_spark.train.two_tower import TwoTower

D, N = 6, 5


def _history(seed: int):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(4, N, D, generator=g)
    lengths = torch.tensor([5, 3, 1, 0])  # most recent first, padding at the end, one empty history
    mask = torch.arange(N)[None, :] < lengths[:, None]
    return emb, mask, lengths


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def gru_reference(module, emb, lengths) -> np.ndarray:
    """h_t = (1 − z) ⊙ n + z ⊙ h_{t−1} over the real clicks, oldest first (PyTorch's gate order r, z, n);
    a history of zero clicks gives zeros."""
    w_ih, w_hh = (
        module.gru.weight_ih_l0.detach().double().numpy(),
        module.gru.weight_hh_l0.detach().double().numpy(),
    )
    b_ih, b_hh = (
        module.gru.bias_ih_l0.detach().double().numpy(),
        module.gru.bias_hh_l0.detach().double().numpy(),
    )
    out = []
    for row, length in zip(emb.double().numpy(), lengths.tolist()):
        h = np.zeros(D)
        # The padding steps come first as zero inputs (they move h through the biases), then the clicks.
        steps = [np.zeros(D)] * (N - length) + [row[i] for i in reversed(range(length))]
        for x in steps:
            gi, gh = w_ih @ x + b_ih, w_hh @ h + b_hh
            r = _sigmoid(gi[:D] + gh[:D])
            z = _sigmoid(gi[D : 2 * D] + gh[D : 2 * D])
            n = np.tanh(gi[2 * D :] + r * gh[2 * D :])
            h = (1 - z) * n + z * h
        out.append(h if length else np.zeros(D))
    return np.array(out)


def attention_reference(module, emb, lengths) -> np.ndarray:
    """a = softmax over the real clicks of q · tanh(W (e_n + p_n) + b) / √d; Σ a_n e_n; zeros if none."""
    w, b = module.key.weight.detach().double().numpy(), module.key.bias.detach().double().numpy()
    q, pos = module.query.detach().double().numpy(), module.position.weight.detach().double().numpy()
    out = []
    for row, length in zip(emb.double().numpy(), lengths.tolist()):
        if not length:
            out.append(np.zeros(D))
            continue
        scores = np.array([q @ np.tanh(w @ (row[i] + pos[i]) + b) / np.sqrt(D) for i in range(length)])
        a = np.exp(scores - scores.max())
        a /= a.sum()
        out.append(sum(a[i] * row[i] for i in range(length)))
    return np.array(out)


def test_mean_reader_is_the_mean_of_the_real_clicks():
    emb, mask, lengths = _history(0)
    got = history_encoder("mean", D, N, 0.1)(emb, mask).numpy()
    want = [emb[i, : lengths[i]].mean(0).numpy() if lengths[i] else np.zeros(D) for i in range(4)]
    np.testing.assert_allclose(got, np.array(want), atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_gru_reader_matches_the_recurrence(seed):
    torch.manual_seed(seed)
    module = history_encoder("gru", D, N, 0.1)
    emb, mask, lengths = _history(seed)
    with torch.no_grad():
        got = module(emb, mask).double().numpy()
    np.testing.assert_allclose(got, gru_reference(module, emb, lengths), atol=1e-5)
    # Order matters: the same clicks reversed give another state.
    flipped = emb.clone()
    flipped[0] = emb[0].flip(0)
    with torch.no_grad():
        assert not torch.allclose(module(flipped, mask)[0], module(emb, mask)[0], atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
def test_attention_reader_matches_its_formula(seed):
    torch.manual_seed(seed)
    module = history_encoder("attention", D, N, 0.5)
    emb, mask, lengths = _history(seed)
    with torch.no_grad():
        got = module(emb, mask).double().numpy()
    np.testing.assert_allclose(got, attention_reference(module, emb, lengths), atol=1e-5)


def test_unknown_reader_is_an_error():
    with pytest.raises(ValueError, match="unknown history encoder"):
        history_encoder("lstm", D, N, 0.1)


@pytest.mark.parametrize("kind", HISTORY_ENCODERS)
def test_two_tower_with_each_reader_exports_and_warm_starts(kind):
    sizes = FeatureSizes(
        n_users=9, n_items=12, n_categories=3, n_authors=4, n_genders=3, n_ages=4, n_regions=3,
        user_dense_dim=2, item_dense_dim=2, hist_len=N, pair_dense_dim=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = TwoTower(sizes, id_dim=D, side_dim=2, hidden=(8,), out_dim=4, history_encoder=kind).eval()
    batch = random_batch(sizes, 7, torch.Generator().manual_seed(1), recall=True)
    buffer = io.BytesIO()
    model.export_user_tower(buffer)
    buffer.seek(0)
    scripted = torch.jit.load(buffer)
    keys = ("user_idx", "gender_idx", "age_idx", "region_idx", "user_dense", "hist")
    with torch.no_grad():
        eager = model.user_vectors(batch)
        torch.testing.assert_close(scripted(*(batch[k] for k in keys)), eager)
    # The reader's weights are dense parameters (frozen by the incremental update), kept by `grow`.
    history = {id(p) for p in model.history.parameters()}
    assert history <= {id(p) for p in model.dense_parameters()}
    assert (len(history) > 0) == (kind != "mean")
    model.grow(FeatureSizes(**{**sizes.to_dict(), "n_items": 15, "n_users": 11}))
    with torch.no_grad():
        torch.testing.assert_close(model.user_vectors(batch), eager)

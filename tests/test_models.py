"""The PyTorch models against hand-written references, invariances and small learnable problems (no Spark)."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch

from recsys_spark.train.checkpoint import load_checkpoint, save_checkpoint
from recsys_spark.train.features import USER_KEYS, FeatureSizes, random_batch
from recsys_spark.train.ranker import CrossNetwork, Ranker
from recsys_spark.train.two_tower import TwoTower

SIZES = FeatureSizes(
    n_users=40,
    n_items=12,
    n_categories=5,
    n_authors=6,
    n_genders=3,
    n_ages=4,
    n_regions=5,
    user_dense_dim=3,
    item_dense_dim=2,
    hist_len=6,
)
TASKS = ("click", "like")
SMALL_TT = dict(id_dim=8, side_dim=4, hidden=(16,), out_dim=8)
SMALL_RANKER = dict(
    emb_dim=6, attn_hidden=(8,), deep=(16,), experts=3, expert_hidden=(8,), expert_dim=8, tower_hidden=(8,)
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def with_items(model, sizes: FeatureSizes = SIZES, seed: int = 1):
    g = gen(seed)
    model.set_item_features(
        torch.randint(1, sizes.n_categories, (sizes.n_items,), generator=g),
        torch.randint(0, sizes.n_authors, (sizes.n_items,), generator=g),
        torch.randn(sizes.n_items, sizes.item_dense_dim, generator=g),
    )
    return model


def two_tower(sizes: FeatureSizes = SIZES, **hyper) -> TwoTower:
    torch.manual_seed(0)
    return with_items(TwoTower(sizes, **{**SMALL_TT, **hyper}), sizes)


def ranker(sizes: FeatureSizes = SIZES, **hyper) -> Ranker:
    torch.manual_seed(0)
    return with_items(Ranker(sizes, **{**SMALL_RANKER, **hyper}), sizes)


def batch(sizes: FeatureSizes = SIZES, n: int = 24, seed: int = 0) -> dict[str, torch.Tensor]:
    return random_batch(sizes, n, gen(seed), tasks=TASKS, recall=True)


def outputs(model, b) -> torch.Tensor:
    with torch.no_grad():
        return (
            model.user_vectors(b) if isinstance(model, TwoTower) else torch.stack(list(model(b).values()), 1)
        )


def reference_loss(
    model: TwoTower, b, log_q: torch.Tensor, own_negatives: bool = False, uniform: list[int] = ()
) -> float:
    """Weighted softmax CE over the batch's unique items (and the uniform draws), one positive at a
    time, in float64; the items of the positive's user's own label-0 rows are not logQ-corrected.
    With M uniform draws over the N catalogue items, an item's correction is log(B·q + M/N)."""
    with torch.no_grad():
        u = model.user_vectors(b).double().numpy()
        cands = sorted(set(b["item_idx"].tolist()) | set(uniform))
        v = {c: model.item_vectors(torch.tensor([c]))[0].double().numpy() for c in cands}
    if uniform:
        rows, n = len(b["item_idx"]), model.sizes.n_items - 1
        log_q = [math.log(rows * math.exp(float(x)) + len(uniform) / n) for x in log_q]
    num = den = 0.0
    for p in range(len(b["label"])):
        if b["label"][p] != 1:
            continue
        own = {
            int(b["item_idx"][r])
            for r in range(len(b["label"]))
            if b["label"][r] == 0 and int(b["user_idx"][r]) == int(b["user_idx"][p])
        } - {int(b["item_idx"][p])}
        own = own if own_negatives else set()
        logits = [
            float(u[p] @ v[c]) / model.temperature - (0.0 if c in own else float(log_q[c])) for c in cands
        ]
        top = max(logits)
        lse = top + math.log(sum(math.exp(x - top) for x in logits))
        w = float(b["weight"][p])
        num += w * (lse - logits[cands.index(int(b["item_idx"][p]))])
        den += w
    return num / den


def test_sizes_roundtrip_and_validation():
    assert FeatureSizes.from_dict(SIZES.to_dict()) == SIZES
    with pytest.raises(ValueError):
        FeatureSizes(**{**SIZES.to_dict(), "n_items": 0})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_tower_loss_matches_naive_reference(seed):
    model = two_tower()
    b = batch(n=30, seed=seed)  # 12 items for 30 rows: many duplicates among positives and negatives
    assert len(set(b["item_idx"].tolist())) < 30 and 0 < b["label"].sum() < 30
    log_q = torch.log_softmax(torch.randn(SIZES.n_items, generator=gen(seed + 10)), 0)
    assert model.loss(b, log_q).item() == pytest.approx(reference_loss(model, b, log_q), abs=1e-5)


def test_a_users_own_negatives_keep_their_full_logit():
    """--own-negatives, rows grouped by user (as the store batches them): own negatives are not
    logQ-corrected."""
    model = two_tower()
    b = batch(n=30, seed=5)
    b["user_idx"] = torch.arange(30) % 3 + 1
    log_q = torch.log_softmax(3 * torch.randn(SIZES.n_items, generator=gen(6)), 0)
    got = model.loss(b, log_q, own_negatives=True).item()
    assert got == pytest.approx(reference_loss(model, b, log_q, own_negatives=True), abs=1e-5)
    assert abs(got - reference_loss(model, b, log_q)) > 1e-3
    assert model.loss(b, log_q).item() == pytest.approx(reference_loss(model, b, log_q), abs=1e-5)


def test_mixed_negatives_add_uniform_items_with_their_expected_count_in_log_q():
    model = two_tower()
    b = batch(n=8, seed=7)  # 8 rows of a 12-item catalogue: some items only the draws bring
    assert 0 < b["label"].sum() < 8
    log_q = torch.log_softmax(3 * torch.randn(SIZES.n_items, generator=gen(8)), 0)
    in_batch = set(b["item_idx"].tolist())
    drawn = torch.randint(1, SIZES.n_items, (9,), generator=gen(9))
    assert set(drawn.tolist()) - in_batch  # some candidates come only from the draws
    got = model.loss(b, log_q, uniform=drawn).item()
    assert got == pytest.approx(reference_loss(model, b, log_q, uniform=drawn.tolist()), abs=1e-5)
    assert abs(got - model.loss(b, log_q).item()) > 1e-3  # the draws do reach the softmax
    b["user_idx"] = torch.arange(8) % 2 + 1
    own = model.loss(b, log_q, own_negatives=True, uniform=drawn).item()
    assert own == pytest.approx(
        reference_loss(model, b, log_q, own_negatives=True, uniform=drawn.tolist()), abs=1e-5
    )


def test_logq_correction_changes_loss_as_the_formula_says():
    model = two_tower()
    b = batch(n=30, seed=3)
    zeros = torch.zeros(SIZES.n_items)
    log_q = torch.log_softmax(3 * torch.randn(SIZES.n_items, generator=gen(4)), 0)
    corrected, plain = model.loss(b, log_q).item(), model.loss(b, zeros).item()
    assert plain == pytest.approx(reference_loss(model, b, zeros), abs=1e-5)
    assert corrected == pytest.approx(reference_loss(model, b, log_q), abs=1e-5)
    assert abs(corrected - plain) > 1e-2
    # Softmax shift: adding a constant to log q changes nothing when no row is a user's own negative
    # (distinct users); own negatives keep their logit, so there it does.
    distinct = {**b, "user_idx": torch.arange(30) + 1}
    assert model.loss(distinct, log_q + 5.0).item() == pytest.approx(
        model.loss(distinct, log_q).item(), abs=1e-5
    )
    # One positive: raising q of its own item lowers its logit, so its loss must grow.
    one = {k: v[:8].clone() for k, v in b.items()}
    one["label"] = torch.tensor([1.0] + [0.0] * 7)
    one["item_idx"][1:] = torch.where(one["item_idx"][1:] == one["item_idx"][0], 0, one["item_idx"][1:])
    bumped = zeros.clone()
    bumped[one["item_idx"][0]] = 2.0
    assert model.loss(one, bumped).item() > model.loss(one, zeros).item() + 0.5


def test_zero_positive_batch_gives_connected_zero():
    model = two_tower()
    b = batch()
    b["label"] = torch.zeros_like(b["label"])
    loss = model.loss(b, torch.zeros(SIZES.n_items))
    assert loss.item() == 0.0
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.count_nonzero(p.grad) == 0, name


@pytest.mark.parametrize("make", [two_tower, ranker])
def test_padding_never_changes_outputs(make):
    model = make()
    b = batch()
    b["item_idx"] = b["item_idx"].clamp_min(1)  # item 0 as a *target* legitimately uses row 0
    assert (b["hist"] == 0).any() and (b["hist"] == 0).all(1).any() and (b["hist"] != 0).any()
    before = outputs(model, b)
    with torch.no_grad():
        model.item_emb.weight[0] = 10 * torch.randn(model.item_emb.weight.shape[1])
        if isinstance(model, Ranker):
            model.category_emb.weight[0] = 10 * torch.randn(model.category_emb.weight.shape[1])
    assert torch.equal(outputs(model, b), before)
    longer = dict(b, hist=torch.cat([b["hist"], torch.zeros(len(b["hist"]), 4, dtype=torch.int64)], 1))
    torch.testing.assert_close(outputs(model, longer), before, rtol=0, atol=1e-6)


@pytest.mark.parametrize("make", [two_tower, ranker])
def test_id_and_dense_parameters_partition_all_parameters(make):
    model = make()
    ids, dense = model.id_embedding_parameters(), model.dense_parameters()
    assert [id(p) for p in ids] == [id(model.user_emb.weight), id(model.item_emb.weight)]
    every = {id(p) for p in model.parameters()}
    assert {id(p) for p in ids}.isdisjoint({id(p) for p in dense})
    assert {id(p) for p in ids} | {id(p) for p in dense} == every
    assert len(ids) + len(dense) == len(every)


@pytest.mark.parametrize("make", [two_tower, ranker])
def test_init_is_deterministic(make):
    a, b = make().state_dict(), make().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("make", [two_tower, ranker])
def test_grow_keeps_old_ids_and_adds_seeded_rows(make):
    model = make()
    b = batch()
    before = outputs(model, b)
    old_items = model.item_emb.weight.detach().clone()
    bigger = FeatureSizes(**{k: v + 7 if k.startswith("n_") else v for k, v in SIZES.to_dict().items()})
    twin = copy.deepcopy(model)
    model.grow(bigger, seed=5)
    twin.grow(bigger, seed=5)
    assert model.sizes == bigger and model.user_emb.weight.shape[0] == bigger.n_users
    assert model.category_emb.weight.shape[0] == bigger.n_categories
    assert torch.equal(model.item_emb.weight[: SIZES.n_items], old_items)
    new_rows = model.item_emb.weight[SIZES.n_items :]
    assert new_rows.shape[0] == 7 and torch.count_nonzero(new_rows) == new_rows.numel()
    assert 0.3 * model.emb_std < new_rows.std().item() < 3 * model.emb_std
    assert torch.equal(new_rows, twin.item_emb.weight[SIZES.n_items :])
    assert (
        model.item_category.shape == (bigger.n_items,)
        and int(model.item_category[SIZES.n_items :].sum()) == 0
    )
    assert torch.equal(outputs(model, b), before)
    assert torch.isfinite(outputs(model, random_batch(bigger, 16, gen(9), TASKS))).all()
    with pytest.raises(ValueError, match="shrink"):
        model.grow(SIZES)


def test_cross_layer_equals_formula():
    net = CrossNetwork(3, 2)
    w1, b1 = np.array([[0.5, -1.0, 0.0], [2.0, 0.0, 1.0], [0.0, 0.5, -0.5]]), np.array([0.1, -0.2, 0.3])
    w2, b2 = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.5], [0.25, 0.0, 2.0]]), np.array([0.0, 0.5, -1.0])
    with torch.no_grad():
        for layer, w, bias in zip(net.layers, (w1, w2), (b1, b2)):
            layer.weight.copy_(torch.tensor(w))
            layer.bias.copy_(torch.tensor(bias))
    x0 = np.array([1.0, 2.0, -1.0])
    x1 = x0 * (w1 @ x0 + b1) + x0
    x2 = x0 * (w2 @ x1 + b2) + x1
    out = net(torch.tensor(x0, dtype=torch.float32)[None])[0].detach().numpy()
    np.testing.assert_allclose(out, x2, rtol=1e-6)


def test_mmoe_gates_sum_to_one_per_task():
    model = ranker()
    gates = model.gate_weights(batch())
    assert gates.shape == (24, len(TASKS), 3) and (gates >= 0).all()
    torch.testing.assert_close(gates.sum(-1), torch.ones(24, len(TASKS)))


def test_exports_equal_eager(tmp_path):
    b = batch(n=17, seed=4)
    tt, rk = two_tower(), ranker()
    tt.export_user_tower(str(tmp_path / "user.pt"))
    user = torch.jit.load(str(tmp_path / "user.pt"))
    with torch.no_grad():
        torch.testing.assert_close(user(*[b[k] for k in USER_KEYS]), tt.user_vectors(b), rtol=0, atol=1e-6)
    buf = io.BytesIO()
    rk.export_scorer(buf)
    buf.seek(0)
    scorer = torch.jit.load(buf)
    eager = rk.predict(b)
    with torch.no_grad():
        probs = scorer(*[b[k] for k in (*USER_KEYS, "item_idx")])
    torch.testing.assert_close(probs, torch.stack([eager[t] for t in TASKS], 1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("make", [two_tower, ranker])
def test_checkpoint_roundtrip(make, tmp_path):
    model = make()
    bigger = FeatureSizes(**{**SIZES.to_dict(), "n_users": 50, "n_items": 15})
    model.grow(bigger, seed=2)
    b = batch(bigger)
    save_checkpoint(model, str(tmp_path / "m.ckpt"))
    buf = io.BytesIO()
    save_checkpoint(model, buf)
    buf.seek(0)
    for loaded in (load_checkpoint(str(tmp_path / "m.ckpt")), load_checkpoint(buf)):
        assert type(loaded) is type(model) and loaded.sizes == bigger and loaded.hyper == model.hyper
        assert torch.equal(outputs(loaded, b), outputs(model, b))
        assert torch.equal(loaded.item_dense, model.item_dense)


# --- learnability: small synthetic problems the models must solve ---------------------------------


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    ranks = np.empty(len(scores))
    ranks[np.argsort(scores)] = np.arange(1, len(scores) + 1)
    pos = labels == 1
    return (ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum())


def taste_batch(sizes: FeatureSizes, n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Click iff the item's category parity matches the user's gender parity; like = click and age 1."""
    b = random_batch(sizes, n, g, TASKS)
    b["gender_idx"] = 1 + b["user_idx"] % 2
    b["age_idx"] = 1 + b["user_idx"] % 3
    b["item_idx"] = b["item_idx"].clamp_min(1)
    category = 1 + b["item_idx"] % 4
    b["label_click"] = (category % 2 == b["gender_idx"] % 2).float()
    b["label_like"] = b["label_click"] * (b["age_idx"] == 1).float()
    return b


def test_ranker_learns_a_taste_rule():
    sizes = FeatureSizes(
        n_users=300,
        n_items=200,
        n_categories=5,
        n_authors=10,
        n_genders=3,
        n_ages=4,
        n_regions=3,
        user_dense_dim=2,
        item_dense_dim=2,
        hist_len=5,
    )
    torch.manual_seed(0)
    model = Ranker(sizes, **SMALL_RANKER)
    items = torch.arange(sizes.n_items)
    model.set_item_features(
        torch.where(items > 0, 1 + items % 4, 0), items % sizes.n_authors, torch.zeros(sizes.n_items, 2)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = gen(0)
    for _ in range(300):
        opt.zero_grad()
        model.loss(taste_batch(sizes, 128, g)).backward()
        opt.step()
    held_out = taste_batch(sizes, 2000, gen(123))
    probs = model.predict(held_out)
    assert auc(probs["click"].numpy(), held_out["label_click"].numpy()) > 0.8


def test_two_tower_learns_clusters():
    """Users of region r click items of category r: Recall@10 over the catalogue must beat random."""
    k, n_items = 20, 201  # 10 items per cluster: knowing the cluster is enough for Recall@10 = 1
    sizes = FeatureSizes(
        n_users=200,
        n_items=n_items,
        n_categories=k + 1,
        n_authors=4,
        n_genders=3,
        n_ages=3,
        n_regions=k + 1,
        user_dense_dim=2,
        item_dense_dim=2,
        hist_len=5,
    )
    torch.manual_seed(0)
    model = TwoTower(sizes, **SMALL_TT)
    items = torch.arange(n_items)
    category = torch.where(items > 0, 1 + items % k, 0)
    model.set_item_features(category, items % 4, torch.zeros(n_items, 2))
    by_cluster = [items[category == c] for c in range(k + 1)]

    def cluster_batch(n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        b = random_batch(sizes, n, g)
        b["region_idx"] = 1 + b["user_idx"] % k
        pick = lambda shape: torch.randint(0, n_items // k, shape, generator=g)  # noqa: E731
        own = torch.stack([by_cluster[int(r)] for r in b["region_idx"]])  # [n, n_items // k]
        b["item_idx"] = own.gather(1, pick((n, 1)))[:, 0]
        b["hist"] = torch.where(b["hist"] > 0, own.gather(1, pick((n, sizes.hist_len))), 0)
        return b

    log_q = torch.full((n_items,), -math.log(n_items))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = gen(0)
    for _ in range(150):
        pos = cluster_batch(128, g)
        neg = dict(pos, item_idx=torch.randint(1, n_items, (128,), generator=g))
        b = {key: torch.cat([pos[key], neg[key]]) for key in pos}
        b["label"] = torch.cat([torch.ones(128), torch.zeros(128)])
        b["weight"] = torch.ones(256)
        opt.zero_grad()
        model.loss(b, log_q).backward()
        opt.step()
    held_out = cluster_batch(500, gen(77))
    with torch.no_grad():
        scores = (model.user_vectors(held_out) @ model.all_item_vectors()[1:].T).numpy()
    top10 = np.argsort(-scores, axis=1)[:, :10] + 1
    recall = float(np.mean([int(i) in set(row) for i, row in zip(held_out["item_idx"].tolist(), top10)]))
    assert recall > 10 * 10 / (n_items - 1)  # random is 0.05

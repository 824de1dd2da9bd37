"""The ranker zoo (`--arch`, `--tasks-arch`): its formulas against NumPy references, old checkpoints
loading into the default, and every arch and tasks arch training on 2 Horovod ranks (equal to one
process) with a TorchScript export equal to eager."""

from __future__ import annotations

import io
import itertools
import math

import numpy as np
import pytest
import torch

from recsys_spark.catalog import RANKER_ARCHS
from recsys_spark.distributed import launch
from recsys_spark.train.features import FeatureSizes, random_batch
from recsys_spark.train.interactions import ARCH_INTEREST, bi_interaction
from recsys_spark.train.interest import DienInterest
from recsys_spark.train.multitask import PLE, TASK_ARCHS, ctcvr_logit
from recsys_spark.train.ranker import _LEGACY_PREFIXES, Ranker, row_draws

SIZES = FeatureSizes(50, 40, 5, 6, 3, 4, 5, 4, 3, 6)
# Every arch with the default heads, and the default arch with every heads.
ZOO = [(arch, "mmoe") for arch in ARCH_INTEREST] + [("dcn_v2", t) for t in TASK_ARCHS if t != "mmoe"]
SMALL = dict(
    emb_dim=4, attn_hidden=(8,), deep=(16,), experts=2, expert_hidden=(8,), expert_dim=8, tower_hidden=(4,)
)


def test_the_cli_names_are_the_zoo():
    assert tuple(ARCH_INTEREST) == RANKER_ARCHS and set(ZOO) >= {("dcn_v2", t) for t in TASK_ARCHS}


def test_fm_pairwise_term_is_the_sum_over_pairs():
    fields = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = fields.numpy()
    want = [sum(v[b, i] * v[b, j] for i, j in itertools.combinations(range(5), 2)) for b in range(3)]
    np.testing.assert_allclose(bi_interaction(fields).numpy(), np.array(want), atol=1e-10)


def test_ctcvr_is_the_product_of_the_two_probabilities():
    a = torch.tensor([-30.0, -2.0, 0.0, 1.5, 30.0], dtype=torch.float64)
    b = torch.tensor([0.3, 4.0, -1.0, 30.0, -30.0], dtype=torch.float64)
    got = torch.sigmoid(ctcvr_logit(a, b)).numpy()
    want = [1 / (1 + math.exp(-x)) / (1 + math.exp(-y)) for x, y in zip(a.tolist(), b.tolist())]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)


def test_esmm_outputs_ctr_and_ctcvr_and_needs_click_first():
    torch.manual_seed(0)
    model = Ranker(SIZES, tasks=("click", "like"), tasks_arch="esmm", **SMALL)
    batch = random_batch(SIZES, 16, torch.Generator().manual_seed(1), tasks=("click", "like"))
    hidden, bias = model._hidden(*model._args(batch))
    with torch.no_grad():
        ctr = torch.sigmoid(model.heads.ctr(hidden) + bias[:, :1])[:, 0]
        cvr = torch.sigmoid(model.heads.cvr(hidden) + bias[:, 1:])[:, 0]
        p = model.predict(batch)
    torch.testing.assert_close(p["click"], ctr)
    torch.testing.assert_close(p["like"], ctr * cvr)  # pCTCVR <= pCTR by construction
    with pytest.raises(ValueError, match="esmm"):
        Ranker(SIZES, tasks=("like", "click"), tasks_arch="esmm")
    with pytest.raises(ValueError, match="esmm"):
        Ranker(SIZES, tasks=("click", "like", "share"), tasks_arch="esmm")


def test_ple_gates_mix_shared_and_own_experts_only():
    torch.manual_seed(0)
    heads = PLE(6, n_tasks=2, n_experts=2, expert_hidden=(5,), expert_dim=4, tower_hidden=(3,))
    x, bias = torch.randn(7, 6), torch.zeros(7, 2)
    torch.testing.assert_close(heads.gate_weights(x).sum(-1), torch.ones(7, 2))
    before = heads(x, bias).detach()
    with torch.no_grad():  # task 1's own experts are 4 and 5: task 0 must not move
        for p in heads.experts[4].parameters():
            p.add_(1.0)
    after = heads(x, bias).detach()
    torch.testing.assert_close(after[:, 0], before[:, 0])
    assert not torch.allclose(after[:, 1], before[:, 1])


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_dien_evolution_is_an_attention_gated_gru():
    """s_n = (1 − a_n u_n) s_{n−1} + a_n u_n s̃_n over the interests a GRU extracts from each row's real
    clicks alone, oldest first (NumPy, given the module's own GRU and attention MLP): the padding and
    its length play no part."""
    torch.manual_seed(0)
    dien = DienInterest(4, (6,))
    g = torch.Generator().manual_seed(2)
    h, t = torch.randn(3, 5, 4, generator=g), torch.randn(3, 4, generator=g)
    lengths = [5, 2, 0]
    mask = torch.arange(5)[None] < torch.tensor(lengths)[:, None]
    with torch.no_grad():
        got = dien(h, t, mask).numpy()
        longer = torch.cat([h, torch.randn(3, 3, 4, generator=g)], dim=1)  # 3 more padding steps
        padded = dien(longer, t, torch.cat([mask, torch.zeros(3, 3, dtype=torch.bool)], dim=1)).numpy()
    np.testing.assert_allclose(padded, got, atol=1e-6)
    wg, bg = dien.gates.weight.detach().numpy(), dien.gates.bias.detach().numpy()
    wc, bc = dien.candidate.weight.detach().numpy(), dien.candidate.bias.detach().numpy()
    for row, length in enumerate(lengths):
        s = np.zeros(4)
        if length:
            clicks = torch.flip(h[row, :length], [0])  # oldest first
            with torch.no_grad():
                z = dien.extract(clicks[None])[0][0]
                features = torch.cat([z, t[row].expand_as(z), z - t[row], z * t[row]], dim=1)
                scores = dien.attn(features).squeeze(-1).numpy()
            z = z.numpy()
            a = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
            for n in range(length):
                gates = _sigmoid(wg @ np.concatenate([z[n], s]) + bg)
                u, r = gates[:4], gates[4:]
                proposal = np.tanh(wc @ np.concatenate([z[n], r * s]) + bc)
                u = a[n] * u
                s = (1 - u) * s + u * proposal
        np.testing.assert_allclose(got[row], s, atol=1e-5)
    np.testing.assert_allclose(got[2], np.zeros(4))  # no history, no interest


def test_dien_auxiliary_loss_is_the_next_click_loss():
    """L_aux = mean over rows of Σ over consecutive real clicks (oldest first) of −log σ(z_n·h_{n+1}) −
    log(1 − σ(z_n·ĥ_{n+1})) (z from the module's GRU over the real clicks), and the ranker adds α·L_aux
    for dien only."""
    torch.manual_seed(0)
    dien = DienInterest(4, (6,))
    g = torch.Generator().manual_seed(3)
    h, drawn = torch.randn(3, 5, 4, generator=g), torch.randn(3, 5, 4, generator=g)
    lengths = [5, 2, 1]
    mask = torch.arange(5)[None] < torch.tensor(lengths)[:, None]
    with torch.no_grad():
        got = float(dien.auxiliary_loss(h, mask, drawn))
    terms = []
    for row, length in enumerate(lengths):
        clicks, negatives = torch.flip(h[row, :length], [0]), torch.flip(drawn[row, :length], [0])
        with torch.no_grad():
            z = dien.extract(clicks[None])[0][0].numpy()
        clicks, negatives = clicks.numpy(), negatives.numpy()
        for n in range(length - 1):
            positive, negative = z[n] @ clicks[n + 1], z[n] @ negatives[n + 1]
            terms.append(-math.log(_sigmoid(positive)) - math.log(1 - _sigmoid(negative)))
    assert len(terms) == 5 and got == pytest.approx(sum(terms) / len(lengths), rel=1e-5)  # per row
    with torch.no_grad():
        assert float(dien.auxiliary_loss(h, mask & False, drawn)) == 0.0  # no pair of clicks: nothing
    # The draws: a hash of the row, in 1 .. n_items − 1, near-uniform, the same for any split of a batch.
    hist = torch.randint(0, 40, (4000, 6), generator=g)
    users, items = torch.randint(0, 50, (4000,), generator=g), torch.randint(0, 40, (4000,), generator=g)
    draws = row_draws(hist, users, items, 40)
    assert draws.min() >= 1 and draws.max() <= 39
    counts = torch.bincount(draws.reshape(-1), minlength=40)[1:].double()
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()
    torch.testing.assert_close(row_draws(hist[:7], users[:7], items[:7], 40), draws[:7])

    batch = random_batch(SIZES, 16, torch.Generator().manual_seed(1), tasks=("click", "like"))
    losses = {}
    for arch, weight in (("dien", 1.0), ("dien", 0.0), ("din", 1.0)):
        torch.manual_seed(0)
        model = Ranker(SIZES, arch=arch, aux_weight=weight, **SMALL)
        plain = sum(
            torch.nn.functional.binary_cross_entropy_with_logits(model(batch)[t], batch[f"label_{t}"])
            for t in model.tasks
        )
        torch.manual_seed(5)  # the negatives' draws
        losses[(arch, weight)] = float((model.loss(batch) - plain).detach())
    assert losses[("dien", 1.0)] > 0.1 and losses[("dien", 0.0)] == 0.0 and losses[("din", 1.0)] == 0.0


def test_a_checkpoint_from_before_the_zoo_loads_into_the_default():
    torch.manual_seed(0)
    model = Ranker(SIZES, **SMALL)
    state = model.state_dict()
    old = {}
    for key, value in state.items():  # the names the pre-zoo ranker saved
        for legacy, new in _LEGACY_PREFIXES.items():
            if key.startswith(new):
                key = legacy + key[len(new) :]
                break
        old[key] = value
    assert any(k.startswith("attn.") for k in old) and any(k.startswith("mmoe.") for k in old)
    torch.manual_seed(1)
    fresh = Ranker(SIZES, **SMALL)
    fresh.load_state_dict(old)
    batch = random_batch(SIZES, 8, torch.Generator().manual_seed(3), tasks=("click", "like"))
    for task, p in model.predict(batch).items():
        torch.testing.assert_close(fresh.predict(batch)[task], p)


def test_negative_keep_recalibrates_every_output():
    """A ranker trained on a share r of the negatives serves p = q / (q + (1 − q) / r), q being what the
    same weights say uncorrected; the export serves the same."""
    torch.manual_seed(0)
    plain = Ranker(SIZES, **SMALL).eval()
    kept = Ranker(SIZES, negative_keep=0.1, **SMALL).eval()
    kept.load_state_dict(plain.state_dict())
    batch = random_batch(SIZES, 16, torch.Generator().manual_seed(4), tasks=("click", "like"))
    q, p = plain.predict(batch), kept.predict(batch)
    for task in plain.tasks:
        torch.testing.assert_close(p[task], q[task] / (q[task] + (1 - q[task]) / 0.1))
    with pytest.raises(ValueError, match="negative_keep"):
        Ranker(SIZES, negative_keep=0.0)


def test_keep_negatives_keeps_every_positive_and_a_hashed_share_of_the_rest(spark):
    from recsys_spark.train.job import keep_negatives

    rows = [(i, int(i % 7 == 0), int(i % 21 == 0)) for i in range(20_000)]
    frame = spark.createDataFrame(rows, "row_id long, label_click int, label_like int")
    kept = keep_negatives(frame, ["click", "like"], 0.25, seed=3)
    got = {r.row_id: (r.label_click, r.label_like) for r in kept.collect()}
    positives = [r for r in rows if r[1] or r[2]]
    negatives = len(rows) - len(positives)
    assert all(r[0] in got for r in positives)
    share = (len(got) - len(positives)) / negatives
    assert abs(share - 0.25) < 4 * math.sqrt(0.25 * 0.75 / negatives)  # 4 standard deviations
    assert {r.row_id for r in keep_negatives(frame, ["click", "like"], 0.25, seed=3).collect()} == set(got)
    assert keep_negatives(frame, ["click"], 1.0, seed=3).count() == len(rows)


def zoo_sgd(comm, steps: int, seed: int) -> dict:
    """For every ZOO member: SGD on one fixed batch split over the ranks; rank 0 checks its export."""
    out = {}
    batch = random_batch(SIZES, 32, torch.Generator().manual_seed(seed), tasks=("click", "like"))
    share = 32 // comm.size
    mine = {k: v[comm.rank * share : (comm.rank + 1) * share] for k, v in batch.items()}
    for arch, tasks_arch in ZOO:
        torch.manual_seed(seed + comm.rank)  # the broadcast must make the ranks equal
        model = Ranker(SIZES, arch=arch, tasks_arch=tasks_arch, **SMALL)
        comm.broadcast_model_(model)
        start = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        named = list(model.named_parameters())
        optimizer = comm.distributed_optimizer(torch.optim.SGD(model.parameters(), lr=0.3), named)
        for _ in range(steps):
            optimizer.zero_grad()
            model.loss(mine).backward()
            optimizer.step()
        params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        export = None
        if comm.rank == 0:
            buffer = io.BytesIO()
            model.eval().export_scorer(buffer)
            buffer.seek(0)
            scripted = torch.jit.load(buffer)
            keys = ("user_idx", "gender_idx", "age_idx", "region_idx", "user_dense", "hist", "item_idx")
            with torch.no_grad():
                eager = torch.stack([model.predict(batch)[t] for t in model.tasks], 1)
                export = float((scripted(*(batch[k] for k in keys)) - eager).abs().max())
        out[f"{arch}/{tasks_arch}"] = {
            "params": params.tolist(),
            "moved": float((params - start).abs().max()),
            "export_error": export,
        }
    return out


@pytest.mark.slow
def test_every_arch_and_tasks_arch_trains_on_two_horovod_ranks_and_exports(spark, by_value):
    single = launch(zoo_sgd, {"steps": 3, "seed": 5}, 1, "local")[0]
    ranks = launch(zoo_sgd, {"steps": 3, "seed": 5}, 2, "horovod")
    assert len(ranks) == 2 and set(single) == {f"{a}/{t}" for a, t in ZOO}
    for name, one in single.items():
        assert one["moved"] > 1e-4, name  # every member learns something from the batch
        assert one["export_error"] < 1e-5, name
        assert ranks[0][name]["export_error"] < 1e-5, name
        np.testing.assert_array_equal(ranks[0][name]["params"], ranks[1][name]["params"])  # bit-identical
        np.testing.assert_allclose(
            ranks[0][name]["params"], one["params"], rtol=1e-4, atol=1e-5, err_msg=name
        )

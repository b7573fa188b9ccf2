"""Tests for reason2rank.distill.losses: hand-computed values, masking, gradients, combiners."""

from __future__ import annotations

import math

import pytest
import torch

from reason2rank.distill import (
    FixedWeights,
    SigmoidWeights,
    UncertaintyWeights,
    dear_loss,
    evidence_tagging,
    group_softmax_ce,
    kl_distill,
    lambda_loss,
    listnet,
    lm_loss,
    mask_prompt_labels,
    pointwise_bce,
    pointwise_mse,
    ranknet_grades,
    ranknet_pairs,
)

T = torch.tensor


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def bce(z: float, y: float) -> float:
    return -(y * math.log(sig(z)) + (1 - y) * math.log(1 - sig(z)))


def softmax(xs: list[float]) -> list[float]:
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def close(t: torch.Tensor, v: float, tol: float = 1e-5) -> bool:
    return abs(float(torch.as_tensor(t).detach()) - v) < tol


# ------------------------------------------------------------------------------------ hand values
def test_pointwise_bce_and_mse_hand():
    s, y = T([[0.0, 2.0], [-1.0, 0.5]]), T([[1.0, 0.0], [0.25, 1.0]])
    want = (bce(0, 1) + bce(2, 0) + bce(-1, 0.25) + bce(0.5, 1)) / 4
    assert close(pointwise_bce(s, y), want)
    assert close(pointwise_mse(s, y), ((0 - 1) ** 2 + 2**2 + 1.25**2 + 0.5**2) / 4)
    m = T([[True, False], [True, True]])
    assert close(pointwise_bce(s, y, m), (bce(0, 1) + bce(-1, 0.25) + bce(0.5, 1)) / 3)
    assert close(pointwise_mse(s, y, m), (1 + 1.25**2 + 0.25) / 3)


def test_ranknet_pairs_hand():
    si, sj, p = T([2.0, 0.0, 1.0]), T([1.0, 1.0, 1.0]), T([1.0, 0.0, 0.5])
    # l = log(1 + exp(-d)) for p=1, log(1 + exp(d)) for p=0, log(2) at d=0, p=0.5
    ls = [math.log(1 + math.exp(-1)), math.log(1 + math.exp(-1)), math.log(2)]
    assert close(ranknet_pairs(si, sj, p), sum(ls) / 3)
    w = T([2.0, 0.0, 1.0])
    assert close(ranknet_pairs(si, sj, p, w), (2 * ls[0] + ls[2]) / 3)
    # a zero-weight pair holding nan does not poison the loss or the gradient
    si2 = T([2.0, float("nan"), 1.0], requires_grad=True)
    out = ranknet_pairs(si2, sj, p, w)
    out.backward()
    assert close(out, (2 * ls[0] + ls[2]) / 3) and torch.isfinite(si2.grad).all()


def test_ranknet_grades_hand():
    s, g = T([[1.0, 0.0, 2.0]]), T([[2.0, 1.0, 0.0]])
    # pairs (i>j by grade): (0,1), (0,2), (1,2); hard loss softplus(-(s_i - s_j))
    d = [1.0 - 0.0, 1.0 - 2.0, 0.0 - 2.0]
    hard = sum(math.log(1 + math.exp(-x)) for x in d) / 3
    assert close(ranknet_grades(s, g), hard)
    tg = [sig(1.0), sig(2.0), sig(1.0)]
    soft = sum(bce(x, t) for x, t in zip(d, tg)) / 3
    assert close(ranknet_grades(s, g, soft_targets=True), soft)
    # ties give no pair; a group without pairs gives 0 (connected to the graph)
    s0 = T([[1.0, 2.0]], requires_grad=True)
    z = ranknet_grades(s0, T([[1.0, 1.0]]))
    z.backward()
    assert float(z.detach()) == 0.0 and s0.grad.abs().sum() == 0


def test_listnet_and_kl_hand():
    s, t = [0.0, 1.0, 3.0], [1.0, 0.0, 2.0]
    for temp in (1.0, 2.0):
        p = softmax([x / temp for x in t])
        q = softmax([x / temp for x in s])
        ce = -sum(pi * math.log(qi) for pi, qi in zip(p, q))
        kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
        assert close(listnet(T([s]), T([t]), temperature=temp), ce)
        assert close(kl_distill(T([s]), T([t]), temperature=temp), temp**2 * kl)
    # batchmean: average of per-group values
    b = kl_distill(T([s, t]), T([t, t]), temperature=1.0)
    p, q = softmax(t), softmax(s)
    assert close(b, sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)) / 2)
    assert close(kl_distill(T([s]), T([s])), 0.0)


def test_group_softmax_ce_and_dear_hand():
    s = [2.0, 1.0, 0.0]
    ce0 = -math.log(softmax(s)[0])
    ce1 = -math.log(softmax(s)[1])
    assert close(group_softmax_ce(T([s])), ce0)
    assert close(group_softmax_ce(T([s, s]), positive_index=T([0, 1])), (ce0 + ce1) / 2)
    t = [0.5, 1.5, -1.0]
    p, q = softmax([x / 2 for x in t]), softmax([x / 2 for x in s])
    kl = 4 * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    assert close(dear_loss(T([s]), T([t])), 0.9 * ce0 + 0.1 * kl)
    assert close(dear_loss(T([s]), T([t]), alpha=0.5, temperature=2.0), 0.5 * ce0 + 0.5 * kl)
    with pytest.raises(ValueError):
        group_softmax_ce(T([s]), 0, mask=T([[False, True, True]]))


def test_lambda_loss_hand():
    # grades [0, 1, 2]; scores [3, 1, 2] -> ranks [1, 3, 2]
    s, g = T([[3.0, 1.0, 2.0]]), T([[0.0, 1.0, 2.0]])
    disc = {1: 1.0, 2: 1 / math.log2(3), 3: 1 / math.log2(4)}
    idcg = 3 * disc[1] + 1 * disc[2] + 0 * disc[3]
    rank = [1, 3, 2]
    gains = [1.0, 2.0, 4.0]
    want = 0.0
    for i, j in [(1, 0), (2, 0), (2, 1)]:  # grade_i > grade_j
        delta = abs(gains[i] - gains[j]) * abs(disc[rank[i]] - disc[rank[j]]) / idcg
        want += delta * math.log(1 + math.exp(-(float(s[0, i]) - float(s[0, j]))))
    assert close(lambda_loss(s, g), want)
    # correctly ordered scores still give a (smaller) positive loss; raising the best lowers it
    x = T([[0.0, 1.0, 2.0]], requires_grad=True)
    lambda_loss(x, g).backward()
    assert x.grad[0, 2] < 0


def test_lm_loss_hand_and_shift():
    logits = T([[[0.0, 1.0, 2.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])  # [1, 3, 3]
    labels = T([[-100, 2, 0]])
    # position 0 predicts labels[1] = 2, position 1 predicts labels[2] = 0; position 2 unused
    want = (-math.log(softmax([0.0, 1.0, 2.0])[2]) - math.log(softmax([2.0, 0.0, 0.0])[0])) / 2
    assert close(lm_loss(logits, labels), want)
    z = torch.zeros(1, 3, 3, requires_grad=True)
    out = lm_loss(z, T([[-100, -100, -100]]))
    out.backward()
    assert float(out.detach()) == 0.0 and z.grad is not None


def test_lm_loss_ignores_prompt_positions():
    torch.manual_seed(0)
    ids = torch.randint(0, 7, (2, 6))
    labels = mask_prompt_labels(ids, [3, 2])
    logits = torch.randn(2, 6, 7, requires_grad=True)
    base = lm_loss(logits, labels)
    base.backward()
    # logits at position t predict token t+1: positions t with labels[t+1] == -100 never count
    dead = torch.zeros(2, 6, dtype=torch.bool)
    dead[:, :-1] = labels[:, 1:] == -100
    dead[:, -1] = True
    assert logits.grad[dead].abs().sum() == 0
    assert logits.grad[~dead].abs().sum() > 0
    changed = logits.detach().clone()
    changed[dead] = torch.randn(int(dead.sum()), 7) * 100
    assert torch.allclose(lm_loss(changed, labels), base.detach())
    # changing an answer position does change it
    changed2 = logits.detach().clone()
    changed2[~dead] += torch.randn(int((~dead).sum()), 7)
    assert not torch.allclose(lm_loss(changed2, labels), base.detach())


def test_mask_prompt_labels_padding():
    ids = T([[5, 6, 7, 8, 0, 0], [5, 6, 7, 8, 9, 1]])
    r = mask_prompt_labels(ids, T([2, 3]), pad_token_id=0)
    assert r.tolist() == [[-100, -100, 7, 8, -100, -100], [-100, -100, -100, 8, 9, 1]]
    left = T([[0, 0, 5, 6, 7, 8], [5, 6, 7, 8, 9, 1]])
    r = mask_prompt_labels(left, [2, 3], pad_token_id=0, padding_side="left")
    assert r.tolist() == [[-100, -100, -100, -100, 7, 8], [-100, -100, -100, 8, 9, 1]]
    # with attention_mask a real final token equal to the pad id survives (pad == eos)
    ids = T([[5, 6, 7, 0, 0]])
    am = T([[1, 1, 1, 1, 0]])
    r = mask_prompt_labels(ids, [2], pad_token_id=0, attention_mask=am)
    assert r.tolist() == [[-100, -100, 7, 0, -100]]
    with pytest.raises(ValueError):
        mask_prompt_labels(ids, [2], padding_side="middle")


def test_evidence_tagging_hand():
    z, y = T([[1.0, -1.0, 0.0]]), T([[1.0, 0.0, 1.0]])
    m = T([[True, True, False]])
    assert close(evidence_tagging(z, y, m), (bce(1, 1) + bce(-1, 0)) / 2)
    want = (3 * -math.log(sig(1)) + bce(-1, 0)) / 2
    assert close(evidence_tagging(z, y, m, pos_weight=3.0), want)


# ------------------------------------------------------------------------------- mask invariance
def _grouped_cases():
    # teacher scores / grades / labels hold nan in the padded slots: they must be ignored too
    nan = float("nan")
    g = T([[2.0, 0.0, 1.0, nan], [1.0, 0.0, nan, nan]])
    t = T([[1.0, -0.5, 0.3, nan], [0.2, 0.1, nan, nan]])
    y = T([[1.0, 0.0, 0.5, nan], [1.0, 0.0, nan, nan]])
    return {
        "pointwise_bce": lambda s, m: pointwise_bce(s, y, m),
        "pointwise_mse": lambda s, m: pointwise_mse(s, g, m),
        "ranknet_grades": lambda s, m: ranknet_grades(s, g, m),
        "ranknet_soft": lambda s, m: ranknet_grades(s, g, m, soft_targets=True),
        "lambda_loss": lambda s, m: lambda_loss(s, g, m),
        "listnet": lambda s, m: listnet(s, t, m, temperature=0.7),
        "kl_distill": lambda s, m: kl_distill(s, t, m),
        "group_softmax_ce": lambda s, m: group_softmax_ce(s, 0, m),
        "dear_loss": lambda s, m: dear_loss(s, t, 0, m),
        "evidence_tagging": lambda s, m: evidence_tagging(s, y, m),
    }


@pytest.mark.parametrize("name", list(_grouped_cases()))
def test_padding_changes_neither_loss_nor_gradients(name):
    fn = _grouped_cases()[name]
    mask = T([[True, True, True, False], [True, True, False, False]])
    real = T([[0.3, -0.2, 1.1, 0.0], [0.5, 0.9, 0.0, 0.0]])
    results = []
    for pad in (0.0, 1e4, -1e4, float("nan"), float("inf")):
        s = torch.where(mask, real, torch.full_like(real, pad)).requires_grad_(True)
        out = fn(s, mask)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(s.grad).all(), pad
        assert (s.grad[~mask] == 0).all()
        results.append((float(out.detach()), s.grad[mask].clone()))
    for v, gr in results[1:]:
        assert abs(v - results[0][0]) < 1e-6 and torch.allclose(gr, results[0][1], atol=1e-7)


def test_padding_equals_unpadded_groups():
    # a padded batch equals the mean of the unpadded groups for group-averaged losses
    a, b = T([[0.3, -0.2, 1.1]]), T([[0.5, 0.9]])
    ta, tb = T([[1.0, -0.5, 0.3]]), T([[0.2, 0.1]])
    s = T([[0.3, -0.2, 1.1], [0.5, 0.9, 7.0]])
    t = T([[1.0, -0.5, 0.3], [0.2, 0.1, -3.0]])
    m = T([[True, True, True], [True, True, False]])
    for fn in (listnet, kl_distill, lambda s_, t_, m_=None: dear_loss(s_, t_, 0, m_)):
        want = (float(fn(a, ta)) + float(fn(b, tb))) / 2
        assert close(fn(s, t, m), want)
    want = (float(group_softmax_ce(a)) + float(group_softmax_ce(b))) / 2
    assert close(group_softmax_ce(s, 0, m), want)
    # pair-averaged ranknet: pooled pairs; lambda_loss: mean over groups
    ga, gb = T([[2.0, 0.0, 1.0]]), T([[1.0, 0.0]])
    g = T([[2.0, 0.0, 1.0], [1.0, 0.0, 5.0]])
    pa = ranknet_grades(a, ga) * 3
    pb = ranknet_grades(b, gb) * 1
    assert close(ranknet_grades(s, g, m), float(pa + pb) / 4)
    assert close(lambda_loss(s, g, m), (float(lambda_loss(a, ga)) + float(lambda_loss(b, gb))) / 2)


# ------------------------------------------------------------------------------- gradient signs
@pytest.mark.parametrize(
    "fn",
    [
        lambda s: pointwise_bce(s, T([[1.0, 0.0, 0.0]])),
        lambda s: ranknet_grades(s, T([[2.0, 1.0, 0.0]])),
        lambda s: ranknet_grades(s, T([[2.0, 1.0, 0.0]]), soft_targets=True),
        lambda s: lambda_loss(s, T([[2.0, 1.0, 0.0]])),
        lambda s: listnet(s, T([[3.0, 0.0, 0.0]])),
        lambda s: kl_distill(s, T([[3.0, 0.0, 0.0]])),
        lambda s: group_softmax_ce(s),
        lambda s: dear_loss(s, T([[3.0, 0.0, 0.0]])),
        lambda s: evidence_tagging(s, T([[1.0, 0.0, 0.0]]), torch.ones(1, 3, dtype=torch.bool)),
    ],
)
def test_raising_the_positive_lowers_the_loss(fn):
    s = T([[0.0, 0.5, 0.2]], requires_grad=True)
    base = fn(s)
    base.backward()
    assert s.grad[0, 0] < 0
    assert fn(s.detach() + T([[0.5, 0.0, 0.0]])) < base.detach()


def test_ranknet_pairs_gradient_sign():
    si, sj = T([0.0], requires_grad=True), T([1.0], requires_grad=True)
    ranknet_pairs(si, sj, T([1.0])).backward()
    assert si.grad[0] < 0 < sj.grad[0]


# ------------------------------------------------------------------------------------ combiners
def test_fixed_weights():
    c = FixedWeights({"a": 0.5, "b": 2.0})
    assert close(c({"a": T(4.0), "b": T(1.5)}), 0.5 * 4 + 2 * 1.5)
    assert close(c({"a": T(4.0)}), 2.0)
    with pytest.raises(KeyError):
        c({"z": T(1.0)})


def test_uncertainty_weights_math_and_learnable():
    c = UncertaintyWeights(["rank", "lm"])
    with torch.no_grad():
        c.log_vars.copy_(T([0.5, -1.0]))
    la, lb = T(2.0, requires_grad=True), T(3.0)
    out = c({"rank": la, "lm": lb})
    assert close(out, math.exp(-0.5) * 2 + 0.5 + math.exp(1.0) * 3 - 1.0)
    out.backward()
    assert c.log_vars.grad is not None and c.log_vars.grad.abs().min() > 0
    # d/ds [exp(-s) L + s] = 1 - exp(-s) L
    assert close(c.log_vars.grad[0], 1 - math.exp(-0.5) * 2)
    assert close(la.grad, math.exp(-0.5))
    assert set(c.weights()) == {"rank", "lm"}
    assert len(list(c.parameters())) == 1


def test_sigmoid_weights_math_and_learnable():
    c = SigmoidWeights(["list", "mse", "lm"])
    with torch.no_grad():
        c.logits.copy_(T([0.0, 1.0, -2.0]))
    out = c({"list": T(1.0), "mse": T(2.0), "lm": T(4.0)})
    assert close(out, 0.5 * 1 + sig(1.0) * 2 + sig(-2.0) * 4)
    out.backward()
    # d/da σ(a) L = σ(a)(1-σ(a)) L
    assert close(c.logits.grad[1], sig(1.0) * (1 - sig(1.0)) * 2)
    assert (c.logits.grad > 0).all()
    opt = torch.optim.SGD(c.parameters(), lr=0.1)
    opt.step()
    assert float(c.logits.detach()[0]) < 0.0
    with pytest.raises(KeyError):
        c({"other": T(1.0)})

"""Attention weights from reason2rank's attention function equal eager attention's ``output_attentions``, over a
KV-cache prefix too, in any dtype without NaN; and the mask registration is what makes the cached case right."""

from __future__ import annotations

import pytest
import torch
from transformers import AttentionInterface, AutoModelForCausalLM

from reason2rank.llm import attention as attn_mod
from reason2rank.llm.attention import attention_recording, attention_weights
from reason2rank.llm.decoding import _cache_name, forward_with_cache


def _models(path, dtype=torch.float32):
    fast = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    eager = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    return fast, eager


@pytest.fixture(params=["llama", "qwen2"])
def model_dir(request, tiny_llama_dir, tiny_qwen2_dir):
    return tiny_llama_dir if request.param == "llama" else tiny_qwen2_dir


def test_weights_equal_eager_output_attentions_and_the_model_output_is_unchanged(model_dir):
    fast, eager = _models(model_dir)
    ids = torch.randint(5, 120, (2, 37), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :6] = 0  # left padding in row 1
    with torch.no_grad():
        ref = eager(input_ids=ids, attention_mask=mask, output_attentions=True)
        plain = fast(input_ids=ids, attention_mask=mask).logits
        with attention_recording(fast, rows=9, full=True) as rec:
            got = fast(input_ids=ids, attention_mask=mask).logits
    assert fast.config._attn_implementation == "sdpa"  # restored
    torch.testing.assert_close(got, plain, rtol=0, atol=1e-6)
    for layer, want in enumerate(ref.attentions):
        # padded query rows: eager gives uniform garbage, ours zeros; compare the real rows
        torch.testing.assert_close(rec.full_weights[layer], want[:, :, -9:].float(), rtol=0, atol=1e-5)
        reduced = want[:, :, -9:].float().mean(2).sum(1)
        torch.testing.assert_close(rec.per_layer[layer], reduced, rtol=0, atol=1e-5)


def test_a_kv_cache_prefix_plus_a_suffix_equals_one_full_pass(model_dir):
    fast, eager = _models(model_dir)
    ids = torch.randint(5, 120, (1, 50), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = eager(input_ids=ids, output_attentions=True)
        full_logits = fast(input_ids=ids).logits[:, -1]
        _, cache = forward_with_cache(fast, ids[:, :41], torch.ones_like(ids[:, :41]))
        with attention_recording(fast, full=True) as rec:
            logits, _ = forward_with_cache(fast, ids[:, 41:], torch.ones_like(ids), cache)
    torch.testing.assert_close(logits, full_logits, rtol=0, atol=1e-5)
    for layer, want in enumerate(ref.attentions):
        torch.testing.assert_close(rec.full_weights[layer], want[:, :, 41:], rtol=0, atol=1e-5)


def test_without_the_mask_registration_a_cached_suffix_gets_wrong_weights(tiny_llama_dir):
    """The reason the mask function is registered too: an unknown implementation gets no mask, and a suffix over
    a cached prefix is then masked top-left aligned by SDPA."""
    name = "r2r_test_attention_without_mask"
    AttentionInterface.register(name, attn_mod._attention_forward)
    fast, eager = _models(tiny_llama_dir)
    ids = torch.randint(5, 120, (1, 30), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = eager(input_ids=ids, output_attentions=True).attentions[0][:, :, 24:]
        _, cache = forward_with_cache(fast, ids[:, :24], torch.ones_like(ids[:, :24]))
        fast.set_attn_implementation(name)
        token = attn_mod._ACTIVE.set(attn_mod.AttentionRecorder(full=True))
        try:
            fast(input_ids=ids[:, 24:], use_cache=True, **{_cache_name(fast): cache})
            wrong = attn_mod._ACTIVE.get().full_weights[0]
        finally:
            attn_mod._ACTIVE.reset(token)
            fast.set_attn_implementation("sdpa")
    assert (wrong - ref).abs().max() > 1e-3


def test_bf16_weights_have_no_nan_and_stay_close_to_fp32(tiny_llama_dir):
    fast, eager = _models(tiny_llama_dir, dtype=torch.bfloat16)
    ids = torch.randint(5, 120, (2, 40), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[0, :10] = 0
    with torch.no_grad():
        ref = eager(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
        with attention_recording(fast, rows=40, full=True) as rec:
            fast(input_ids=ids, attention_mask=mask)
    for layer, w in rec.full_weights.items():
        assert w.dtype == torch.float32 and not torch.isnan(w).any()
        assert torch.all(w[0, :, :10] == 0)  # padded query rows are zero, not NaN
        torch.testing.assert_close(w[1], ref[layer][1], rtol=0, atol=2e-2)


def test_attention_weights_by_hand():
    q = torch.tensor([[[[1.0, 0.0], [0.0, 2.0]]]])  # (1 batch, 1 head, 2 queries, dim 2)
    k = torch.tensor([[[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]]])  # 3 keys
    w = attention_weights(q, k, None, scaling=1.0)  # causal, top-left aligned (SDPA's is_causal)
    e = torch.exp(torch.tensor([0.0, 2.0]))
    torch.testing.assert_close(
        w[0, 0], torch.tensor([[1.0, 0.0, 0.0], [e[0] / e.sum(), e[1] / e.sum(), 0.0]])
    )
    visible = torch.tensor([[[[False, True, True], [False, False, False]]]])  # a row with nothing visible
    w = attention_weights(q, k, visible, scaling=0.5)
    s = torch.exp(torch.tensor([0.0, 0.5]))
    torch.testing.assert_close(
        w[0, 0], torch.tensor([[0.0, s[0] / s.sum(), s[1] / s.sum()], [0.0, 0.0, 0.0]])
    )


def test_layer_subset_and_row_mask(tiny_qwen2_dir):
    fast, _ = _models(tiny_qwen2_dir)
    ids = torch.randint(5, 120, (1, 20), generator=torch.Generator().manual_seed(4))
    with torch.no_grad(), attention_recording(fast, rows=4, layers=frozenset({1}), full=True,
                                              row_mask=torch.tensor([[True, False, True, False]])) as rec:  # fmt: skip
        fast(input_ids=ids)
    assert list(rec.per_layer) == [1]
    w = rec.full_weights[1]
    torch.testing.assert_close(rec.total(), w[:, :, [0, 2]].mean(2).sum(1))

"""The engine's padded-token count and the CPU ISA detection printed next to CPU figures."""

from __future__ import annotations

import platform

import numpy as np
import torch

from reason2rank import cpu_isa
from reason2rank.engine import Engine, PaddingStats


def test_padded_fraction_counts_the_padding_of_length_sorted_batches():
    engine = Engine(device="cpu", dtype="fp32", batch_size=2)
    lengths = [5, 1, 4, 2]  # sorted batches: (5, 4) and (2, 1) -> 10 + 4 slots, 12 tokens
    features = [{"input_ids": list(range(1, n + 1))} for n in lengths]
    out = engine.run(features, lambda b: b["attention_mask"].sum(dim=1).to(torch.float32), pad_token_id=0)
    np.testing.assert_array_equal(out, lengths)
    assert (engine.padding.tokens, engine.padding.slots) == (12, 14)
    assert abs(engine.padding.padded_fraction - 2 / 14) < 1e-12
    engine.run(features[:1], lambda b: b["attention_mask"].sum(dim=1).float(), pad_token_id=0)
    assert (engine.padding.tokens, engine.padding.slots) == (17, 19)  # counts add up until reset
    engine.padding = PaddingStats()
    assert engine.padding.padded_fraction == 0.0


def test_cpu_isa_summary_names_what_the_flags_say(monkeypatch):
    monkeypatch.setattr(cpu_isa, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    summary = cpu_isa.cpu_isa_summary()
    assert summary.startswith(platform.machine() + ", AVX2, AVX-512, AVX512-BF16, no AMX;")
    assert f"{cpu_isa.usable_cores()} cores" in summary and "AVX512-VNNI" not in summary
    monkeypatch.setattr(cpu_isa, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    assert "AMX-BF16" in cpu_isa.cpu_isa_summary() and "no AMX" not in cpu_isa.cpu_isa_summary()
    monkeypatch.setattr(cpu_isa, "cpu_flags", frozenset)
    assert "flags unknown" in cpu_isa.cpu_isa_summary()
    assert cpu_isa.usable_cores() >= 1

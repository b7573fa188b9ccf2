"""Run castorini rank_llm's RankListwiseOSLLM with a plain HF transformers model on CPU,
without vllm installed.

Why this is needed (rank_llm 0.25.7):
  * rank_llm/rerank/listwise/rank_listwise_os_llm.py line 10: `import vllm` (hard, module level)
  * rank_llm/rerank/vllm_handler.py line 3-5: `import vllm` / `from vllm.outputs import RequestOutput`
  * RankListwiseOSLLM.__init__ (else-branch, when neither sglang_batched nor tensorrt_batched)
    always builds `VllmHandler(model=..., ...)` -> `vllm.LLM(...)`. There is no transformers path.
  * the PyPI wheel declares `vllm>=0.4.0` as a hard requirement (install with --no-deps).

Workaround (no edits to site-packages):
  1. install a stub `vllm` module into sys.modules (only the names referenced at import time),
  2. replace `rank_listwise_os_llm.VllmHandler` by `HFHandler`, which has the same interface
     (get_tokenizer(), generate_output(prompts, min_tokens, max_tokens, temperature, logprobs))
     and returns vllm-like RequestOutput objects (.outputs[0].text / .token_ids / .logprobs).
  Everything else (prompt template, sliding window, parsing, token counting) is rank_llm's own.

Usage (benchmarks/llm_strategies.py):
    import rankllm_transformers  # must be imported BEFORE any rank_llm.rerank.listwise import
    from rank_llm.rerank.listwise import RankListwiseOSLLM
"""

import sys
import time
import types
from dataclasses import dataclass, field
from typing import Any

import torch


# ---------------------------------------------------------------- 1. stub vllm
def _install_vllm_stub():
    if "vllm" in sys.modules:
        return
    vllm = types.ModuleType("vllm")
    outputs = types.ModuleType("vllm.outputs")

    class RequestOutput:  # only used as a type annotation by rank_llm
        pass

    class _Unavailable:
        def __init__(self, *a, **k):
            raise RuntimeError("vllm is stubbed out (rankllm_hf_backend); use HFHandler")

    outputs.RequestOutput = RequestOutput
    vllm.outputs = outputs
    vllm.RequestOutput = RequestOutput
    vllm.LLM = _Unavailable
    vllm.SamplingParams = _Unavailable
    vllm.__version__ = "0.0.0-stub"
    sys.modules["vllm"] = vllm
    sys.modules["vllm.outputs"] = outputs


_install_vllm_stub()


# ------------------------------------------- 1b. stub LiT5 (breaks on transformers >= 5)
def _install_lit5_stub_if_needed():
    """`import rank_llm.rerank` pulls reranker.py -> rank_fid.py -> lit5/model.py -> lit5/modeling_t5.py,
    which imports names removed in transformers 5 (modeling_utils.find_pruneable_heads_and_indices,
    modeling_utils.prune_linear_layer, utils.model_parallel_utils). Only RankFiD* (LiT5) needs them,
    so with transformers >= 5 we pre-register a placeholder module; with 4.x nothing is done."""
    try:
        from transformers.modeling_utils import find_pruneable_heads_and_indices  # noqa: F401

        return  # transformers 4.x: the real module imports fine
    except ImportError:
        pass
    name = "rank_llm.rerank.listwise.lit5.model"
    if name in sys.modules:
        return
    stub = types.ModuleType(name)

    class _NoLiT5:
        def __init__(self, *a, **k):
            raise RuntimeError("LiT5/RankFiD is unavailable with transformers>=5 (stubbed)")

    stub.FiD = _NoLiT5
    stub.FiDCrossAttentionScore = _NoLiT5
    sys.modules[name] = stub


_install_lit5_stub_if_needed()


# ---------------------------------------------------------------- 2. HF handler
@dataclass
class _Logprob:
    logprob: float
    decoded_token: str


@dataclass
class _CompletionOutput:
    text: str
    token_ids: list[int]
    logprobs: list[dict[int, _Logprob]] | None = None


@dataclass
class _RequestOutput:
    prompt: str
    prompt_token_ids: list[int]
    outputs: list[_CompletionOutput] = field(default_factory=list)


class HFHandler:
    """Drop-in for rank_llm.rerank.vllm_handler.VllmHandler using transformers generate()."""

    # instrumentation, shared by all instances (reset between queries by the caller)
    stats = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "gen_seconds": 0.0}
    # keep one loaded model per path so several rerankers in one process share weights
    _cache: dict[str, Any] = {}

    def __init__(
        self,
        model: str,
        download_dir: str = None,
        enforce_eager: bool = False,
        max_logprobs: int = 30,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        **kwargs: Any,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if model not in self._cache:
            tok = AutoTokenizer.from_pretrained(model)
            mdl = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
            self._cache[model] = (tok, mdl)
        self._tokenizer, self._model = self._cache[model]

    def get_tokenizer(self):
        return self._tokenizer

    @torch.no_grad()
    def generate_output(
        self,
        prompts: list[str],
        min_tokens: int,
        max_tokens: int,
        temperature: float,
        logprobs: int | None = None,
        **kwargs: Any,
    ):
        assert temperature == 0.0, "only greedy decoding is implemented"
        tok = self._tokenizer
        eos = tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        results = []
        for prompt in prompts:  # sequential: batch of 1, no padding effects
            if not isinstance(prompt, str):  # chat messages -> string
                prompt = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            # vllm tokenises a text prompt with add_special_tokens=True, like tokenizer.encode
            ids = tok.encode(prompt)
            inp = torch.tensor([ids])
            t0 = time.time()
            out = self._model.generate(
                inp,
                attention_mask=torch.ones_like(inp),
                max_new_tokens=max_tokens,
                min_new_tokens=min_tokens,
                do_sample=False,
                num_beams=1,
                repetition_penalty=1.0,
                eos_token_id=eos,
                pad_token_id=pad,
                output_scores=logprobs is not None,
                return_dict_in_generate=True,
            )
            dt = time.time() - t0
            gen = out.sequences[0, len(ids) :].tolist()
            # vllm drops the stop token from token_ids/text
            if gen and gen[-1] == eos:
                gen = gen[:-1]
            lp = None
            if logprobs is not None:
                lp = []
                for step_scores in out.scores:
                    logp = torch.log_softmax(step_scores[0].float(), -1)
                    top = torch.topk(logp, logprobs)
                    lp.append(
                        {
                            int(i): _Logprob(float(v), tok.decode([int(i)]))
                            for v, i in zip(top.values, top.indices)
                        }
                    )
            text = tok.decode(gen, skip_special_tokens=True)
            HFHandler.stats["calls"] += 1
            HFHandler.stats["prompt_tokens"] += len(ids)
            HFHandler.stats["completion_tokens"] += len(gen)
            HFHandler.stats["gen_seconds"] += dt
            results.append(_RequestOutput(prompt, ids, [_CompletionOutput(text, gen, lp)]))
        return results


def reset_stats():
    for k in HFHandler.stats:
        HFHandler.stats[k] = 0 if k != "gen_seconds" else 0.0


# ---------------------------------------------------------------- 3. patch rank_llm
import rank_llm.rerank.listwise.rank_listwise_os_llm as _osllm  # noqa: E402

_osllm.VllmHandler = HFHandler

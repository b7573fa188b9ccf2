"""Factories for tiny, deterministic transformers models built from configs (no downloads).

Every factory writes a complete model directory (weights + config + tokenizer) that loads back with
``AutoTokenizer.from_pretrained(path)`` and ``AutoModel*.from_pretrained(path)``, and returns ``path``.
Tokenizers are built locally with the ``tokenizers`` library and wrapped in
``transformers.PreTrainedTokenizerFast``; models are initialised from a seeded RNG (the global torch
RNG state is left untouched).

Sizes are tiny (hidden 32, 2 layers, vocab of a few hundred tokens) so each factory runs in well under
a second on CPU.
"""

from __future__ import annotations

import contextlib
import json
import string
from collections.abc import Iterator
from pathlib import Path

import torch
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

__all__ = [
    "COMMON_WORDS",
    "LLAMA3_CHAT_TEMPLATE",
    "QWEN2_CHAT_TEMPLATE",
    "make_bert_tokenizer",
    "make_causal_lm_tokenizer",
    "make_tiny_bert",
    "make_tiny_bert_encoder",
    "make_tiny_causal_lm",
    "make_tiny_deberta_v2",
    "make_tiny_lora_adapter",
]

HIDDEN_SIZE = 32
NUM_LAYERS = 2
NUM_HEADS = 4
INTERMEDIATE_SIZE = 64
MAX_POSITIONS = 512
# Larger than the usual 0.02 so that random tiny models give visibly different outputs per input.
INITIALIZER_RANGE = 0.1

# Common English words plus the ones reranking prompts use; every entry becomes a single token.
_COMMON_WORDS_TEXT = """
    the be to of and a in that have i it for not on with he as you do at this but his by from they we
    say her she or an will my one all would there their what so up out if about who get which go me
    when make can like time no just him know take people into year your good some could them see other
    than then now look only come its over think also back after use two how our work first well way
    even new want because any these give day most us is are was were been has had did does said made
    yes true false relevant irrelevant not document documents doc passage passages query queries
    question questions answer answers search rank ranking score judge judgement reason reasoning
    think step final output input user system assistant please given following whether text content
    title information relevance label explain explanation between more less very where why which
    best better same different world city country capital paris france london england water food
    health computer science history music movie book books car house school student university data
    model models language learning machine neural network retrieval engine web page list number
"""
COMMON_WORDS: tuple[str, ...] = tuple(dict.fromkeys(_COMMON_WORDS_TEXT.split()))

_PUNCT = list(string.punctuation)
_LETTERS_DIGITS = list(string.ascii_lowercase + string.digits)
_WORDPIECE_SUFFIXES = ["s", "es", "ed", "ing", "ly", "er", "est", "ion", "tion", "al", "ity", "ment", "ness"]


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _seeded_init(seed: int):
    """Seed torch's CPU RNG for the block, restoring the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _prepare_dir(path) -> Path:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p


# --------------------------------------------------------------------------------------------------
# tokenizers
# --------------------------------------------------------------------------------------------------


def make_bert_tokenizer(model_max_length: int = MAX_POSITIONS):
    """Uncased WordPiece tokenizer in the BERT style.

    Vocabulary: ``[PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4``, every lowercase letter / digit /
    ASCII punctuation character, their ``##`` continuations, a few suffixes and :data:`COMMON_WORDS`.
    Any ASCII text therefore tokenises without ``[UNK]``. Pairs are encoded as
    ``[CLS] A [SEP] B [SEP]`` with token_type_ids 0 for ``[CLS] A [SEP]`` and 1 for ``B [SEP]``.
    """
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab: dict[str, int] = {}
    for tok in (
        specials
        + _LETTERS_DIGITS
        + _PUNCT
        + ["##" + c for c in _LETTERS_DIGITS]
        + ["##" + s for s in _WORDPIECE_SUFFIXES]
        + list(COMMON_WORDS)
    ):
        vocab.setdefault(tok, len(vocab))

    tk = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tk.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True
    )
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tk.decoder = decoders.WordPiece(prefix="##")

    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        padding_side="right",
        truncation_side="right",
        model_max_length=model_max_length,
        # transformers 5's generic tokenizer does not return token_type_ids unless asked to.
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)

QWEN2_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

_LLAMA3_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# arch -> special tokens (in vocab order, after the regular vocabulary), named roles, stop tokens,
# chat template, pre-tokenizer split regex and normalizer
_CAUSAL_SPECIALS = {
    "llama": {
        "tokens": [
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|finetune_right_pad_id|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
        ],
        "bos": "<|begin_of_text|>",
        "eos": "<|eot_id|>",
        "pad": "<|finetune_right_pad_id|>",
        "stop": ["<|eot_id|>", "<|end_of_text|>"],
        "template": LLAMA3_CHAT_TEMPLATE,
        "split_regex": _LLAMA3_SPLIT_REGEX,
        "normalizer": None,
    },
    "qwen2": {
        "tokens": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "bos": None,
        "eos": "<|im_end|>",
        "pad": "<|endoftext|>",
        "stop": ["<|im_end|>", "<|endoftext|>"],
        "template": QWEN2_CHAT_TEMPLATE,
        "split_regex": _QWEN2_SPLIT_REGEX,
        "normalizer": "nfc",
    },
}


def _bpe_corpus() -> Iterator[str]:
    for w in COMMON_WORDS:
        for v in (w, w.capitalize()):
            yield v
            yield " " + v
    for c in _LETTERS_DIGITS + _PUNCT:
        yield " " + c
    yield "\n\n"


def make_causal_lm_tokenizer(arch: str = "llama", model_max_length: int = 2048):
    """Byte-level BPE tokenizer in the style of Llama-3 (``arch="llama"``) or Qwen2 (``"qwen2"``).

    Trained deterministically on :data:`COMMON_WORDS` (bare, capitalised and with a leading space) over
    the full 256-byte alphabet, so any text tokenises (no UNK) and every common word -- including
    ``yes no true false`` -- is a single token; ``0``..``9`` are single byte tokens. Special tokens come
    after the regular vocabulary (as in the real models) and are registered as special added tokens.
    The family's chat template is attached. ``padding_side`` is ``"right"`` on purpose.
    """
    from transformers import PreTrainedTokenizerFast

    if arch not in _CAUSAL_SPECIALS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(_CAUSAL_SPECIALS)}")
    spec = _CAUSAL_SPECIALS[arch]

    tk = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    # Same normalizer / pre-tokenizer as the real tokenizer.json files. This matters for Qwen2: in
    # transformers 5 AutoTokenizer always instantiates Qwen2Tokenizer for model_type "qwen2", which
    # rebuilds the pipeline (NFC + Qwen split regex) around the saved vocab/merges.
    if spec["normalizer"] == "nfc":
        tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(spec["split_regex"]), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=100_000,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tk.train_from_iterator(_bpe_corpus(), trainer)
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in spec["tokens"]])

    if spec["bos"] is not None:
        bos, bos_id = spec["bos"], tk.token_to_id(spec["bos"])
        tk.post_processor = processors.Sequence(
            [
                processors.ByteLevel(trim_offsets=False),
                processors.TemplateProcessing(
                    single=f"{bos}:0 $A:0",
                    pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                    special_tokens=[(bos, bos_id)],
                ),
            ]
        )
    else:
        tk.post_processor = processors.ByteLevel(trim_offsets=False)

    named = {spec["bos"], spec["eos"], spec["pad"]}
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token=spec["bos"],
        eos_token=spec["eos"],
        pad_token=spec["pad"],
        unk_token=None,
        extra_special_tokens=[t for t in spec["tokens"] if t not in named],
        padding_side="right",
        truncation_side="left",
        model_max_length=model_max_length,
        model_input_names=["input_ids", "attention_mask"],
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = spec["template"]
    return tok


# --------------------------------------------------------------------------------------------------
# encoders / cross-encoders
# --------------------------------------------------------------------------------------------------


def _bert_config(vocab_size: int, pad_id: int, **kw):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        intermediate_size=INTERMEDIATE_SIZE,
        max_position_embeddings=MAX_POSITIONS,
        type_vocab_size=2,
        initializer_range=INITIALIZER_RANGE,
        pad_token_id=pad_id,
        **kw,
    )


def make_tiny_bert(path, num_labels: int = 1, seed: int = 0):
    """Tiny ``BertForSequenceClassification`` cross-encoder (``num_labels`` logits) + BERT tokenizer."""
    from transformers import BertForSequenceClassification

    p = _prepare_dir(path)
    tok = make_bert_tokenizer()
    config = _bert_config(len(tok), tok.pad_token_id, num_labels=num_labels)
    with _seeded_init(seed):
        model = BertForSequenceClassification(config).eval()
    model.save_pretrained(p)
    tok.save_pretrained(p)
    return path


def make_tiny_bert_encoder(path, seed: int = 0, sentence_transformers: bool = True):
    """Tiny plain ``BertModel`` (bi-encoder) + BERT tokenizer.

    With ``sentence_transformers=True`` also writes ``modules.json`` (Transformer -> Pooling ->
    Normalize), ``1_Pooling/config.json`` (mean pooling) and ``sentence_bert_config.json`` so the
    directory loads with ``sentence_transformers.SentenceTransformer(path)``.
    """
    from transformers import BertModel

    p = _prepare_dir(path)
    tok = make_bert_tokenizer()
    config = _bert_config(len(tok), tok.pad_token_id)
    with _seeded_init(seed):
        model = BertModel(config, add_pooling_layer=True).eval()
    model.save_pretrained(p)
    tok.save_pretrained(p)

    if sentence_transformers:
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]
        (p / "modules.json").write_text(json.dumps(modules, indent=2))
        (p / "1_Pooling").mkdir(exist_ok=True)
        pooling = {
            "word_embedding_dimension": HIDDEN_SIZE,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        }
        (p / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
        (p / "2_Normalize").mkdir(exist_ok=True)
        (p / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": 128, "do_lower_case": False}, indent=2)
        )
        (p / "config_sentence_transformers.json").write_text(
            json.dumps({"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"}, indent=2)
        )
    return path


def make_tiny_deberta_v2(path, num_labels: int = 1, seed: int = 0):
    """Tiny ``DebertaV2ForSequenceClassification`` cross-encoder with the BERT-style tokenizer."""
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    p = _prepare_dir(path)
    tok = make_bert_tokenizer()
    config = DebertaV2Config(
        vocab_size=len(tok),
        hidden_size=HIDDEN_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        intermediate_size=INTERMEDIATE_SIZE,
        max_position_embeddings=MAX_POSITIONS,
        type_vocab_size=0,
        relative_attention=True,
        position_buckets=64,
        max_relative_positions=-1,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        initializer_range=INITIALIZER_RANGE,
        pad_token_id=tok.pad_token_id,
        pooler_hidden_size=HIDDEN_SIZE,
        num_labels=num_labels,
    )
    with _seeded_init(seed):
        model = DebertaV2ForSequenceClassification(config).eval()
    model.save_pretrained(p)
    tok.save_pretrained(p)
    return path


# --------------------------------------------------------------------------------------------------
# causal LMs
# --------------------------------------------------------------------------------------------------


def make_tiny_causal_lm(path, arch: str = "llama", seed: int = 0):
    """Tiny ``LlamaForCausalLM`` (``arch="llama"``) or ``Qwen2ForCausalLM`` (``arch="qwen2"``).

    The tokenizer (see :func:`make_causal_lm_tokenizer`) carries the family's chat template and is saved
    with ``padding_side="right"``. ``generation_config`` has bos/eos/pad ids (eos is a list of the
    family's stop tokens) and ``do_sample=False``.
    """
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    p = _prepare_dir(path)
    tok = make_causal_lm_tokenizer(arch)
    spec = _CAUSAL_SPECIALS[arch]
    stop_ids = [tok.convert_tokens_to_ids(t) for t in spec["stop"]]
    bos_id = tok.bos_token_id if tok.bos_token_id is not None else tok.pad_token_id
    common = dict(
        vocab_size=len(tok),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        initializer_range=INITIALIZER_RANGE,
        bos_token_id=bos_id,
        eos_token_id=stop_ids[0],
        pad_token_id=tok.pad_token_id,
    )
    if arch == "llama":
        config = LlamaConfig(tie_word_embeddings=False, **common)
        cls = LlamaForCausalLM
    else:
        config = Qwen2Config(tie_word_embeddings=True, use_sliding_window=False, **common)
        cls = Qwen2ForCausalLM
    with _seeded_init(seed):
        model = cls(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=bos_id,
        eos_token_id=stop_ids,
        pad_token_id=tok.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(p)
    tok.save_pretrained(p)
    return path


# --------------------------------------------------------------------------------------------------
# LoRA adapters
# --------------------------------------------------------------------------------------------------

_DEFAULT_TARGETS = {
    "bert": ["query", "value"],
    "deberta-v2": ["query_proj", "value_proj"],
    "llama": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
}


def make_tiny_lora_adapter(base_path, adapter_path, target_modules=None, seed: int = 0):
    """Save a PEFT LoRA adapter (r=4) over the tiny model at ``base_path`` into ``adapter_path``.

    The task is detected from ``config.architectures``: ``*ForCausalLM`` -> ``CAUSAL_LM``,
    ``*ForSequenceClassification`` -> ``SEQ_CLS`` (the head goes into ``modules_to_save``), otherwise
    ``FEATURE_EXTRACTION``. ``lora_B`` is randomised (normally it is zero-initialised) so the adapter
    really changes the outputs. ``adapter_config.json`` records ``base_path`` as the base model.
    """
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
    )

    base = str(base_path)
    out = _prepare_dir(adapter_path)
    config = AutoConfig.from_pretrained(base)
    archs = config.architectures or []
    if any(a.endswith("ForCausalLM") for a in archs):
        task, auto_cls = TaskType.CAUSAL_LM, AutoModelForCausalLM
    elif any(a.endswith("ForSequenceClassification") for a in archs):
        task, auto_cls = TaskType.SEQ_CLS, AutoModelForSequenceClassification
    else:
        task, auto_cls = TaskType.FEATURE_EXTRACTION, AutoModel
    if target_modules is None:
        target_modules = _DEFAULT_TARGETS.get(config.model_type)

    model = auto_cls.from_pretrained(base)
    lora_config = LoraConfig(
        task_type=task,
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=target_modules,
    )
    with _seeded_init(seed):
        peft_model = get_peft_model(model, lora_config)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.normal_(mean=0.0, std=0.5)
    peft_model.save_pretrained(out)
    return adapter_path

"""LLM teachers for Reason-to-Rank: direct and comparison reasoning, validated, cached and resumable.

    from reason2rank.teacher import Teacher, PairPolicy
    with Teacher("openai:gpt-4o-mini", store="annotations.jsonl", pairs=PairPolicy(swap=True)) as t:
        print(t.annotate(candidates, tasks=("direct", "compare")).format())

Tasks (versioned prompt templates in ``reason2rank/teacher/prompts/``):

- ``direct``: (query, document) → ``{"relevance": 0-3, "reasoning": str, "evidence": str|null}``;
- ``compare``: (query, document A, document B) → ``{"preferred": "A"|"B"|"tie", "reasoning": str}``;
- ``listwise``: the original R2R form, a window of passages in RankGPT turns → a ranking with
  ``direct_reason``, ``listwise_reason`` and ``direct_answer_sentence`` per passage.

Annotation record (one JSON line in the store; ``schema`` 1)::

    key               sha256[:32] of (task, prompt_version, teacher, qid, query, docids[, options])
    task              "direct" | "compare" | "listwise"
    prompt_version    e.g. "direct/v1";  prompt_sha256: digest of the template file
    teacher           backend name, e.g. "openai:gpt-4o-mini", "hf:/models/qwen"
    qid, query        the query
    docids            [doc] | [A, B] | the window, in prompt order
    options           null, or {"swap": true} for compare asked in both orders
    status            "ok" | "failed" (no valid answer after max_tries) | "inconsistent" (A/B vs B/A disagree)
    output            null when failed; else
                        direct:   {relevance, reasoning, evidence, evidence_found}
                        compare:  {preferred, preferred_doc, reasoning
                                   [, swapped_preferred, swapped_reasoning, consistent, answers]}
                        listwise: {ranking: [docid...], passages: [{docid, identifier, direct_reason,
                                   listwise_reason, direct_answer_sentence, evidence_found}...]}
    flags             repairs and warnings: code_fence, surrounding_text, trailing_comma, python_literal,
                      think_removed, extra_keys:..., relevance_from_string, evidence_missing,
                      evidence_not_found, ...
    error             the last parse/validation error of a failed item, else null
    attempts          every answer: [{raw, error[, order][, truncated]}]; tries = len(attempts)
    prompt_tokens, completion_tokens, doc_cut ("words:300"), elapsed_s, created (UTC ISO time)
"""

from reason2rank.llm.backend import Backend, GenerationResult, make_backend
from reason2rank.teacher.annotate import Teacher, TeacherUnavailable
from reason2rank.teacher.inputs import load_teacher_inputs
from reason2rank.teacher.pairs import PairPolicy, select_pairs
from reason2rank.teacher.parsing import ParseError, evidence_in_text, extract_json
from reason2rank.teacher.prompts import DocCutter, PromptTemplate, builtin_prompt, load_prompts
from reason2rank.teacher.store import AnnotationStore, annotation_key, read_annotations
from reason2rank.teacher.summary import RunSummary, TaskCounts

__all__ = [
    "AnnotationStore",
    "Backend",
    "DocCutter",
    "GenerationResult",
    "PairPolicy",
    "ParseError",
    "PromptTemplate",
    "RunSummary",
    "TaskCounts",
    "Teacher",
    "TeacherUnavailable",
    "annotation_key",
    "builtin_prompt",
    "evidence_in_text",
    "extract_json",
    "load_prompts",
    "load_teacher_inputs",
    "make_backend",
    "read_annotations",
    "select_pairs",
]

"""Constrained decoding (xgrammar) in the local backend: a random tiny model under a JSON schema or a regex can only
produce answers that match it (100 sampled seeds); unconstrained rows of the same batch are untouched."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("xgrammar")
jsonschema = pytest.importorskip("jsonschema")

from reason2rank.llm.backend import GenerationSettings  # noqa: E402
from reason2rank.llm.client import LLM, LLMRequest  # noqa: E402
from reason2rank.llm.transformers_backend import TransformersBackend  # noqa: E402
from reason2rank.teacher.parsing import COMPARE_SCHEMA, DIRECT_SCHEMA  # noqa: E402

BOUNDED = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string", "maxLength": 24},
        "evidence": {"type": ["string", "null"], "maxLength": 12},
        "relevance": {"type": "integer", "enum": [0, 1, 2, 3]},
    },
    "required": ["reasoning", "evidence", "relevance"],
    "additionalProperties": False,
}
PROMPTS = [[{"role": "user", "content": f"grade document {i} for the query, as json"}] for i in range(4)]


@pytest.fixture(scope="module")
def backend(tiny_llama_dir):
    return TransformersBackend(tiny_llama_dir, dtype="fp32", batch_size=4)


def test_a_random_model_under_a_schema_always_gives_schema_valid_json(backend):
    assert backend.constrain is True
    for seed in range(25):  # 4 prompts a batch: 100 sampled answers
        for res in backend.generate(
            PROMPTS, json_schema=BOUNDED, max_new_tokens=96, temperature=1.0, seed=seed
        ):
            assert res.constrained and res.finish_reason == "stop", (seed, res)
            jsonschema.validate(json.loads(res.text), BOUNDED)


def test_an_unbounded_schema_cut_by_the_budget_is_reported_as_cut_never_as_valid(backend):
    for seed in range(5):
        for schema in (DIRECT_SCHEMA, COMPARE_SCHEMA):
            for res in backend.generate(PROMPTS[:2], json_schema=schema, max_new_tokens=40, temperature=1.0,
                                        seed=seed):  # fmt: skip
                if res.finish_reason == "stop":
                    jsonschema.validate(json.loads(res.text), schema)
                else:
                    assert res.finish_reason == "length" and res.constrained


def test_a_regex_constraint_always_matches(backend):
    ranking = r"\[[1-5]\]( > \[[1-5]\]){4}"
    answer = r"<think>[a-z ]{0,20}</think> <answer>\[[1-4]\]</answer>"
    for seed in range(25):
        for pattern in (ranking, answer):
            for res in backend.generate(
                PROMPTS, answer_regex=pattern, max_new_tokens=48, temperature=1.0, seed=seed
            ):
                assert res.constrained and re.fullmatch(pattern, res.text), (seed, res.text)


def test_unconstrained_rows_of_a_batch_are_decoded_as_without_constraints(tiny_llama_dir, backend):
    free = TransformersBackend(tiny_llama_dir, dtype="fp32", batch_size=4, constrain=False)
    assert free.constrain is False and free.identity()["constrain"] is False
    plain = free.generate(PROMPTS, max_new_tokens=12)
    mixed = backend.generate(PROMPTS, json_schema=[BOUNDED, None, BOUNDED, None], max_new_tokens=12)
    assert [r.constrained for r in mixed] == [True, False, True, False]
    assert [mixed[1].text, mixed[3].text] == [plain[1].text, plain[3].text]
    assert not any(r.constrained for r in free.generate(PROMPTS[:1], json_schema=BOUNDED, max_new_tokens=4))


def test_the_llm_client_passes_the_answer_regex_and_caches_it_apart(backend):
    llm = LLM(backend)
    regex = r"\[[1-3]\]( > \[[1-3]\]){2}"
    req = LLMRequest(PROMPTS[0], GenerationSettings(max_new_tokens=20, answer_regex=regex))
    [(res, _)] = llm.generate([req])
    assert res.constrained and re.fullmatch(regex, res.text)
    assert GenerationSettings(answer_regex=regex).key() != GenerationSettings().key()


def test_a_constrained_teacher_never_fails_on_json_and_records_how_each_answer_came(backend, tmp_path):
    from reason2rank import Doc, Query
    from reason2rank.teacher import Teacher

    items = [(Query("q1", "what is a flea"), [Doc("d1", "Fleas are small insects. They bite."),
                                              Doc("d2", "Cats are animals.")])]  # fmt: skip
    with Teacher(backend, store=tmp_path / "ann.jsonl", max_new_tokens=160, max_tries=2) as t:
        t.annotate(items, tasks=("direct", "compare"))
        records = list(t.store.records())
    assert records
    for r in records:
        assert all(a["constrained"] for a in r["attempts"])
        for a in r[
            "attempts"
        ]:  # a random model's answer may be a bad reason or cut by the budget, never broken
            if a["error"] and not a.get("truncated"):
                assert "JSON" not in a["error"] and "missing field" not in a["error"], a["error"]
        for a in r["attempts"][
            1:
        ]:  # a greedy teacher's retry is sampled with a repetition penalty, and says so
            assert "sampled at temperature" in a["change"] and "repetition penalty 1.3" in a["change"]
        assert r["decoding"] == "constrained"  # failed or not, every answer was decoded under the schema


def test_strategies_ask_for_their_answer_format_and_constrained_answers_need_no_repair(tiny_llama_dir):
    import warnings

    import reason2rank
    from reason2rank import Doc, Query

    docs = [
        Doc(f"d{i}", t) for i, t in enumerate(["fleas live long", "cats purr", "paris is big", "flea cycle"])
    ]
    setwise = reason2rank.load(
        tiny_llama_dir, family="setwise", num_child=3, k=2, dtype="fp32", progress=False
    )
    assert re.fullmatch(setwise.answer_regex(4), " C") and not re.fullmatch(setwise.answer_regex(4), " E")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranked = setwise.rerank_batch([(Query("q", "fleas"), docs)])[0]
    assert ranked.info["repaired"] == 0  # the label is forced: nothing to repair
    listwise = reason2rank.load(
        tiny_llama_dir, family="listwise", window=4, stride=2, dtype="fp32", progress=False
    )
    assert re.fullmatch(listwise.answer_regex(4), "[2] > [1] > [4] > [3]")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        listwise.rerank_batch([(Query("q", "fleas"), docs)])
    for record in listwise.llm.log.records:  # ids may repeat (a regex cannot forbid it), but never go missing
        assert "no_ids" not in record.problems
    free = reason2rank.load(tiny_llama_dir, family="listwise", constrain_answers=False, dtype="fp32")
    assert free.settings(10, 4).answer_regex is None and listwise.settings(10, 4).answer_regex


def test_a_bounded_listwise_schema_compiles_and_every_closed_answer_ranks_the_whole_window(backend):
    from reason2rank.teacher.parsing import listwise_schema

    schema = listwise_schema(3, max_chars=6)  # short strings, so a random model closes the JSON in budget
    closed = 0
    for seed in range(3):
        for res in backend.generate(
            PROMPTS, json_schema=schema, max_new_tokens=300, temperature=1.0, seed=seed
        ):
            assert res.constrained
            if res.finish_reason == "stop":
                closed += 1
                obj = json.loads(res.text)
                jsonschema.validate(obj, schema)
                assert len(obj["ranked_passages"]) == 3
    assert closed > 0


def test_evidence_constrained_to_the_documents_sentences_is_always_a_quote(backend):
    from reason2rank.explain.evidence import evidence_in_text
    from reason2rank.teacher.parsing import listwise_schema, quotable_sentences, task_schema

    doc = "Fleas live two to eight months. Eggs hatch in twelve days. Flea markets open on Sunday."
    direct = task_schema("direct", shown=[doc])
    direct["properties"]["reasoning"]["maxLength"] = 16
    window = listwise_schema(
        2, max_chars=6, sentences=[quotable_sentences(doc), ["Bring cash for the market."]]
    )
    quotes = 0
    for seed in range(4):
        for res in backend.generate(
            PROMPTS, json_schema=direct, max_new_tokens=96, temperature=1.0, seed=seed
        ):
            assert res.constrained and res.finish_reason == "stop", res
            ev = json.loads(res.text)["evidence"]
            assert ev is None or (ev in quotable_sentences(doc) and evidence_in_text(ev, doc))
            quotes += ev is not None
        for res in backend.generate(
            PROMPTS[:2], json_schema=window, max_new_tokens=120, temperature=1.0, seed=seed
        ):
            if res.finish_reason == "stop":
                for e in json.loads(res.text)["ranked_passages"]:
                    s = e["direct_answer_sentence"]
                    assert s is None or s in (
                        quotable_sentences(doc) if e["identifier"] == 1 else ["Bring cash for the market."]
                    )
    assert quotes > 0


def test_the_compiled_grammar_cache_is_bounded_and_keeps_the_recent_ones(backend, monkeypatch):
    from reason2rank.llm.constraints import Constraint, ConstraintCompiler

    vocab = int(backend.model.config.get_text_config().vocab_size)
    compiler = ConstraintCompiler.for_tokenizer(backend.tokenizer, vocab, backend.eos_token_ids)
    monkeypatch.setattr(ConstraintCompiler, "MAX_COMPILED", 2)
    schemas = [Constraint.json({"enum": [f"sentence {i}", None]}) for i in range(3)]
    first = compiler.compile(schemas[0])
    compiler.compile(schemas[1])
    assert compiler.compile(schemas[0]) is first  # used again: now the most recent
    compiler.compile(schemas[2])
    assert len(compiler._compiled) == 2 and schemas[1] not in compiler._compiled
    assert compiler.compile(schemas[0]) is first


def test_constrained_answers_keep_the_schemas_key_order_and_a_reason_is_never_empty(backend):
    import re

    from reason2rank.teacher.parsing import MIN_REASON_CHARS, check_reason, reason_pattern, task_schema

    compare = task_schema("compare", max_new_tokens=40)
    assert list(compare["properties"]) == ["reasoning", "preferred"]
    assert compare["properties"]["reasoning"]["pattern"] == reason_pattern(72)
    compare["properties"]["reasoning"].update(
        maxLength=40, pattern=reason_pattern(40)
    )  # a random model closes it
    for seed in range(5):
        for res in backend.generate(
            PROMPTS, json_schema=compare, max_new_tokens=64, temperature=1.0, seed=seed
        ):
            assert res.finish_reason == "stop", res
            assert res.text.startswith('{"reasoning":'), res.text  # the reason first, then the verdict
            reason = json.loads(res.text)["reasoning"]
            assert MIN_REASON_CHARS <= len(reason) <= 40 and re.search(reason_pattern(40), reason)
            check_reason(reason, "reasoning")  # two words at least: never a label or a single token run


def test_utf8_tables_bar_surrogates_and_overlong_forms_across_tokens():
    from reason2rank.llm.constraints import _Utf8Tables

    vocab = [b"a", b"\xed", b"\xb4", b"\x9f", b"\xe0", b"\xa0\x80", b"\xed\xb4\xb0", b"\xe2\x82\xac"]
    t = _Utf8Tables(vocab, set())
    assert t.allowed[0, 6].item() is False  # ED B4 B0 (a surrogate) in one token
    assert t.allowed[0, 7].item() is True  # the euro sign
    pending, lead = t.after(0, None, 1)  # ED: two continuation bytes pending, the first in 80-9F
    assert (pending, lead) == (2, 0xED)
    banned = t.banned(pending, lead, len(vocab))
    assert banned[2].item() and not banned[3].item()  # B4 after ED is a surrogate, 9F is fine
    assert t.after(pending, lead, 3) == (1, None)
    pending, lead = t.after(0, None, 4)  # E0 wants A0-BF next (no overlong form)
    assert not t.banned(pending, lead, len(vocab))[5].item() and t.banned(pending, lead, len(vocab))[3].item()

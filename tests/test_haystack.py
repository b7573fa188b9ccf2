"""R2RRanker, the Haystack adapter: conversion rules, serialisation and a real Pipeline round trip."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import uuid
import warnings

import pytest

pytest.importorskip("haystack")

from haystack import Document, Pipeline  # noqa: E402
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever  # noqa: E402
from haystack.document_stores.in_memory import InMemoryDocumentStore  # noqa: E402
from haystack.utils import ComponentDevice, DeviceMap, Secret  # noqa: E402

import reason2rank  # noqa: E402
from haystack_integrations.components.rankers.reason2rank import R2RRanker  # noqa: E402

QUERY = "what is the capital of france"
TEXTS = [
    "Water is good for health. Drink it every day.",
    "Paris is the capital of France. It has many museums.",
    "London is the capital city of England.",
    "The computer science book is new. Students like it.",
    "Music and movie history. The world is big.",
]
CE_KWARGS = {"family": "cross-encoder", "dtype": "fp32"}
R2R_KEYS = ("r2r_reasoning", "r2r_evidence", "r2r_comparison")
RANKER_TYPE = "haystack_integrations.components.rankers.reason2rank.ranker.R2RRanker"


def make_docs() -> list[Document]:
    return [Document(content=t, meta={"n": i}) for i, t in enumerate(TEXTS)]


@pytest.fixture(scope="module")
def core(tiny_bert_dir):
    """The core reranker the adapter must agree with."""
    return reason2rank.load(tiny_bert_dir, dtype="fp32", family="cross-encoder")


def core_ranking(core, texts, explain=0):
    return core.rerank(QUERY, list(texts), explain=explain)


@pytest.fixture
def count_loads(monkeypatch, core):
    """Replace reason2rank.load with a recorder that returns the already loaded core reranker."""
    calls: list[tuple[str, dict]] = []

    def fake_load(path, **kwargs):
        calls.append((str(path), kwargs))
        return core

    monkeypatch.setattr(reason2rank, "load", fake_load)
    return calls


# -- construction -------------------------------------------------------------------------------------------


def test_init_is_light_and_validates_arguments():
    ranker = R2RRanker(model="/no/such/model/dir")  # nothing loads in __init__
    assert ranker._reranker is None
    with pytest.raises(TypeError):
        R2RRanker("/no/such/model/dir")  # keyword-only
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="top_k must be a positive int"):
            R2RRanker(model="m", top_k=bad)
    with pytest.raises(ValueError, match="explain must be a non-negative int"):
        R2RRanker(model="m", explain=-1)
    with pytest.raises(ValueError, match=r"model_kwargs must not contain \['batch_size', 'device'\]"):
        R2RRanker(model="m", model_kwargs={"device": "cpu", "batch_size": 2})
    with pytest.raises(ValueError, match="ComponentDevice"):
        R2RRanker(model="m", device="cpu")
    device_map = ComponentDevice.from_multiple(DeviceMap.from_hf({"layer.0": 0, "layer.1": "cpu"}))
    with pytest.raises(ValueError, match="single device"):
        R2RRanker(model="m", device=device_map)


def test_reexported_from_haystack_r2r_under_the_allowlisted_namespace():
    import haystack_integrations
    import haystack_r2r

    assert haystack_r2r.R2RRanker is R2RRanker
    assert getattr(haystack_integrations, "__file__", None) is None  # a PEP 420 namespace package
    assert R2RRanker(model="m").to_dict()["type"] == RANKER_TYPE


# -- ranking ------------------------------------------------------------------------------------------------


def test_run_sorts_by_score_and_matches_the_core(tiny_bert_dir, core):
    ranker = R2RRanker(model=tiny_bert_dir, model_kwargs=CE_KWARGS)
    docs = make_docs()
    out = ranker.run(query=QUERY, documents=docs)["documents"]

    expected = core_ranking(core, TEXTS)
    assert [d.content for d in out] == [s.doc.text for s in expected]
    assert [d.score for d in out] == pytest.approx([s.score for s in expected], rel=1e-6, abs=1e-7)
    assert [d.score for d in out] == sorted((d.score for d in out), reverse=True)
    by_content = {d.content: d for d in docs}
    for d in out:
        original = by_content[d.content]
        assert d is not original and d.id == original.id and d.meta == original.meta
        assert not any(k in d.meta for k in R2R_KEYS)  # explain=0: nothing explained


def test_top_k_from_init_and_overridden_at_run(tiny_bert_dir, core):
    ranker = R2RRanker(model=tiny_bert_dir, model_kwargs=CE_KWARGS, top_k=2)
    order = [s.doc.text for s in core_ranking(core, TEXTS)]
    assert [d.content for d in ranker.run(query=QUERY, documents=make_docs())["documents"]] == order[:2]
    out = ranker.run(query=QUERY, documents=make_docs(), top_k=4)["documents"]
    assert [d.content for d in out] == order[:4]
    # overrides are resolved with `is None`: top_k=0 is an error, not "use the default"
    for bad in (0, -3):
        with pytest.raises(ValueError, match="top_k must be a positive int"):
            ranker.run(query=QUERY, documents=make_docs(), top_k=bad)
    with pytest.raises(ValueError, match="top_k must be a positive int"):
        ranker.run(query=QUERY, documents=[], top_k=0)


def test_score_threshold_filters_after_scoring_and_zero_is_applied(tiny_bert_dir, core):
    full = [(s.doc.text, s.score) for s in core_ranking(core, TEXTS)]
    scores = sorted(s for _, s in full)
    middle = scores[len(scores) // 2]

    ranker = R2RRanker(model=tiny_bert_dir, model_kwargs=CE_KWARGS, score_threshold=middle)
    out = ranker.run(query=QUERY, documents=make_docs())["documents"]
    assert [d.content for d in out] == [t for t, s in full if s >= middle]
    assert 0 < len(out) < len(TEXTS)
    # threshold after top_k: top_k=1 keeps the best one, which passes the threshold
    assert [d.content for d in ranker.run(query=QUERY, documents=make_docs(), top_k=1)["documents"]] == [
        full[0][0]
    ]

    # an init threshold that removes everything, overridden with 0.0: the 0.0 must apply (is-None resolution)
    strict = R2RRanker(model=tiny_bert_dir, model_kwargs=CE_KWARGS, score_threshold=1e9)
    assert strict.run(query=QUERY, documents=make_docs())["documents"] == []
    kept = [t for t, s in full if s >= 0.0]
    assert kept, "precondition: some tiny-model scores are >= 0"
    out = strict.run(query=QUERY, documents=make_docs(), score_threshold=0.0)["documents"]
    assert [d.content for d in out] == kept


def test_explain_sets_meta_on_explained_documents_only(tiny_bert_dir, core):
    ranker = R2RRanker(model=tiny_bert_dir, model_kwargs=CE_KWARGS, explain=2)
    docs = make_docs()
    # a stale explanation on an input document must not survive on a document this run does not explain
    docs = [Document(id=d.id, content=d.content, meta={**d.meta, "r2r_evidence": "stale"}) for d in docs]
    out = ranker.run(query=QUERY, documents=docs)["documents"]

    expected = core_ranking(core, TEXTS, explain=2)
    for d, s in zip(out[:2], expected[:2]):
        assert d.content == s.doc.text
        assert d.meta["r2r_reasoning"] == s.reasoning  # None: a cross-encoder cannot generate
        assert d.meta["r2r_comparison"] == s.comparison
        assert d.meta["r2r_evidence"] == s.evidence
        assert d.meta["n"] == TEXTS.index(d.content)
    assert any(d.meta["r2r_evidence"] for d in out[:2])
    for d in out[:2]:
        assert d.meta["r2r_evidence"] is None or d.meta["r2r_evidence"] in d.content
    for d in out[2:]:
        assert not any(k in d.meta for k in R2R_KEYS)

    # explain=0 overrides the init explain=2 (is-None resolution), and never more than top_k are explained
    assert not any(
        k in d.meta for d in ranker.run(query=QUERY, documents=docs, explain=0)["documents"] for k in R2R_KEYS
    )
    one = ranker.run(query=QUERY, documents=docs, top_k=1, explain=4)["documents"]
    assert len(one) == 1 and set(R2R_KEYS) <= set(one[0].meta)
    with pytest.raises(ValueError, match="explain must be a non-negative int"):
        ranker.run(query=QUERY, documents=docs, explain=-1)


def test_explain_with_a_causal_lm_carries_reasoning_and_comparison(tiny_llama_dir):
    kwargs = {"family": "causal-lm", "dtype": "fp32", "max_new_tokens": 6}
    ranker = R2RRanker(model=tiny_llama_dir, model_kwargs=kwargs, explain=2, top_k=3)
    out = ranker.run(query=QUERY, documents=make_docs())["documents"]

    expected = reason2rank.load(tiny_llama_dir, **kwargs).rerank(QUERY, TEXTS, explain=2)
    assert [d.content for d in out] == [s.doc.text for s in expected[:3]]
    for d, s in zip(out[:2], expected[:2]):
        assert isinstance(d.meta["r2r_reasoning"], str) and d.meta["r2r_reasoning"] == s.reasoning
    assert (
        isinstance(out[0].meta["r2r_comparison"], str)
        and out[0].meta["r2r_comparison"] == expected[0].comparison
    )
    assert out[1].meta["r2r_comparison"] is None  # the pair (2nd, 3rd) is outside the explained top 2
    assert not any(k in out[2].meta for k in R2R_KEYS)


def test_duplicate_ids_are_dropped_keeping_the_first(tiny_bert_dir, caplog):
    ranker = R2RRanker(model=tiny_bert_dir, model_kwargs=CE_KWARGS)
    first = Document(id="dup", content=TEXTS[1], meta={"which": "first"})
    second = Document(id="dup", content=TEXTS[0], meta={"which": "second"})
    other = Document(id="other", content=TEXTS[2])
    with caplog.at_level(logging.DEBUG, logger="haystack_integrations.components.rankers.reason2rank.ranker"):
        out = ranker.run(query=QUERY, documents=[first, second, other])["documents"]
    assert sorted(d.id for d in out) == ["dup", "other"]
    dup = next(d for d in out if d.id == "dup")
    assert dup.content == TEXTS[1] and dup.meta == {"which": "first"}
    assert any(
        "dropped 1 document(s)" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records
    )


def test_documents_without_content_are_warned_about_scored_lowest_and_placed_last(tiny_bert_dir):
    ranker = R2RRanker(model=tiny_bert_dir, model_kwargs=CE_KWARGS)
    empty = Document(id="no-text", content=None, meta={"kind": "image"})
    docs = [empty, *make_docs()[:3]]
    with pytest.warns(UserWarning, match=r"1 document\(s\) have no text"):
        out = ranker.run(query=QUERY, documents=docs)["documents"]
    assert len(out) == 4
    assert out[-1].id == "no-text" and out[-1].meta == {"kind": "image"}
    assert all(math.isfinite(d.score) for d in out)  # strict JSON writers accept every score
    assert out[-1].score == pytest.approx(min(d.score for d in out[:-1]) - 1.0)
    json.dumps([d.score for d in out], allow_nan=False)
    # it counts toward top_k (and, being last, is the one cut), and a threshold at the lowest score removes it
    assert [d.id for d in ranker.run(query=QUERY, documents=docs, top_k=3)["documents"]] == [
        d.id for d in out[:3]
    ]
    lowest = min(d.score for d in out[:-1])
    kept = ranker.run(query=QUERY, documents=docs, score_threshold=lowest)["documents"]
    assert [d.id for d in kept] == [d.id for d in out[:-1]]

    # only documents without text: nothing to score, so the model is not even loaded
    lazy = R2RRanker(model="/no/such/model/dir")
    only = lazy.run(query=QUERY, documents=[empty])["documents"]
    assert [(d.id, d.score) for d in only] == [("no-text", -1.0)] and lazy._reranker is None


def test_inputs_are_never_mutated(tiny_bert_dir):
    ranker = R2RRanker(model=tiny_bert_dir, model_kwargs=CE_KWARGS, explain=3, meta_fields_to_embed=["title"])
    docs = [
        Document(content=t, meta={"title": f"t{i}", "tags": ["a"]}, score=float(i))
        for i, t in enumerate(TEXTS)
    ]
    docs.append(Document(content=None, meta={"title": "none"}))
    before = copy.deepcopy(docs)
    ids = [id(d) for d in docs]
    metas = [id(d.meta) for d in docs]

    out = ranker.run(query=QUERY, documents=docs)["documents"]
    assert docs == before
    assert [id(d) for d in docs] == ids and [id(d.meta) for d in docs] == metas
    for d in out:
        assert id(d) not in ids and id(d.meta) not in metas  # new Documents with their own meta dicts
    out[0].meta["added"] = 1
    assert docs == before


def test_meta_fields_to_embed_are_prepended_to_the_text(tiny_bert_dir, core):
    ranker = R2RRanker(
        model=tiny_bert_dir,
        model_kwargs=CE_KWARGS,
        meta_fields_to_embed=["title", "year"],
        embedding_separator=" | ",
    )
    docs = [
        Document(content=TEXTS[0], meta={"title": "health", "year": 2020}),
        Document(content=TEXTS[1], meta={"title": "France"}),  # no year: skipped
        Document(content=TEXTS[2], meta={"title": "", "year": 1999}),  # empty title: skipped
        Document(content=TEXTS[3]),
    ]
    expected_texts = [  # the meta values are read as a title, before the content
        "health | 2020 " + TEXTS[0],
        "France " + TEXTS[1],
        "1999 " + TEXTS[2],
        TEXTS[3],
    ]
    out = ranker.run(query=QUERY, documents=docs)["documents"]
    expected = core_ranking(core, expected_texts)
    assert [d.content for d in out] == [TEXTS[expected_texts.index(s.doc.text)] for s in expected]
    assert [d.score for d in out] == pytest.approx([s.score for s in expected], rel=1e-6, abs=1e-7)
    plain = {s.doc.text: s.score for s in core_ranking(core, TEXTS[:4])}
    assert any(d.score != pytest.approx(plain[d.content], abs=1e-7) for d in out)  # the meta really was read


def test_empty_input_gives_empty_output_without_loading():
    ranker = R2RRanker(model="/no/such/model/dir")
    assert ranker.run(query=QUERY, documents=[]) == {"documents": []}
    assert ranker._reranker is None


def test_a_query_without_text_is_an_error(tiny_bert_dir):
    ranker = R2RRanker(model=tiny_bert_dir, model_kwargs=CE_KWARGS)
    for bad in ("", "   "):
        with pytest.raises(ValueError, match="has no text"):
            ranker.run(query=bad, documents=make_docs())


# -- model loading ------------------------------------------------------------------------------------------


def test_warm_up_is_idempotent_and_passes_device_batch_size_and_token(count_loads, monkeypatch):
    monkeypatch.setenv("R2R_TEST_TOKEN", "hf_secret")
    ranker = R2RRanker(
        model="some/model",
        device=ComponentDevice.from_str("cpu"),
        batch_size=4,
        token=Secret.from_env_var("R2R_TEST_TOKEN", strict=False),
        model_kwargs={"family": "cross-encoder", "max_length": 64},
    )
    ranker.warm_up()
    ranker.warm_up()
    ranker.run(query=QUERY, documents=make_docs())
    asyncio.run(ranker.warm_up_async())
    assert count_loads == [
        (
            "some/model",
            {
                "family": "cross-encoder",
                "max_length": 64,
                "device": "cpu",
                "batch_size": 4,
                "progress": False,
                "token": "hf_secret",
            },
        )
    ]

    # run warms up lazily; an unset token and batch_size are not passed at all
    monkeypatch.delenv("R2R_TEST_TOKEN")
    lazy = R2RRanker(model="other", token=Secret.from_env_var("R2R_TEST_TOKEN", strict=False))
    out = lazy.run(query=QUERY, documents=make_docs())["documents"]
    assert len(out) == len(TEXTS)
    lazy.run(query=QUERY, documents=make_docs())
    assert len(count_loads) == 2
    path, kwargs = count_loads[1]
    assert path == "other" and set(kwargs) == {"device", "progress"} and kwargs["progress"] is False
    assert kwargs["device"] == ComponentDevice.resolve_device(None).to_torch_str()


def test_run_async_returns_what_run_returns(tiny_bert_dir):
    ranker = R2RRanker(model=tiny_bert_dir, model_kwargs=CE_KWARGS, top_k=3, explain=1)
    expected = ranker.run(query=QUERY, documents=make_docs(), score_threshold=-1e9)
    got = asyncio.run(ranker.run_async(query=QUERY, documents=make_docs(), score_threshold=-1e9))
    assert got == expected and len(got["documents"]) == 3
    with pytest.raises(ValueError, match="top_k"):
        asyncio.run(ranker.run_async(query=QUERY, documents=make_docs(), top_k=0))

    cold = R2RRanker(model=tiny_bert_dir, model_kwargs=CE_KWARGS)
    asyncio.run(cold.warm_up_async())  # what Pipeline.run_async calls; loads in a worker thread
    assert cold._reranker is not None


# -- serialisation ------------------------------------------------------------------------------------------


def test_to_dict_from_dict_round_trip():
    ranker = R2RRanker(
        model="owner/model",
        top_k=3,
        score_threshold=0.25,
        explain=2,
        meta_fields_to_embed=["title"],
        embedding_separator=" :: ",
        device=ComponentDevice.from_str("cuda:1"),
        token=Secret.from_env_var("MY_HF_TOKEN", strict=False),
        batch_size=8,
        model_kwargs={"family": "bi-encoder", "dtype": "fp32", "max_length": 256},
        image_root="/data/pages",
    )
    data = ranker.to_dict()
    assert data == {
        "type": RANKER_TYPE,
        "init_parameters": {
            "model": "owner/model",
            "top_k": 3,
            "score_threshold": 0.25,
            "explain": 2,
            "meta_fields_to_embed": ["title"],
            "embedding_separator": " :: ",
            "device": {"type": "single", "device": "cuda:1"},
            "token": {"type": "env_var", "env_vars": ["MY_HF_TOKEN"], "strict": False},
            "batch_size": 8,
            "progress_bar": False,
            "model_kwargs": {"family": "bi-encoder", "dtype": "fp32", "max_length": 256},
            "image_root": "/data/pages",
        },
    }
    frozen = copy.deepcopy(data)
    restored = R2RRanker.from_dict(data)
    assert data == frozen  # from_dict leaves its input alone
    assert restored.to_dict() == data
    assert restored.device == ComponentDevice.from_str("cuda:1")
    assert restored.token == Secret.from_env_var("MY_HF_TOKEN", strict=False)
    assert restored._reranker is None  # deserialising loads nothing

    default = R2RRanker(model="m")
    default_data = default.to_dict()
    assert default_data["init_parameters"]["device"] is None
    assert default_data["init_parameters"]["token"] == {
        "type": "env_var",
        "env_vars": ["HF_API_TOKEN", "HF_TOKEN"],
        "strict": False,
    }
    assert R2RRanker.from_dict(default_data).to_dict() == default_data
    none_token = R2RRanker(model="m", token=None)
    assert R2RRanker.from_dict(none_token.to_dict()).token is None


# -- a real pipeline ----------------------------------------------------------------------------------------

CORPUS = [
    ("paris", "Paris is the capital and largest city of France. It is known for the Eiffel Tower."),
    ("lyon", "Lyon is a city in France known for its food. It lies on the Rhone."),
    ("berlin", "Berlin is the capital of Germany. Its history is long."),
    ("london", "London is the capital of England and the United Kingdom."),
    ("water", "Water covers most of the world. People need water to live."),
    ("music", "Music history in France includes many composers."),
]


def test_pipeline_bm25_then_ranker_survives_a_yaml_round_trip(minilm_dir):
    store = InMemoryDocumentStore(index=f"r2r-test-{uuid.uuid4()}")
    store.write_documents([Document(id=i, content=t, meta={"name": i}) for i, t in CORPUS])
    pipeline = Pipeline()
    pipeline.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=5))
    pipeline.add_component(
        "ranker",
        R2RRanker(
            model=minilm_dir, model_kwargs={"family": "bi-encoder", "dtype": "fp32"}, top_k=3, explain=1
        ),
    )
    pipeline.connect("retriever.documents", "ranker.documents")
    query = "What is the capital of France?"
    inputs = {"retriever": {"query": query}, "ranker": {"query": query}}

    first = pipeline.run(inputs)["ranker"]["documents"]
    assert len(first) == 3 and first[0].id == "paris"
    assert [d.score for d in first] == sorted((d.score for d in first), reverse=True)
    assert first[0].meta["r2r_evidence"] == "Paris is the capital and largest city of France."
    assert first[0].meta["r2r_reasoning"] is None  # a bi-encoder has evidence, not generated reasoning
    assert not any(k in d.meta for d in first[1:] for k in R2R_KEYS)

    yaml = pipeline.dumps()
    assert f"type: {RANKER_TYPE}" in yaml
    loaded = Pipeline.loads(yaml)  # plain loads: haystack_integrations.* is on the default allowlist
    ranker = loaded.get_component("ranker")
    assert isinstance(ranker, R2RRanker) and ranker._reranker is None
    assert ranker.to_dict() == pipeline.get_component("ranker").to_dict()
    second = loaded.run(inputs)["ranker"]["documents"]
    assert second == first

    third = asyncio.run(loaded.run_async(inputs))["ranker"]["documents"]
    assert third == first


def test_repeated_runs_warn_about_truncation_once_and_show_no_bar(tiny_bert_dir, capsys):
    ranker = R2RRanker(
        model=tiny_bert_dir, model_kwargs={**CE_KWARGS, "max_length": 16}, batch_size=2, explain=2
    )
    long_docs = [Document(content=t + " " + t) for t in TEXTS]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for query in (QUERY, "where is london", "music history"):
            ranker.run(query=query, documents=long_docs)
    truncation = [w for w in caught if "truncated" in str(w.message)]
    assert len(truncation) == 1  # then logged, not warned, on every later call and explanation pass
    err = capsys.readouterr().err
    assert "it/s" not in err and "pair/s" not in err and "pair]" not in err


def test_documents_dropped_as_duplicates_are_warned_about(tiny_bert_dir, caplog):
    ranker = R2RRanker(model=tiny_bert_dir, model_kwargs=CE_KWARGS)
    a, b = Document(content=""), Document(content=None)
    assert a.id == b.id  # Haystack derives the id from the content and meta
    with caplog.at_level(logging.WARNING):
        out = ranker.run(query=QUERY, documents=[a, b, *make_docs()[:2]])["documents"]
    assert len(out) == 3
    assert any("dropped 1 document" in r.getMessage() and a.id in r.getMessage() for r in caplog.records)


def test_evidence_is_a_span_of_the_content_never_of_embedded_meta(tiny_bert_dir):
    ranker = R2RRanker(model=tiny_bert_dir, model_kwargs=CE_KWARGS, meta_fields_to_embed=["title"], explain=3)
    docs = [Document(content=t, meta={"title": "What is the capital of France? A title."}) for t in TEXTS[:3]]
    out = ranker.run(query=QUERY, documents=docs)["documents"]
    for d in out[:3]:
        ev = d.meta["r2r_evidence"]
        assert ev is None or ev in d.content

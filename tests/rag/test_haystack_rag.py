"""Omni-RAG in a Haystack pipeline: a scripted ChatGenerator decomposes and answers, InMemory BM25 retrieves per
sub-query, RRF fuses with provenance, a tiny reranker reranks, citations name only kept documents; YAML round-trip."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("haystack")

from haystack import Document, Pipeline, component, default_from_dict, default_to_dict  # noqa: E402
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever  # noqa: E402
from haystack.dataclasses import ChatMessage  # noqa: E402
from haystack.document_stores.in_memory import InMemoryDocumentStore  # noqa: E402

from haystack_r2r import (  # noqa: E402
    R2RCitationPromptBuilder,
    R2RCitedAnswerBuilder,
    R2RMultiQueryRetriever,
    R2RQueryDecomposer,
    R2RRanker,
)
from reason2rank.rag import reciprocal_rank_fusion  # noqa: E402

CORPUS = {
    "v1": "Vitamin D supplements and the risk of hip fractures in older adults.",
    "v2": "Vitamin D and falls: a trial in nursing homes shows fewer falls.",
    "v3": "Calcium intake and bone density in women.",
    "c1": "Coffee consumption and sleep quality.",
    "c2": "Caffeine and heart rate in young adults.",
}
DECOMPOSITION = json.dumps(
    {"query": "vitamin D fractures and falls", "sub_queries": ["hip fractures", "falls"]}
)


@component
class ScriptedChatGenerator:
    """Replies from a script in order, whatever it is asked; a module-level class, so a pipeline round-trips."""

    def __init__(self, replies: list[str]):
        self.replies = list(replies)
        self.seen: list[list[ChatMessage]] = []

    def to_dict(self):
        return default_to_dict(self, replies=self.replies)

    @classmethod
    def from_dict(cls, data):
        return default_from_dict(cls, data)

    @component.output_types(replies=list[ChatMessage])
    def run(self, messages: list[ChatMessage], generation_kwargs: dict | None = None):
        self.seen.append(messages)
        return {"replies": [ChatMessage.from_assistant(self.replies[len(self.seen) - 1])]}


@pytest.fixture()
def store():
    s = InMemoryDocumentStore()
    s.write_documents([Document(id=k, content=v, meta={"title": k.upper()}) for k, v in CORPUS.items()])
    return s


def _pipeline(store, tiny_bert_dir, decomposer_replies, answer_replies):
    p = Pipeline()
    p.add_component("decomposer", R2RQueryDecomposer(
        chat_generator=ScriptedChatGenerator(decomposer_replies), backend_options={"settings": "generator"}))  # fmt: skip
    p.add_component(
        "retriever", R2RMultiQueryRetriever(retriever=InMemoryBM25Retriever(store, top_k=3), top_k=10)
    )
    p.add_component(
        "ranker", R2RRanker(model=tiny_bert_dir, top_k=3, model_kwargs={"family": "cross-encoder"})
    )
    p.add_component("prompt", R2RCitationPromptBuilder(num_docs=2))
    p.add_component("llm", ScriptedChatGenerator(answer_replies))
    p.add_component("answer", R2RCitedAnswerBuilder())
    p.connect("decomposer.queries", "retriever.queries")
    p.connect("retriever.documents", "ranker.documents")
    p.connect("ranker.documents", "prompt.documents")
    p.connect("prompt.prompt", "llm.messages")
    p.connect("prompt.documents", "answer.documents")
    p.connect("llm.replies", "answer.replies")
    return p


def _run(p, q):
    return p.run({"decomposer": {"query": q}, "ranker": {"query": q}, "prompt": {"query": q}, "answer": {"query": q}},
                 include_outputs_from={"retriever", "decomposer", "prompt"})  # fmt: skip


def test_pipeline_runs_keeps_provenance_and_citations_name_kept_documents(store, tiny_bert_dir):
    q = "vitamn d fractures and falls"
    p = _pipeline(
        store, tiny_bert_dir, [DECOMPOSITION], ["<think>[1] is on point</think>Yes [1][2], not [5]."]
    )
    out = _run(p, q)
    assert out["decomposer"]["queries"] == ["vitamin D fractures and falls", "hip fractures", "falls"]
    assert out["decomposer"]["decomposition"]["ok"] is True
    fused = out["retriever"]["documents"]
    bm25 = InMemoryBM25Retriever(store, top_k=3)
    lists = [(s, [d.id for d in bm25.run(query=s)["documents"]]) for s in out["decomposer"]["queries"]]
    hand = reciprocal_rank_fusion(lists)
    assert [d.id for d in fused] == [f.doc_id for f in hand]
    assert [d.score for d in fused] == pytest.approx([f.score for f in hand])
    for d, f in zip(fused, hand):
        assert d.meta["r2r_sub_queries"] == list(f.found_by) and d.meta["r2r_sub_query_ranks"] == dict(
            f.ranks
        )
    kept = out["prompt"]["documents"]
    assert len(kept) == 2
    (answer,) = out["answer"]["answers"]
    assert answer.data == "Yes [1][2], not." and answer.meta["invalid_citations"] == [5]
    assert (
        answer.meta["citations"] == [d.id for d in kept]
        and [d.id for d in answer.documents] == answer.meta["citations"]
    )
    assert answer.meta["reasoning"] == "[1] is on point"
    assert answer.meta["provenance"] == {d.id: d.meta["r2r_sub_queries"] for d in kept}
    user = out["prompt"]["prompt"][-1].text
    assert f"[1] {kept[0].meta['title']}. {kept[0].content}" in user and user.endswith(f"Question: {q}")


def test_pipeline_yaml_round_trip(store, tiny_bert_dir):
    p = _pipeline(store, tiny_bert_dir, [DECOMPOSITION], ["Yes [1]."])
    # our components are under haystack_integrations (on the allowlist); only the test generator needs allowing
    restored = Pipeline.loads(p.dumps(), allowed_modules=[ScriptedChatGenerator.__module__])
    before, after = p.to_dict(), restored.to_dict()
    assert after["components"] == before["components"]

    def edges(d):
        return sorted((c["sender"], c["receiver"]) for c in d["connections"])

    assert edges(after) == edges(before)
    dec = restored.get_component("decomposer")
    assert isinstance(dec.chat_generator, ScriptedChatGenerator) and dec.backend_options == {
        "settings": "generator"
    }
    assert isinstance(restored.get_component("retriever").retriever, InMemoryBM25Retriever)
    out = _run(restored, "vitamin d falls")
    assert out["answer"]["answers"][0].meta["citations"] == [out["prompt"]["documents"][0].id]


def test_bad_decomposition_falls_back_with_a_warning(store):
    dec = R2RQueryDecomposer(chat_generator=ScriptedChatGenerator(["sorry, no JSON"]),
                             backend_options={"settings": "generator"})  # fmt: skip
    with pytest.warns(UserWarning, match="decomposition failed, using the original query alone"):
        out = dec.run(query="coffee and sleep")
    assert out["queries"] == ["coffee and sleep"] and out["decomposition"]["ok"] is False
    with pytest.raises(ValueError, match="query is empty"):
        dec.run(query="  ")
    fifty = json.dumps({"sub_queries": [f"coffee {i}" for i in range(50)]})
    capped = R2RQueryDecomposer(chat_generator=ScriptedChatGenerator([fifty]), max_sub_queries=3,
                                include_query=False, backend_options={"settings": "generator"})  # fmt: skip
    with pytest.warns(UserWarning, match="50 sub-queries, over the cap of 3"):
        assert capped.run(query="coffee")["queries"] == ["coffee 0", "coffee 1", "coffee 2"]


def test_retriever_skips_a_query_that_finds_nothing_and_dedupes(store, caplog):
    class Empty:
        def run(self, query):
            return {
                "documents": []
                if query == "nothing"
                else [Document(id="c1", content="x"), Document(id="c1", content="x")]
            }

    out = R2RMultiQueryRetriever(retriever=Empty()).run(queries=["nothing", "coffee", "coffee", " "])
    assert [d.id for d in out["documents"]] == ["c1"]
    assert out["documents"][0].meta["r2r_sub_queries"] == ["coffee"] and out["documents"][
        0
    ].score == pytest.approx(1 / 61)
    assert "'nothing' retrieved nothing" in caplog.text
    with pytest.raises(ValueError, match="no query to retrieve with"):
        R2RMultiQueryRetriever(retriever=Empty()).run(queries=[])
    original = Document(id="a", content="t", meta={"k": 1})

    class One:
        def run(self, query):
            return {"documents": [original]}

    R2RMultiQueryRetriever(retriever=One()).run(queries=["q"])
    assert original.meta == {"k": 1} and original.score is None  # inputs are never mutated


def test_r2r_chat_generator_runs_a_local_model_and_round_trips(tiny_llama_dir):
    from haystack_r2r import R2RChatGenerator

    gen = R2RChatGenerator(model=f"hf:{tiny_llama_dir}", generation_kwargs={"max_new_tokens": 5})
    reply = gen.run(messages=[ChatMessage.from_user("hello")])["replies"][0]
    again = gen.run(messages=[ChatMessage.from_user("hello")])["replies"][0]
    assert reply.text == again.text and reply.meta["usage"]["completion_tokens"] <= 5  # greedy: deterministic
    assert R2RChatGenerator.from_dict(gen.to_dict()).to_dict() == gen.to_dict()
    with pytest.raises(ValueError, match=r"unsupported generation_kwargs \['beams'\]"):
        R2RChatGenerator(model="hf:x", generation_kwargs={"beams": 2})
    # a random tiny model cannot write the JSON: the decomposer falls back to the original query, warning
    dec = R2RQueryDecomposer(chat_generator=gen, max_new_tokens=8)
    with pytest.warns(UserWarning, match="decomposition failed"):
        assert dec.run(query="coffee sleep")["queries"] == ["coffee sleep"]

"""reason2rank.cascade: windows, selection, aggregation, the cascade reranker, training and both adapters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import reason2rank
from reason2rank.cascade import (
    BM25Selector,
    CascadeReranker,
    IDCMKernelESM,
    KernelSelector,
    WeightedTopK,
    aggregate,
    select_top,
    split_windows,
)
from reason2rank.distill.cascade import distill_esm, kl_list_loss, lambda_pair_loss, train_etm_ranknet
from reason2rank.load import FAMILIES, register_family
from reason2rank.reranker import Reranker
from reason2rank.types import Doc, Query

FILLER = (
    "The history of music and movie is long. Students like the new computer science book. "
    "Water is good for health, drink it every day. The world is big and the city is old. "
)
PLANTED = "Paris is the capital of France and has many museums."
QUERY = "what is the capital of france"


def long_doc(n_filler: int, planted_at: int | None) -> str:
    parts = [FILLER] * n_filler
    if planted_at is not None:
        parts.insert(planted_at, PLANTED + " ")
    return "".join(parts).strip()


@pytest.fixture(scope="module", autouse=True)
def _cascade_family():
    """Register the family for these tests only (until load.FAMILIES lists it), then restore the table."""
    saved = dict(FAMILIES)
    register_family("cascade", "reason2rank.cascade:CascadeReranker")
    yield
    FAMILIES.clear()
    FAMILIES.update(saved)


@pytest.fixture(scope="module")
def tiny_ce(tiny_bert_dir):
    return reason2rank.load(tiny_bert_dir, family="cross-encoder", dtype="fp32", progress=False)


class WordOverlapETM(Reranker):
    """A transparent ETM: score = number of query words in the text; records every pair it scores."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[str, str]]] = []

    def score_texts(self, queries, docs, desc=""):
        self.calls.append(list(zip(queries, docs)))
        return np.array(
            [sum(w in d.lower().split() for w in q.split()) for q, d in zip(queries, docs)], float
        )

    def score_batch(self, items):
        return [self.score_texts([q.text] * len(ds), [d.full_text for d in ds]) for q, ds in items]


class MarkerSelector:
    """A perfect ESM: 1 for windows containing the planted sentence's key words, else 0."""

    name = "perfect"

    def score_windows(self, items):
        return [np.array([float("capital" in w and "france" in w.lower()) for w in ws]) for _, ws in items]


# -- windows ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_tokenizer", [True, False])
def test_window_offsets_reproduce_text_and_tokens(tiny_bert_dir, use_tokenizer):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir) if use_tokenizer else None
    text = "  Héllo, wörld! " + long_doc(6, 3) + "\n\nEnd: e.g. 3.5% (ok)?  "
    size, overlap = 12, 3
    windows = split_windows(text, tok, size=size, overlap=overlap)
    if tok is not None:
        offsets = [
            o
            for o in tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            if o[1] > o[0]
        ]
        ids = tok(text, add_special_tokens=False)["input_ids"]
    else:
        import re

        offsets = [(m.start(), m.end()) for m in re.finditer(r"\w+", text)]
    n, checked = len(offsets), 0
    assert len(windows) == math.ceil(n / size) > 3
    for k, w in enumerate(windows):
        assert w.index == k
        assert w.text == text[w.start : w.end]
        token_start, token_end = max(0, k * size - overlap), min(n, (k + 1) * size + overlap)
        assert (w.start, w.end) == (offsets[token_start][0], offsets[token_end - 1][1])
        # re-tokenising the window's text gives the document's tokens back, where the window starts at a word
        # boundary (a window may start on a word-piece continuation, which re-tokenises as a word start)
        if tok is not None and (w.start == 0 or not text[w.start - 1].isalnum()):
            assert tok(w.text, add_special_tokens=False)["input_ids"] == ids[token_start:token_end]
            checked += 1
    assert tok is None or checked > len(windows) // 2
    # every token is in the core (non-overlap) part of exactly one window
    cores = [t for k in range(len(windows)) for t in range(k * size, min(n, (k + 1) * size))]
    assert cores == list(range(n))
    # batch form, empty text, argument checks
    assert split_windows([text, ""], tok, size=size, overlap=overlap) == [windows, split_windows("", tok)]
    (empty,) = split_windows("   ", tok)
    assert (empty.text, empty.start, empty.end) == ("", 0, 0)
    with pytest.raises(ValueError, match="window_size"):
        split_windows(text, tok, size=0)
    with pytest.raises(ValueError, match="overlap"):
        split_windows(text, tok, overlap=-1)


# -- selection ------------------------------------------------------------------------------------------------
def test_select_top_keeps_document_order_and_breaks_ties_by_position():
    assert select_top(np.array([0.1, 0.9, 0.5, 0.9]), 2) == [1, 3]
    assert select_top(np.array([1.0, 1.0, 1.0]), 2) == [0, 1]
    assert select_top(np.array([0.3, 0.2]), 5) == [0, 1]
    assert select_top(np.array([0.3, 0.2]), None) == [0, 1]


@pytest.mark.parametrize("selector", [MarkerSelector(), "bm25"])
def test_selection_picks_the_planted_window(selector):
    etm = WordOverlapETM()
    cascade = CascadeReranker(etm=etm, selector=selector, top_s=1, window_size=20, overlap=2)
    docs = [Doc(id=f"d{i}", text=long_doc(5, at)) for i, at in enumerate([0, 2, 5])]
    docs.append(Doc(id="none", text=long_doc(5, None)))
    ranked = cascade.rerank(QUERY, docs, explain=4)
    (call,) = etm.calls  # one ETM run, one window per document
    assert len(call) == 4
    for d, (_, window) in zip(docs[:3], call[:3]):
        assert "capital of France" in window and window in d.text
    assert [sd.doc.id for sd in ranked][-1] == "none"
    for sd in ranked:
        if sd.doc.id != "none":
            assert "capital of France" in sd.evidence and sd.evidence in sd.doc.text
    assert cascade.stats["etm_pairs"] == 4 and cascade.stats["docs"] == 4
    assert cascade.stats["windows"] == sum(len(w) for w in cascade.windows([d.text for d in docs]))


def test_bm25_selector_within_document():
    (scores,) = BM25Selector().score_windows(
        [("capital france", ["the capital of france", "paris city", "france"])]
    )
    assert scores[0] > scores[2] > scores[1] == 0.0
    # a term in every window carries less weight than a rare one (idf within the document)
    (s2,) = BM25Selector().score_windows([("city capital", ["city capital", "city", "city"])])
    assert s2[0] > s2[1] == s2[2] > 0


# -- aggregation -----------------------------------------------------------------------------------------------
def test_aggregation_math():
    s = [0.5, 2.0, -1.0, 1.5]
    assert aggregate(s, "max") == 2.0
    assert aggregate(s, "first") == 0.5
    assert aggregate(s, "weighted", [0.5, 0.3, 0.2]) == pytest.approx(0.5 * 2.0 + 0.3 * 1.5 + 0.2 * 0.5)
    assert aggregate([3.0], "weighted", [0.5, 0.3, 0.2]) == pytest.approx(1.5)  # fewer windows than k
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(s, "mean")
    with pytest.raises(ValueError, match="at least one"):
        aggregate([], "max")
    w = WeightedTopK(3, [0.5, 0.3, 0.2])
    assert float(w(torch.tensor(s)).detach()) == pytest.approx(aggregate(s, "weighted", [0.5, 0.3, 0.2]))
    assert float(WeightedTopK(3)(torch.tensor(s)).detach()) == 2.0  # starts as max


def test_first_passage_scores_only_the_first_window():
    etm = WordOverlapETM()
    cascade = CascadeReranker(etm=etm, aggregation="first", window_size=20, overlap=0)
    docs = [Doc(id="late", text=long_doc(4, 4)), Doc(id="early", text=long_doc(4, 0))]
    ranked = cascade.rerank(QUERY, docs)
    assert [len(c) for c in etm.calls] == [2]
    assert ranked[0].doc.id == "early" and ranked[0].score > ranked[1].score


# -- the cascade with a real ETM ---------------------------------------------------------------------------------
def test_cascade_with_all_windows_equals_max_passage_exactly(tiny_ce):
    items = [
        (Query("q1", QUERY), [Doc(id=f"d{i}", text=long_doc(3 + i, i)) for i in range(4)]),
        (
            Query("q2", "music history book"),
            [Doc(id="a", text=long_doc(2, None)), Doc(id="b", text="short text")],
        ),
    ]
    n_max = max(
        len(w) for w in split_windows([d.text for _, ds in items for d in ds], tiny_ce.tokenizer, 30, 5)
    )
    cascade = CascadeReranker(etm=tiny_ce, selector="bm25", top_s=n_max, window_size=30, overlap=5)
    got = cascade.score_batch(items)
    # max-passage by hand: every window of every document through the ETM in one run, max per document
    wins = split_windows([d.text for _, ds in items for d in ds], tiny_ce.tokenizer, 30, 5)
    qs = [q.text for q, ds in items for _ in ds]
    flat = tiny_ce.score_texts(
        [q for q, ws in zip(qs, wins) for _ in ws], [w.text for ws in wins for w in ws]
    )
    expected, start = [], 0
    for ws in wins:
        expected.append(flat[start : start + len(ws)].max())
        start += len(ws)
    np.testing.assert_array_equal(np.concatenate(got), np.array(expected))
    all_windows = CascadeReranker(etm=tiny_ce, selector="all", top_s=None, window_size=30, overlap=5)
    np.testing.assert_array_equal(np.concatenate(all_windows.score_batch(items)), np.array(expected))
    # a smaller s scores fewer pairs and never beats max-passage
    small = CascadeReranker(etm=tiny_ce, selector="bm25", top_s=1, window_size=30, overlap=5)
    assert np.all(np.concatenate(small.score_batch(items)) <= np.array(expected) + 1e-6)
    assert small.stats["etm_pairs"] == 6 < cascade.stats["etm_pairs"] == sum(len(w) for w in wins)


def test_cascade_batches_queries_into_one_etm_run_and_explains_with_best_window(tiny_ce, monkeypatch):
    cascade = CascadeReranker(etm=tiny_ce, top_s=2, window_size=20, overlap=3)
    runs = []
    original = tiny_ce.score_texts
    monkeypatch.setattr(tiny_ce, "score_texts", lambda q, d, desc="": runs.append(len(q)) or original(q, d))
    items = [(QUERY, [long_doc(4, 1), long_doc(3, None)]), ("music book", [long_doc(2, 0)])]
    plain = cascade.rerank_batch(items)
    explained = cascade.rerank_batch(items, explain=1)
    assert runs == [6, 6]  # one run per call, no occlusion passes for the evidence
    for p, e in zip(plain, explained):
        assert [(x.doc.id, x.score) for x in p] == [(x.doc.id, x.score) for x in e]
        assert e[0].evidence and e[0].evidence in e[0].doc.text
        assert all(x.evidence is None for x in e[1:])
        assert e[0].reasoning is None  # a cross-encoder ETM cannot reason
    res = cascade.score_documents([(Query("q", QUERY), [Doc(id="x", text=long_doc(4, 1))])])[0][0]
    kept_scores = cascade.etm.score_texts([QUERY] * len(res.kept), [res.windows[k].text for k in res.kept])
    assert res.best.text == res.windows[res.kept[int(np.argmax(kept_scores))]].text
    assert res.score == pytest.approx(float(kept_scores.max()))  # max aggregation


def test_construction_errors(tiny_ce, tiny_bert_dir):
    with pytest.raises(ValueError, match="needs an ETM"):
        CascadeReranker()
    with pytest.raises(ValueError, match="top_s"):
        CascadeReranker(etm=tiny_ce, top_s=0)
    with pytest.raises(ValueError, match="unknown aggregation"):
        CascadeReranker(etm=tiny_ce, aggregation="mean")
    with pytest.raises(ValueError, match="unknown selector"):
        CascadeReranker(etm=tiny_ce, selector="tfidf")
    with pytest.raises(ValueError, match="selector_model"):
        CascadeReranker(etm=tiny_ce, selector="kernel")
    with pytest.raises(ValueError, match="etm_family"):
        CascadeReranker(tiny_bert_dir)
    with pytest.raises(ValueError, match="built etm"):
        CascadeReranker(etm=tiny_ce, batch_size=4)


def test_load_as_a_family(tiny_bert_dir, tiny_bert_encoder_dir):
    c = reason2rank.load(
        tiny_bert_dir, family="cascade", etm_family="cross-encoder", top_s=2, dtype="fp32", progress=False
    )
    assert isinstance(c, CascadeReranker) and c.etm.family == "cross-encoder" and c.top_s == 2
    assert c.describe()["family"] == "cascade" and "top_s=2" in repr(c)
    b = reason2rank.load(tiny_bert_dir, family="cascade", etm_family="bi-encoder", selector="bi-encoder",
                         selector_model=tiny_bert_encoder_dir, top_s=1, window_size=10, progress=False)  # fmt: skip
    scores = b.rerank(QUERY, [long_doc(3, 1), "water"])
    assert len(scores) == 2 and b.stats["etm_pairs"] == 2 < b.stats["windows"]


# -- kernel ESM and training ---------------------------------------------------------------------------------
def test_idcm_kernel_model_shapes_and_kernels():
    torch.manual_seed(0)
    esm = IDCMKernelESM(torch.randn(20, 8), conv_channels=6)
    assert esm.mus.flatten().tolist() == pytest.approx([1.0 - 0.1 * i for i in range(11)])  # 1.0 ... -0.9
    q = torch.tensor([[1, 2, 0]])
    p = torch.tensor([[3, 4, 5, 6, 0, 0], [3, 4, 5, 6, 7, 8]])
    out = esm(q.expand(2, -1), torch.tensor([[1, 1, 0]] * 2), p, torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6]))
    assert out.shape == (2,)
    # padding (masked) positions do not change the score
    p2 = p.clone()
    p2[0, 4:] = 9
    out2 = esm(
        q.expand(2, -1), torch.tensor([[1, 1, 0]] * 2), p2, torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6])
    )
    assert float(out2[0]) == pytest.approx(float(out[0]), abs=1e-5)
    assert not esm.embedding.weight.requires_grad  # frozen


def test_train_etm_ranknet_lowers_the_loss_and_learns_weights(tiny_bert_dir):
    etm = reason2rank.load(tiny_bert_dir, family="cross-encoder", dtype="fp32", progress=False)
    cascade = CascadeReranker(
        etm=etm, aggregation="weighted", aggregation_weights=[1.0, 0.0], window_size=20, overlap=2
    )
    triples = [(QUERY, long_doc(2, i % 3), long_doc(2, None)) for i in range(3)]

    def loss() -> float:
        s = [cascade.rerank(q, [p, n]) for q, p, n in triples]
        by_id = [{x.doc.id: x.score for x in r} for r in s]
        return float(np.mean([math.log1p(math.exp(d["1"] - d["0"])) for d in by_id]))

    before = loss()
    losses = train_etm_ranknet(cascade, triples, steps=8, lr=1e-3, batch_size=3)
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
    assert loss() < before
    assert cascade.aggregation_weights != [1.0, 0.0] and len(cascade.aggregation_weights) == 2
    assert not etm.model.training


@pytest.mark.parametrize("loss", ["lambda", "kl"])
def test_distill_esm_follows_the_etm_ranking(tiny_bert_dir, tiny_bert_encoder_dir, tmp_path, loss):
    etm = reason2rank.load(tiny_bert_dir, family="cross-encoder", dtype="fp32", progress=False)
    teacher = CascadeReranker(etm=etm, window_size=12, overlap=2)
    selector = KernelSelector.from_pretrained(tiny_bert_encoder_dir, conv_channels=16)
    pairs = [(QUERY, long_doc(2, i)) for i in range(3)] + [("music book history", long_doc(2, 1))]
    wins = teacher.windows([d for _, d in pairs])
    target = [etm.score_texts([q] * len(w), [x.text for x in w]) for (q, _), w in zip(pairs, wins)]
    fn = lambda_pair_loss if loss == "lambda" else kl_list_loss

    def eval_loss() -> float:
        got = selector.score_windows([(q, [x.text for x in w]) for (q, _), w in zip(pairs, wins)])
        return float(
            np.mean(
                [
                    float(fn(torch.tensor(s, dtype=torch.float32), torch.tensor(t, dtype=torch.float32)))
                    for s, t in zip(got, target)
                ]
            )
        )

    before = eval_loss()
    losses = distill_esm(selector, teacher, pairs, steps=25, lr=3e-3, loss=loss, batch_size=4)
    assert len(losses) == 25 and eval_loss() < before
    # save / load round trip, and the cascade opens it by name
    selector.save(tmp_path / "esm")
    again = KernelSelector.load(tmp_path / "esm")
    items = [(QUERY, [x.text for x in wins[0]])]
    np.testing.assert_allclose(
        again.score_windows(items)[0], selector.score_windows(items)[0], rtol=1e-5, atol=1e-6
    )
    c = CascadeReranker(
        etm=etm, selector="kernel", selector_model=str(tmp_path / "esm"), top_s=1, window_size=12, overlap=2
    )
    c.rerank(QUERY, [pairs[0][1]])
    assert c.stats["etm_pairs"] == 1
    with pytest.raises(ValueError, match="unknown loss"):
        distill_esm(selector, teacher, pairs, loss="mse")


def test_loss_functions():
    t = torch.tensor([3.0, 1.0, 2.0])
    good, bad = torch.tensor([3.0, 1.0, 2.0]), torch.tensor([1.0, 3.0, 2.0])
    assert lambda_pair_loss(good, t) < lambda_pair_loss(bad, t)
    assert float(kl_list_loss(t, t)) == pytest.approx(0.0, abs=1e-7) and kl_list_loss(bad, t) > 0
    assert float(lambda_pair_loss(good, torch.zeros(3))) == 0.0  # no ordered pairs


# -- the real MiniLM ETM ----------------------------------------------------------------------------------------------
def test_minilm_cascade_finds_the_planted_passage(minilm_dir):
    cascade = reason2rank.load(minilm_dir, family="cascade", etm_family="bi-encoder", top_s=2, progress=False)
    docs = [Doc(id="rel", text=long_doc(8, 5)), Doc(id="nonrel", text=long_doc(8, None))]
    ranked = cascade.rerank(QUERY, docs, explain=1)
    assert ranked[0].doc.id == "rel" and "capital of France" in ranked[0].evidence
    assert cascade.stats["etm_pairs"] == 4 < cascade.stats["windows"]


# -- adapters -----------------------------------------------------------------------------------------------------------
def test_pyterrier_adapter_takes_the_cascade(tiny_ce, tiny_bert_dir):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyterrier")
    from pt_r2r import R2RReranker

    cascade = CascadeReranker(etm=tiny_ce, top_s=2, window_size=20, overlap=3)
    texts = [long_doc(3, 1), long_doc(3, None), "paris"]
    inp = pd.DataFrame(
        {
            "qid": ["1"] * 3,
            "query": [QUERY] * 3,
            "docno": ["a", "b", "c"],
            "text": texts,
            "score": [3.0, 2.0, 1.0],
        }
    )
    out = R2RReranker(cascade, explain=1).transform(inp)
    core = cascade.rerank(QUERY, [Doc(id=d, text=t) for d, t in zip("abc", texts)], explain=1)
    assert out["docno"].tolist() == [sd.doc.id for sd in core]
    assert out["rank"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(out["score"].to_numpy(), [sd.score for sd in core])
    assert out["evidence"].iloc[0] == core[0].evidence and out["evidence"].iloc[1:].isna().all()
    by_path = R2RReranker(tiny_bert_dir, family="cascade", etm_family="cross-encoder", top_s=2, dtype="fp32",
                          verbose=False)  # fmt: skip
    assert "family='cascade'" in repr(by_path)
    assert isinstance(by_path.reranker, CascadeReranker)


def test_haystack_ranker_with_cascade_model_kwargs(tiny_bert_dir):
    pytest.importorskip("haystack")
    from haystack import Document

    from haystack_integrations.components.rankers.reason2rank import R2RRanker

    kwargs = {"family": "cascade", "etm_family": "cross-encoder", "top_s": 2, "window_size": 20, "overlap": 3}
    ranker = R2RRanker(model=tiny_bert_dir, model_kwargs=kwargs, explain=1, top_k=2)
    again = R2RRanker.from_dict(ranker.to_dict())
    docs = [Document(content=long_doc(3, 1)), Document(content=long_doc(3, None)), Document(content="water")]
    out = again.run(query=QUERY, documents=docs)["documents"]
    assert isinstance(again._reranker, CascadeReranker) and len(out) == 2
    assert out[0].meta["r2r_evidence"] and out[0].meta["r2r_evidence"] in out[0].content
    assert "r2r_evidence" not in out[1].meta
    assert docs[0].score is None  # inputs untouched


def test_save_and_load_round_trip(tiny_bert_dir, tiny_bert_encoder_dir, tmp_path):
    etm = reason2rank.load(tiny_bert_dir, family="cross-encoder", dtype="fp32", progress=False)
    selector = KernelSelector.from_pretrained(tiny_bert_encoder_dir, conv_channels=8)
    cascade = CascadeReranker(etm=etm, selector=selector, top_s=2, window_size=15, overlap=2,
                              aggregation="weighted", aggregation_weights=[0.7, 0.3])  # fmt: skip
    docs = [long_doc(3, 1), long_doc(3, None), "water"]
    expected = [(x.doc.id, x.score) for x in cascade.rerank(QUERY, docs)]
    cascade.save(tmp_path / "cascade")
    again = reason2rank.load(tmp_path / "cascade", dtype="fp32", progress=False)
    assert isinstance(again, CascadeReranker) and isinstance(again.selector, KernelSelector)
    assert (again.top_s, again.window_size, again.overlap, again.aggregation) == (2, 15, 2, "weighted")
    got = [(x.doc.id, x.score) for x in again.rerank(QUERY, docs)]
    assert [g[0] for g in got] == [e[0] for e in expected]
    np.testing.assert_allclose([g[1] for g in got], [e[1] for e in expected], rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="custom selector"):
        CascadeReranker(etm=etm, selector=MarkerSelector()).save(tmp_path / "x")


def test_pt_r2r_cascade_factory_builds_a_cascade_reranker(tiny_bert_dir):
    import pandas as pd

    import pt_r2r
    from reason2rank.cascade import CascadeReranker

    stage = pt_r2r.R2RCascade(tiny_bert_dir, etm_family="cross-encoder", top_s=2, verbose=False)
    frame = pd.DataFrame(
        {"qid": ["q"] * 2, "query": ["capital of france"] * 2, "docno": ["a", "b"],
         "text": ["cats sleep. " * 40 + "paris is the capital of france.", "dogs bark. " * 40], "score": [1.0, 2.0]}
    )  # fmt: skip
    out = stage(frame)
    assert isinstance(stage.reranker, CascadeReranker) and stage.reranker.top_s == 2
    assert list(out["rank"]) == [0, 1] and set(out.docno) == {"a", "b"}

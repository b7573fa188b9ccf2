"""PyTerrier adapter (pt_r2r): conventions, equality with the core, explanations, text loading, and a real
pyterrier-pisa BM25 >> TextLoader >> R2RReranker pipeline in pt.Experiment. No Java/Terrier side is used."""

from __future__ import annotations

import json
from collections import namedtuple

import numpy as np
import pandas as pd
import pytest

pt = pytest.importorskip("pyterrier")

import pt_r2r  # noqa: E402
import reason2rank  # noqa: E402
from pt_r2r import MissingDocumentsError, R2RReranker, TextLoader  # noqa: E402
from reason2rank import Doc, Query  # noqa: E402

FP32 = {"dtype": "fp32"}
DOCS = {
    "d1": "paris is the capital of france. it is a large city.",
    "d2": "the cat sat on the mat.",
    "d3": "france is a country in europe and its capital city is paris",
    "d4": "bananas are yellow. they grow in warm places.",
    "d5": "",
}


def _results() -> pd.DataFrame:
    """A first-stage result frame: unsorted qids, first-stage score/rank and an extra column to keep."""
    rows = [
        ("q2", "why do cats sit on mats", "d2", 9.0, 0),
        ("q2", "why do cats sit on mats", "d4", 8.0, 1),
        ("q2", "why do cats sit on mats", "d1", 7.0, 2),
        ("q1", "what is the capital of france", "d4", 3.0, 0),
        ("q1", "what is the capital of france", "d1", 2.0, 1),
        ("q1", "what is the capital of france", "d3", 1.5, 2),
        ("q1", "what is the capital of france", "d5", 1.0, 3),
        ("q1", "what is the capital of france", "d2", 0.5, 4),
    ]
    df = pd.DataFrame(rows, columns=["qid", "query", "docno", "score", "rank"])
    df["text"] = df["docno"].map(DOCS)
    df["first_stage"] = df["score"] * 10
    return df


def _core_items(df: pd.DataFrame) -> list[tuple[Query, list[Doc]]]:
    items = []
    for qid, g in df.groupby("qid", sort=False):
        items.append((Query(qid, g["query"].iloc[0]), [Doc(d, t) for d, t in zip(g["docno"], g["text"])]))
    return items


@pytest.fixture(scope="module")
def tiny_ce(tiny_bert_dir):
    """The tiny cross-encoder as a core Reranker (shared by the tests that pass an instance)."""
    return reason2rank.load(tiny_bert_dir, family="cross-encoder", progress=False, **FP32)


# --- PyTerrier's own transformer contract (inspection, schematic); never loads a model ------------------------
TestR2RRerankerContract = pt.testing.transformer_test_class(
    lambda: R2RReranker("no-such-dir/model", explain=2, family="cross-encoder")
)
TestTextLoaderContract = pt.testing.transformer_test_class(lambda: TextLoader({"d1": "some text"}))
TestLoaderThenRerankerContract = pt.testing.transformer_test_class(
    lambda: TextLoader({"d1": "some text"}) >> R2RReranker("no-such-dir/model", family="cross-encoder")
)


def test_inspection_reports_inputs_outputs_and_short_label():
    r = R2RReranker("no-such-dir/model")
    assert pt.inspect.transformer_inputs(r) == [["qid", "docno", "query", "text"]]
    outputs = pt.inspect.transformer_outputs(r, ["qid", "query", "docno", "text"])
    assert outputs == ["qid", "query", "docno", "text", "score", "rank"]
    explaining = R2RReranker("no-such-dir/model", explain=3)
    assert pt.inspect.transformer_outputs(explaining, ["qid", "query", "docno", "text"])[-3:] == [
        "reasoning",
        "evidence",
        "comparison",
    ]
    assert pt.schematic.transformer_schematic(r)["label"] == "R2RReranker"
    assert repr(r) == "R2RReranker('no-such-dir/model')"
    assert (
        repr(R2RReranker("m", family="bi-encoder", explain=2))
        == "R2RReranker('m', family='bi-encoder', explain=2)"
    )
    assert r._reranker is None  # inspection ran transform on empty frames only


# --- conventions and equality with the core -----------------------------------------------------------------
def test_conventions_and_scores_equal_one_core_call(tiny_ce, monkeypatch):
    inp = _results()
    before = inp.copy()
    calls = []
    real = tiny_ce.rerank_batch
    monkeypatch.setattr(
        tiny_ce, "rerank_batch", lambda items, explain=0: calls.append(len(items)) or real(items, explain)
    )

    out = R2RReranker(tiny_ce)(inp)

    pd.testing.assert_frame_equal(inp, before)  # input untouched
    assert calls == [2]  # one rerank_batch call for the whole frame (both queries)
    assert list(out.columns) == list(inp.columns)  # every input column kept, nothing added
    assert len(out) == len(inp)
    assert out["qid"].tolist() == ["q1"] * 5 + ["q2"] * 3  # sorted by qid, then rank
    for _, g in out.groupby("qid"):
        assert g["rank"].tolist() == list(range(len(g)))  # 0-based
        assert (np.diff(g["score"].to_numpy()) <= 0).all()
    # score replaced by the core's score; the other columns travel with their row
    want = {(q.id, sd.doc.id): sd for (q, _), r in zip(_core_items(inp), real(_core_items(inp))) for sd in r}
    for row in out.itertuples():
        sd = want[(row.qid, row.docno)]
        assert row.score == pytest.approx(sd.score, abs=1e-9)
        assert row.rank == sd.rank
        assert row.first_stage == before.set_index(["qid", "docno"]).loc[(row.qid, row.docno), "first_stage"]
    assert out["rank"].dtype.kind == "i" and out["score"].dtype == np.float64


def test_loads_by_path_once_with_load_kwargs(tiny_bert_dir, tiny_ce):
    r = R2RReranker(tiny_bert_dir, batch_size=2, verbose=False, family="cross-encoder", **FP32)
    first = r(_results())
    model = r.reranker
    assert model.engine.batch_size == 2 and model.engine.progress is False
    second = r(_results())
    assert r.reranker is model  # loaded once
    pd.testing.assert_frame_equal(first, second)
    pd.testing.assert_frame_equal(first, R2RReranker(tiny_ce)(_results()))


def test_empty_input_returns_at_once_without_loading(tmp_path):
    missing = str(tmp_path / "not-a-model")
    r = R2RReranker(missing, family="cross-encoder", explain=2)
    empty = _results().iloc[:0]
    out = r(empty)
    assert len(out) == 0
    assert list(out.columns) == list(empty.columns) + ["reasoning", "evidence", "comparison"]
    assert out["score"].dtype == np.float64 and out["rank"].dtype == np.int64
    no_score = pd.DataFrame(columns=["qid", "query", "docno", "text"])
    assert list(R2RReranker(missing)(no_score).columns) == ["qid", "query", "docno", "text", "score", "rank"]
    assert r._reranker is None
    with pytest.raises(FileNotFoundError):  # proof that a load would have failed
        r(_results())


def test_explanations_only_for_top_k_and_equal_to_core(tiny_llama_dir):
    model = reason2rank.load(tiny_llama_dir, family="causal-lm", max_new_tokens=6, progress=False, **FP32)
    inp = _results()
    out = R2RReranker(model, explain=2)(inp)
    core = model.rerank_batch(_core_items(inp), explain=2)
    want = {(q.id, sd.doc.id): sd for (q, _), r in zip(_core_items(inp), core) for sd in r}
    assert list(out.columns) == list(inp.columns) + ["reasoning", "evidence", "comparison"]
    for row in out.itertuples():
        sd = want[(row.qid, row.docno)]
        for col in ("reasoning", "evidence", "comparison"):
            assert getattr(row, col) == getattr(sd, col)
        if row.rank >= 2:
            assert row.reasoning is None and row.evidence is None and row.comparison is None
    top = out[out["rank"] < 2]
    assert top["reasoning"].map(lambda v: isinstance(v, str) and v != "").all()
    assert top[top["rank"] == 0]["comparison"].map(lambda v: isinstance(v, str)).all()
    assert "reasoning" not in R2RReranker(model)(inp).columns  # explain=0: no explanation columns


def test_title_field_is_read_with_the_text(tiny_ce):
    inp = _results()
    inp["title"] = ["Cats"] * 3 + ["Paris", None, "France", "Empty", np.nan]
    out = R2RReranker(tiny_ce, title_field="title")(inp)
    items = [
        (q, [Doc(d.id, d.text, title=t if isinstance(t, str) else None) for d, t in zip(docs, g["title"])])
        for (q, docs), (_, g) in zip(_core_items(inp), inp.groupby("qid", sort=False))
    ]
    want = {(q.id, sd.doc.id): sd.score for (q, _), r in zip(items, tiny_ce.rerank_batch(items)) for sd in r}
    got = {(r.qid, r.docno): r.score for r in out.itertuples()}
    assert got == pytest.approx(want)
    untitled = {(r.qid, r.docno): r.score for r in R2RReranker(tiny_ce)(inp).itertuples()}
    assert got[("q1", "d4")] != pytest.approx(untitled[("q1", "d4")])  # the title was read
    assert got[("q1", "d1")] == pytest.approx(untitled[("q1", "d1")])  # None title: no title
    assert got[("q1", "d2")] == pytest.approx(untitled[("q1", "d2")])  # NaN title: no title


def test_rank_cutoff_before_and_after(tiny_ce):
    results = _results()
    source = pt.Transformer.from_df(results.drop(columns=["query"]))
    topics = results[["qid", "query"]].drop_duplicates()
    reranker = R2RReranker(tiny_ce)

    before = (source % 2 >> reranker)(topics)  # rerank only the first-stage top 2
    assert sorted(zip(before.qid, before.docno)) == [("q1", "d1"), ("q1", "d4"), ("q2", "d2"), ("q2", "d4")]
    assert before.groupby("qid")["rank"].apply(list).tolist() == [[0, 1], [0, 1]]

    full = (source >> reranker)(topics)
    after = (source >> reranker % 2)(topics)  # rerank everything, keep the reranker's top 2
    pd.testing.assert_frame_equal(after, full[full["rank"] < 2].reset_index(drop=True))


# --- errors ---------------------------------------------------------------------------------------------------
def test_missing_text_column_names_it_and_shows_the_fix(tiny_ce):
    inp = _results().drop(columns=["text"])
    with pytest.raises(pt.validate.InputValidationError) as e:
        R2RReranker(tiny_ce)(inp)
    msg = str(e.value)
    assert "needs a 'text' column" in msg
    assert "add one with: pipeline = bm25 >> pt_r2r.TextLoader('corpus.jsonl') >> reranker" in msg
    with pytest.raises(
        pt.validate.InputValidationError, match=r"TextLoader\('corpus.jsonl', text_field='body'\)"
    ):
        R2RReranker(tiny_ce, text_field="body")(inp)
    with pytest.raises(pt.validate.InputValidationError, match="query"):  # other columns: pyterrier's message
        R2RReranker(tiny_ce)(_results().drop(columns=["query"]))


def test_frame_to_items_groups_in_first_appearance_order_with_missing_text_as_none():
    from pt_r2r.frames import frame_to_items

    frame = pd.DataFrame(
        {"qid": ["q2", "q1", "q1", "q1"], "query": ["cats", "fleas", "fleas", "fleas"],
         "docno": ["x", "a", "b", "c"], "text": ["Cats purr.", "A text.", None, "C text."],
         "title": ["T", None, "B title", float("nan")]}
    )  # fmt: skip
    items, rows = frame_to_items(frame, "text", "title")
    assert [q.id for q, _ in items] == ["q2", "q1"]
    assert [d.id for d in items[1][1]] == ["a", "b", "c"]  # row order within a query, as PyTerrier keeps it
    assert items[1][1][1] == Doc("b", None, title="B title") and items[1][1][2].title is None
    assert rows == [(0, 0), (1, 0), (1, 1), (1, 2)]


def test_rows_without_text_rank_last_with_a_finite_score_and_one_warning(tiny_ce):
    frame = _results()
    frame.loc[frame.docno == "d3", "text"] = None
    with pytest.warns(UserWarning, match=r"1 document\(s\) have no text .*q1/d3") as caught:
        out = R2RReranker(tiny_ce)(frame)
    assert sum("have no text" in str(w.message) for w in caught) == 1
    q1 = out[out.qid == "q1"]
    last = q1.iloc[-1]
    assert last.docno == "d3" and last["rank"] == 4
    assert np.isfinite(last.score) and last.score == pytest.approx(q1.score.iloc[:-1].min() - 1.0)


def test_duplicate_rows_raise_the_core_message(tiny_ce):
    inp = pd.concat([_results(), _results().iloc[[3]]], ignore_index=True)
    with pytest.raises(ValueError, match=r"query 'q1' has duplicate doc ids \['d4'\]"):
        R2RReranker(tiny_ce)(inp)


def test_bad_arguments():
    with pytest.raises(ValueError, match="explain"):
        R2RReranker("m", explain=-1)
    with pytest.raises(TypeError, match="model must be"):
        R2RReranker(42)


def test_built_reranker_refuses_loading_options(tiny_ce):
    with pytest.raises(ValueError, match=r"\['batch_size', 'dtype'\]"):
        R2RReranker(tiny_ce, batch_size=4, dtype="fp32")


# --- TextLoader -------------------------------------------------------------------------------------------------
def _bare(docnos=("d3", "d1", "d3")) -> pd.DataFrame:
    return pd.DataFrame({"qid": ["q1"] * len(docnos), "query": ["x"] * len(docnos), "docno": list(docnos)})


def test_text_loader_from_dict_of_text_and_docs():
    out = TextLoader(DOCS)(_bare())
    assert out["text"].tolist() == [DOCS["d3"], DOCS["d1"], DOCS["d3"]]
    assert list(out.columns) == ["qid", "query", "docno", "text"]
    docs = {k: Doc(k, v, title=k.upper()) for k, v in DOCS.items()}
    out = pt_r2r.text(docs, title_field="title")(_bare())
    assert out["title"].tolist() == ["D3", "D1", "D3"] and out["text"].tolist()[1] == DOCS["d1"]


def test_text_loader_from_dataframe_and_replaces_existing_text():
    frame = pd.DataFrame({"id": list(DOCS), "body": list(DOCS.values()), "title": ["T"] * 4 + [None]})
    loader = TextLoader(frame, text_field="body", title_field="title", docno_field="id")
    inp = _bare().rename(columns={"docno": "id"}).assign(body="stale")
    out = loader(inp)
    assert out["body"].tolist() == [DOCS["d3"], DOCS["d1"], DOCS["d3"]]
    assert out["title"].tolist() == ["T", "T", "T"]
    assert loader(inp.assign(id=["d5"] * 3))["title"].tolist() == [None] * 3  # None stays None, not NaN
    with pytest.raises(ValueError, match="duplicate 'docno'"):
        TextLoader(pd.DataFrame({"docno": ["a", "a"], "text": ["x", "y"]}))
    with pytest.raises(ValueError, match="no 'text' column"):
        TextLoader(pd.DataFrame({"docno": ["a"], "body": ["x"]}))


def test_text_loader_from_jsonl(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text(
        "".join(json.dumps({"_id": k, "title": f"title {k}", "text": v}) + "\n" for k, v in DOCS.items()),
        encoding="utf-8",
    )
    loader = TextLoader(str(path), title_field="title")
    out = loader(_bare())
    assert out["text"].tolist() == [DOCS["d3"], DOCS["d1"], DOCS["d3"]]
    assert out["title"].tolist() == ["title d3", "title d1", "title d3"]
    with pytest.raises(FileNotFoundError, match="no corpus file"):
        TextLoader(str(tmp_path / "nope.jsonl"))


_IrdsDoc = namedtuple("_IrdsDoc", ["doc_id", "title", "text", "url"])
_IrdsBody = namedtuple("_IrdsBody", ["doc_id", "body"])


class _FakeDocstore:
    """The part of ir_datasets' docstore API the loader uses: get_many(ids) -> {id: namedtuple}."""

    def __init__(self, docs):
        self.docs = docs
        self.calls = []

    def get_many(self, doc_ids):
        doc_ids = list(doc_ids)
        self.calls.append(doc_ids)
        return {i: self.docs[i] for i in doc_ids if i in self.docs}


class _FakeDataset:
    def __init__(self, store):
        self.store = store

    def docs_store(self):
        return self.store


def test_text_loader_from_ir_datasets_docstore():
    store = _FakeDocstore({k: _IrdsDoc(k, f"T{k}", v, "http://x") for k, v in DOCS.items()})
    out = TextLoader(store, title_field="title")(_bare())
    assert out["text"].tolist() == [DOCS["d3"], DOCS["d1"], DOCS["d3"]]
    assert out["title"].tolist() == ["Td3", "Td1", "Td3"]
    assert store.calls == [["d3", "d1"]]  # one call, each id once
    out = TextLoader(_FakeDataset(store))(_bare())  # a dataset: its docs_store() is used
    assert out["text"].tolist()[1] == DOCS["d1"]
    body = _FakeDocstore({"d1": _IrdsBody("d1", "b1")})
    assert TextLoader(body, text_field="body")(_bare(["d1"]))["body"].tolist() == ["b1"]
    with pytest.raises(ValueError, match="docstore records have no 'text' field"):
        TextLoader(body)(_bare(["d1"]))


def test_text_loader_missing_docnos_lists_up_to_five():
    ids = [f"m{i}" for i in range(7)]
    with pytest.raises(MissingDocumentsError) as e:
        TextLoader(DOCS)(_bare(["d1", *ids, "m0"]))
    assert isinstance(e.value, ValueError) and isinstance(e.value, KeyError)
    msg = str(e.value)
    assert msg.startswith(
        "TextLoader: 7 docno(s) not found in <dict of 5 docs>: 'm0', 'm1', 'm2', 'm3', 'm4' ..."
    )
    assert "'m5'" not in msg and e.value.missing == ids
    with pytest.raises(ValueError, match="'gone'"):
        TextLoader(_FakeDocstore({}))(_bare(["gone"]))


def test_text_loader_conventions():
    loader = TextLoader(DOCS)
    empty = loader(_bare([]))
    assert list(empty.columns) == ["qid", "query", "docno", "text"] and len(empty) == 0
    with pytest.raises(pt.validate.InputValidationError):
        loader(pd.DataFrame({"qid": ["q"]}))
    ranked = _bare(["d1", "d2", "d3"]).assign(rank=[0, 1, 2], score=[3.0, 2.0, 1.0])
    assert (loader % 2)(ranked)["docno"].tolist() == ["d1", "d2"]  # % k fuses in front of the loader
    assert repr(TextLoader(DOCS, text_field="body")) == "TextLoader(<dict of 5 docs>, text_field='body')"
    with pytest.raises(TypeError, match="cannot read documents from a int"):
        TextLoader(3)


def test_r2r_teacher_is_lazy_and_its_absence_does_not_break_import(monkeypatch):
    import importlib.util
    import sys

    assert {"R2RReranker", "TextLoader", "text", "R2RTeacher"} <= set(dir(pt_r2r))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pt_r2r.nope  # noqa: B018
    monkeypatch.delitem(pt_r2r.__dict__, "R2RTeacher", raising=False)  # drop a cached lookup
    monkeypatch.setitem(sys.modules, "pt_r2r.teacher", None)  # the teacher module cannot be imported
    assert importlib.reload(pt_r2r).R2RReranker is R2RReranker
    with pytest.raises(AttributeError, match="R2RTeacher is not available"):
        pt_r2r.R2RTeacher  # noqa: B018
    monkeypatch.delitem(sys.modules, "pt_r2r.teacher")
    if importlib.util.find_spec("pt_r2r.teacher") is not None:  # present: loaded on first access
        assert pt_r2r.R2RTeacher.__name__ == "R2RTeacher"


# --- end to end: pyterrier-pisa BM25 >> TextLoader >> R2RReranker (all-MiniLM-L6-v2) in pt.Experiment ---------
# each topic: (query, the one relevant doc, lexical distractors that out-score it on BM25)
PLANTED = [
    ("how do i fix a flat bicycle tire",
     "Repairing a punctured bicycle tyre: take the wheel off, find the hole in the inner tube and glue a rubber patch over it.",
     ["A flat fee applies: how do I book a bicycle tour of the city?",
      "Fix the flat roof before winter and you will never tire of the view.",
      "Bicycle racing results: the flat stage was won in a sprint finish."]),
    ("what's the capital of australia?",
     "Canberra, not Sydney, is the seat of the Australian federal government and the nation's capital.",
     ["Venture capital firms in Australia raised record funds this year.",
      "Australia's cricket team won the test match; capital gains tax is explained below.",
      "What is capital? In economics it means money used to make more money, in Australia and elsewhere."]),
    ("symptoms of vitamin d deficiency",
     "People low on vitamin D from too little sunshine often feel tired, get aching bones and weak muscles.",
     ["Vitamin shop opening hours, and a deficiency of parking spaces in the town centre.",
      "Symptoms of a slow laptop: fans running loudly and programs that freeze.",
      "Plan D: the deficiency in the city budget will be covered by a bank loan."]),
    ("how to boil an egg",
     "Lower the eggs into simmering water, cook for seven minutes for a jammy yolk, then cool them in ice water.",
     ["An egg a day: how to keep chickens happy in the garden.",
      "Boil the kettle for tea; how long depends on how much water is in it.",
      "How to paint an Easter egg with your children."]),
    ("why is the sky blue",
     "Sunlight is scattered by air molecules and short blue wavelengths scatter most, so the daytime atmosphere looks azure.",
     ["Why we feel blue on Mondays: a psychologist explains the working week.",
      "Sky Sports shows the blue team's highlights every Sunday night.",
      "The Sky Blue football club sells blue shirts in its online shop."]),
    ("who wrote pride and prejudice",
     "Jane Austen's 1813 novel Pride and Prejudice follows Elizabeth Bennet and Mr Darcy.",
     ["Pride comes before a fall, wrote the proverb collector.",
      "Prejudice and pride in the workplace: who is affected?",
      "He wrote a letter full of pride to the editor."]),
    ("best way to learn a new language",
     "Daily speaking practice with native speakers, spaced repetition of vocabulary and immersion are how people learn a language fastest.",
     ["The best new programming language for web servers is Go, according to this survey.",
      "Learn the way of the samurai in this new film, the best of the year.",
      "A new way to learn guitar: the best apps reviewed."]),
    ("how do plants make food",
     "Through photosynthesis, plants use sunlight, water and carbon dioxide to produce glucose and release oxygen.",
     ["Food processing plants make canned soup; how do they keep it fresh?",
      "Make your own plant pots from old food tins.",
      "How do I water plants while on holiday?"]),
]  # fmt: skip
FILLER = [
    "The stock market closed higher on Friday after strong earnings reports.",
    "A recipe for lemon cake with a crunchy sugar topping.",
    "The museum opens a new exhibition of modern sculpture next month.",
    "Marathon runners should train gradually to avoid injuries.",
    "The city council approved a plan for more bicycle lanes downtown.",
    "Volcanoes form where tectonic plates meet or over hot spots.",
    "Chess openings: the Sicilian defence is popular at top level.",
    "Solar panels convert light into electricity using semiconductors.",
]


@pytest.mark.filterwarnings("ignore:There are shared pipeline components")
def test_pisa_bm25_textloader_minilm_in_experiment(tmp_path, minilm_dir):
    from pyterrier.measures import RR, nDCG

    pisa = pytest.importorskip("pyterrier_pisa")
    docs, topics, qrels = [], [], []
    for i, (query, relevant, distractors) in enumerate(PLANTED, start=1):
        qid = f"q{i}"
        topics.append({"qid": qid, "query": query})  # raw text, punctuation included: PISA tokenises it
        docs.append({"docno": f"{qid}-rel", "text": relevant})
        qrels.append({"qid": qid, "docno": f"{qid}-rel", "label": 1})
        docs += [{"docno": f"{qid}-x{j}", "text": d} for j, d in enumerate(distractors)]
    docs += [{"docno": f"f{j}", "text": t} for j, t in enumerate(FILLER)]
    topics, qrels = pd.DataFrame(topics), pd.DataFrame(qrels)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"_id": d["docno"], "text": d["text"]}) + "\n" for d in docs), encoding="utf-8"
    )

    index = pisa.PisaIndex(str(tmp_path / "pisa"), text_field="text", threads=1)
    index.index(docs)
    bm25 = index.bm25(num_results=100)
    reranker = R2RReranker(minilm_dir, family="bi-encoder", verbose=False, **FP32)
    pipeline = bm25 % 20 >> TextLoader(str(corpus)) >> reranker

    res = pt.Experiment(
        [bm25, pipeline],
        topics,
        qrels,
        eval_metrics=[nDCG @ 10, RR @ 10, "mrt"],
        batch_size=3,
        validate="error",
    )
    assert list(res.columns) == ["name", "nDCG@10", "RR@10", "mrt"]
    assert res["name"].tolist() == [str(bm25), str(pipeline)]
    assert repr(reranker) in res["name"][1] and "TextLoader" in res["name"][1]
    bm25_row, r2r_row = res.iloc[0], res.iloc[1]
    # the planted distractors share more query terms, so BM25 ranks the answer low; MiniLM puts it first
    assert bm25_row["RR@10"] < 0.5
    assert r2r_row["RR@10"] >= 0.9 and r2r_row["nDCG@10"] >= bm25_row["nDCG@10"] + 0.3
    assert (res["mrt"] > 0).all()

"""LLM ranking strategies against a scripted oracle (true relevance in each passage) and tiny models: the
algorithms sort right, batching changes nothing, the cache makes reruns free, bad answers and bad input are
handled as documented."""

from __future__ import annotations

import random
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from oracle import OracleBackend, grade  # noqa: E402

import reason2rank  # noqa: E402
from reason2rank import Doc, Query  # noqa: E402
from reason2rank.llm.client import LLM  # noqa: E402
from reason2rank.strategies import (  # noqa: E402
    ListwiseReranker,
    PairwiseReranker,
    SetwiseReranker,
    TwoStageReranker,
    heap_depths,
    sliding_windows,
)


def make_docs(n: int, seed: int) -> tuple[list[Doc], list[int]]:
    rng = random.Random(seed)
    grades = list(range(n))
    rng.shuffle(grades)
    docs = [Doc(f"d{i}", f"passage number {i} about things grade {g}") for i, g in enumerate(grades)]
    return docs, sorted(range(n), key=lambda i: -grades[i])


def ids(ranked) -> list[int]:
    return [int(sd.doc.id[1:]) for sd in ranked]


# -- setwise --------------------------------------------------------------------------------------------------
def reference_heapsort_calls(grades: list[int], c: int, k: int) -> tuple[list[int], int]:
    """llm-rankers' sequential heap sort (its call pattern), with an exact oracle: (top-k, comparisons)."""
    arr = list(range(len(grades)))
    calls = 0

    def heapify(n: int, i: int) -> None:
        nonlocal calls
        if c * i + 1 < n:
            inds = [i, *range(c * i + 1, min(c * (i + 1) + 1, n))]
            calls += 1
            largest = max(inds, key=lambda j: (grades[arr[j]], -inds.index(j)))
            if largest != i:
                arr[i], arr[largest] = arr[largest], arr[i]
                heapify(n, largest)

    n = len(arr)
    for i in range(n // c, -1, -1):
        heapify(n, i)
    for ranked, i in enumerate(range(n - 1, 0, -1), start=1):
        arr[i], arr[0] = arr[0], arr[i]
        if ranked == k:
            break
        heapify(i, 0)
    return list(reversed(arr))[:k], calls


@pytest.mark.parametrize("num_child", [2, 3, 5, 9, 19, 20])
def test_setwise_heap_sort_equals_a_full_sort_and_the_sequential_call_pattern(num_child):
    rng = random.Random(num_child)
    for n in [1, 2, 3, 7, 20, 21, 57, 100]:
        docs, truth = make_docs(n, rng.randrange(10**6))
        backend = OracleBackend()
        ranker = SetwiseReranker(backend=backend, num_child=num_child, k=n, prompt="rank_r1_v1")
        got = ids(ranker.rerank(Query("q", "x"), docs))
        assert got == truth, (n, num_child)
        grades = [grade(d.text) for d in docs]
        ref_top, ref_calls = reference_heapsort_calls(grades, num_child, n)
        assert got[: len(ref_top)] == ref_top
        assert backend.calls == ref_calls  # no more calls than the sequential algorithm


def test_setwise_top_k_then_the_rest_in_first_stage_order_and_heap_levels_are_batched():
    docs, truth = make_docs(40, 7)
    backend = OracleBackend()
    ranked = SetwiseReranker(backend=backend, num_child=3, k=5).rerank(Query("q", "x"), docs)
    got = ids(ranked)
    assert got[:5] == truth[:5]
    assert got[5:] == [i for i in range(40) if i not in truth[:5]]
    assert max(backend.batches) > 1  # sift-downs of one heap level went together
    assert heap_depths(13, 3) == [[3, 2, 1], [0]] and heap_depths(1, 3) == []


def test_setwise_plain_prompt_letters_and_permutation_voting():
    docs, truth = make_docs(12, 3)
    ranker = SetwiseReranker(backend=OracleBackend(), num_child=3, k=12, num_permutation=3, seed=1)
    assert ids(ranker.rerank(Query("q", "x"), docs)) == truth


# -- listwise -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("window", "stride"), [(20, 10), (4, 2), (5, 1), (3, 3), (10, 4)])
def test_sliding_window_puts_the_true_top_first(window, stride):
    for n in [1, 2, 7, 20, 23, 50]:
        docs, truth = make_docs(n, n * window + stride)
        backend = OracleBackend()
        got = ids(
            ListwiseReranker(backend=backend, window=window, stride=stride).rerank(Query("q", "x"), docs)
        )
        top = n if n <= window else window - stride  # disjoint windows (stride == window) promise nothing
        assert got[:top] == truth[:top]
        assert sorted(got) == list(range(n))
        assert backend.calls == len([w for w in sliding_windows(n, window, stride) if w[1] - w[0] >= 2])


def test_sliding_windows_match_rank_llms_pattern():
    assert len(sliding_windows(100, 20, 10)) == 9 and sliding_windows(100, 20, 10)[0] == (80, 100)
    assert sliding_windows(20, 20, 10) == [(0, 20)]
    assert sliding_windows(25, 20, 10) == [(5, 25), (0, 15)]
    assert sliding_windows(5, 20, 10) == [(0, 5)]
    # as many documents as window - stride: one window (an earlier version made none and left them unranked)
    assert sliding_windows(10, 20, 10) == [(0, 10)] and sliding_windows(2, 3, 1) == [(0, 2)]
    for n in range(1, 60):  # every document is in some window, and the last window reaches the top
        for window, stride in ((20, 10), (5, 2), (3, 1), (4, 4)):
            got = sliding_windows(n, window, stride)
            assert got[-1][0] == 0 and got[0][1] == n
            assert all(end - start <= window for start, end in got)
            assert set().union(*(range(start, end) for start, end in got)) == set(range(n))


def test_windows_of_every_query_go_in_one_batch_and_irregular_lengths():
    items = [(Query(str(n), "x"), make_docs(n, n)[0]) for n in (30, 12, 55)]
    backend = OracleBackend()
    ranker = ListwiseReranker(backend=backend, window=10, stride=5)
    out = ranker.rerank_batch(items)
    per_query = [len(sliding_windows(len(d), 10, 5)) for _, d in items]
    assert backend.batches[0] == 3 and len(backend.batches) == max(per_query)
    for (q, docs), ranked in zip(items, out):
        truth = make_docs(len(docs), len(docs))[1]
        assert ids(ranked)[:5] == truth[:5] and ranked.info["windows"] == per_query[items.index((q, docs))]


def test_depth_reranks_only_the_top_and_keeps_the_rest():
    docs, _ = make_docs(30, 1)
    got = ids(
        ListwiseReranker(backend=OracleBackend(), window=5, stride=2, depth=10).rerank(Query("q", "x"), docs)
    )
    assert got[10:] == list(range(10, 30)) and sorted(got[:10]) == list(range(10))


# -- pairwise -------------------------------------------------------------------------------------------------
def test_pairwise_allpairs_sorts_and_sorting_mode_gets_the_top_k():
    docs, truth = make_docs(15, 4)
    backend = OracleBackend()
    assert ids(PairwiseReranker(backend=backend, mode="allpairs").rerank(Query("q", "x"), docs)) == truth
    assert backend.calls == 15 * 14  # every pair, both orders
    got = ids(PairwiseReranker(backend=OracleBackend(), mode="sorting", k=4).rerank(Query("q", "x"), docs))
    assert got[:4] == truth[:4]


def test_pairwise_reasoning_lands_in_the_comparison_of_adjacent_documents():
    docs, truth = make_docs(6, 2)
    ranker = PairwiseReranker(backend=OracleBackend(), mode="sorting", k=5, prompt="reasoning_v1")
    ranked = ranker.rerank(Query("q", "x"), docs, explain=3)
    assert ids(ranked) == truth
    assert ranked[0].comparison == "comparing" and ranked[0].reasoning is None and ranked[0].evidence is None


# -- contract ---------------------------------------------------------------------------------------------------
def test_scores_come_from_the_order_and_info_counts_the_calls():
    docs, truth = make_docs(8, 5)
    ranked = ListwiseReranker(backend=OracleBackend(), window=8, stride=4).rerank(Query("q", "x"), docs)
    assert [sd.score for sd in ranked] == [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    assert (
        ranked.info["calls"] == 1 and ranked.info["strategy"] == "listwise" and ranked.info["repaired"] == 0
    )


def test_garbage_answers_keep_the_first_stage_order_with_one_warning():
    docs, _ = make_docs(12, 9)
    ranker = ListwiseReranker(backend=OracleBackend(garbage=True), window=5, stride=2)
    with pytest.warns(UserWarning, match=r"^\d+ LLM answer\(s\) could not be used as given") as caught:
        ranked = ranker.rerank(Query("q", "x"), docs)
    assert sum("could not be used" in str(w.message) for w in caught) == 1
    assert ids(ranked) == list(range(12)) and ranked.info["windows_unparsed"] == ranked.info["windows"] > 1
    setwise = SetwiseReranker(backend=OracleBackend(garbage=True), num_child=3, k=3)
    with pytest.warns(UserWarning, match="could not be used"):
        got = ids(setwise.rerank(Query("q", "x"), docs))
    # every parent stays, so each extraction takes the root as it is (llm-rankers does the same)
    assert got == [0, 11, 10, *range(1, 10)]


def test_edge_cases_window_larger_than_list_k_above_n_single_and_empty():
    one = [Doc("d0", "grade 1")]
    for ranker in (ListwiseReranker(backend=OracleBackend(), window=20), SetwiseReranker(backend=OracleBackend(), k=50),
                   PairwiseReranker(backend=OracleBackend(), mode="allpairs")):  # fmt: skip
        assert ids(ranker.rerank(Query("q", "x"), one)) == [0]
        assert ranker.rerank(Query("q", "x"), []) == []
        docs, truth = make_docs(4, 1)
        assert ids(ranker.rerank(Query("q", "x"), docs))[:2] == truth[:2]


def test_a_backend_that_fails_names_the_query():
    docs, _ = make_docs(6, 1)
    docs[3] = Doc("d3", "passage number 3 poison grade 9")
    ranker = ListwiseReranker(backend=OracleBackend(fail_on="poison"), window=4, stride=2)
    with pytest.raises(RuntimeError, match=r"query 'q7': the LLM gave no answer .*HTTP 503"):
        ranker.rerank_batch([(Query("q7", "x"), docs)])


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="needs an LLM"):
        ListwiseReranker()
    with pytest.raises(ValueError, match="stride"):
        ListwiseReranker(backend=OracleBackend(), window=5, stride=6)
    with pytest.raises(ValueError, match="num_child"):
        SetwiseReranker(backend=OracleBackend(), num_child=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        PairwiseReranker(backend=OracleBackend(), mode="bubble")
    with pytest.raises(ValueError, match="is for task 'setwise'"):
        ListwiseReranker(backend=OracleBackend(), prompt="setwise_plain_v1")


def test_a_cache_hit_returns_the_same_ranking_with_zero_backend_calls(tmp_path):
    docs, _ = make_docs(20, 11)
    items = [(Query("q", "x"), docs)]
    first = OracleBackend()
    a = SetwiseReranker(backend=first, num_child=3, k=5, cache=tmp_path / "cache.sqlite").rerank_batch(items)
    again = OracleBackend()
    ranker = SetwiseReranker(backend=again, num_child=3, k=5, cache=tmp_path / "cache.sqlite")
    b = ranker.rerank_batch(items)
    assert first.calls > 0 and again.calls == 0
    assert ids(a[0]) == ids(b[0]) and b[0].info["backend_calls"] == 0 and b[0].info["cached"] == first.calls


# -- tiny real models -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["listwise", "setwise", "pairwise"])
def test_batched_equals_one_query_at_a_time_on_a_tiny_model(tiny_llama_dir, family):
    options = {"listwise": {"window": 4, "stride": 2, "max_new_tokens": 12},
               "setwise": {"num_child": 2, "k": 3, "max_new_tokens": 4},
               "pairwise": {"mode": "sorting", "k": 2, "max_new_tokens": 3}}[family]  # fmt: skip
    ranker = reason2rank.load(tiny_llama_dir, family=family, dtype="fp32", device="cpu", **options)
    items = [
        (Query(f"q{i}", f"query {w}"), make_docs(6, i)[0]) for i, w in enumerate(["paris", "music data"])
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random tiny model answers badly: repairs are expected
        together = ranker.rerank_batch(items)
        alone = [ranker.rerank_batch([item])[0] for item in items]
    assert [ids(r) for r in together] == [ids(r) for r in alone]
    assert together[0].info["calls"] == alone[0].info["calls"] > 0


def test_a_prompt_longer_than_the_context_is_cut_with_a_warning(tiny_llama_dir):
    ranker = reason2rank.load(tiny_llama_dir, family="listwise", dtype="fp32", device="cpu", window=3, stride=2,
                              context_length=400, max_new_tokens=8)  # fmt: skip
    docs = [Doc(f"d{i}", " ".join(["music data"] * 100)) for i in range(3)]
    with pytest.warns(UserWarning, match=r"1 prompt\(s\) were longer than the context \(400 tokens\)"):
        ranker.rerank("query", docs)


def test_two_stages_pointwise_then_listwise_saved_as_one_model(tiny_bert_dir, tmp_path):
    first = reason2rank.load(tiny_bert_dir, family="cross-encoder", dtype="fp32", progress=False)
    second = ListwiseReranker(backend=OracleBackend(), window=4, stride=2)
    model = TwoStageReranker(first=first, second=second, top_m=5)
    docs, truth = make_docs(12, 3)
    ranked = model.rerank(Query("q", "x"), docs)
    pointwise = [int(sd.doc.id[1:]) for sd in first.rerank(Query("q", "x"), docs)]
    head = pointwise[:5]
    assert ids(ranked)[5:] == pointwise[5:]  # the rest keeps the first stage's order
    assert ids(ranked)[:2] == sorted(head, key=lambda i: truth.index(i))[:2]
    assert np.all(np.diff([sd.score for sd in ranked]) < 0)


def test_strategies_open_from_a_model_directory(tiny_llama_dir, tmp_path):
    ranker = reason2rank.load(
        tiny_llama_dir, family="setwise", num_child=2, k=3, prompt="rank_r1_v1", dtype="fp32"
    )
    out = ranker.save(tmp_path / "setwise")
    again = reason2rank.load(out, dtype="fp32")
    assert isinstance(again, SetwiseReranker) and (again.num_child, again.k) == (2, 3)
    assert again.prompt.version == "setwise/rank-r1-v1" and again.describe()["family"] == "setwise"
    first = reason2rank.load(tiny_llama_dir, family="causal-lm", dtype="fp32")
    two = TwoStageReranker(first=first, second=ranker, top_m=4).save(tmp_path / "dear")
    loaded = reason2rank.load(two, dtype="fp32")
    assert (
        isinstance(loaded, TwoStageReranker)
        and loaded.top_m == 4
        and isinstance(loaded.second, SetwiseReranker)
    )


def test_the_llm_client_logs_each_call_and_saves_the_log(tmp_path):
    llm = LLM(OracleBackend())
    ranker = ListwiseReranker(backend=llm.backend, window=4, stride=2)
    docs, _ = make_docs(8, 2)
    ranker.rerank(Query("q", "x"), docs)
    log = ranker.llm.log
    assert len(log) == 3 and all(r.tags["qid"] == "q" and r.repaired is False for r in log.records)
    path = log.save(tmp_path / "calls.jsonl")
    assert len(path.read_text().splitlines()) == 3 and log.summary()["calls"] == 3


# -- command line and adapters -----------------------------------------------------------------------------------
def _candidates(tmp_path, n_queries=2, n=6):
    from reason2rank.data import write_rankllm_candidates

    items = [(Query(f"q{i}", f"query {i}"), make_docs(n, i)[0]) for i in range(n_queries)]
    path = tmp_path / "cands.json"
    write_rankllm_candidates(path, items)
    return path, items


def test_cli_reranks_with_a_strategy_and_writes_the_call_log(tmp_path, tiny_llama_dir):
    from reason2rank.cli import main
    from reason2rank.data import read_trec_run

    path, items = _candidates(tmp_path)
    out, log = tmp_path / "run.trec", tmp_path / "calls.jsonl"
    argv = ["rerank", "--model", tiny_llama_dir, "--strategy", "listwise", "--window", "4", "--stride", "2",
            "--max-new-tokens", "10", "--dtype", "fp32", "--no-progress", "--candidates", str(path), "--out", str(out),
            "--llm-log", str(log)]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(argv) == 0
    run = read_trec_run(out)
    assert sorted(run) == ["q0", "q1"] and all(len(v) == 6 for v in run.values())
    assert len(log.read_text().splitlines()) == 2 * len(sliding_windows(6, 4, 2))


def test_cli_strategy_options_are_checked(tmp_path, capsys):
    from reason2rank.cli import main

    path, _ = _candidates(tmp_path)
    base = ["rerank", "--model", "m", "--candidates", str(path), "--out", str(tmp_path / "r.trec")]
    assert main([*base, "--window", "4"]) == 2 and "--window needs --strategy" in capsys.readouterr().err
    assert main([*base, "--strategy", "setwise", "--window", "4"]) == 2
    assert "--window does not apply to --strategy setwise" in capsys.readouterr().err


def test_pyterrier_and_haystack_take_a_strategy(tiny_llama_dir):
    pytest.importorskip("pyterrier")
    pytest.importorskip("haystack")
    import pandas as pd
    from haystack import Document

    import pt_r2r
    from haystack_r2r import R2RRanker

    docs, truth = make_docs(6, 1)
    ranker = SetwiseReranker(backend=OracleBackend(), num_child=2, k=6, prompt="rank_r1_v1")
    frame = pd.DataFrame({"qid": ["q"] * 6, "query": ["x"] * 6, "docno": [d.id for d in docs],
                          "text": [d.text for d in docs]})  # fmt: skip
    out = pt_r2r.R2RReranker(ranker, explain=2)(frame)
    assert [int(d[1:]) for d in out.docno] == truth and list(out["rank"]) == list(range(6))
    assert out.reasoning.iloc[0].startswith("document ") and out.reasoning.iloc[0].endswith("answers it")
    assert "SetwiseReranker" in repr(pt_r2r.R2RReranker(ranker))
    hs = R2RRanker(model=tiny_llama_dir, model_kwargs={"family": "setwise", "num_child": 2, "k": 2,
                                                      "max_new_tokens": 3, "dtype": "fp32"}, top_k=3)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = hs.run(query="paris", documents=[Document(content=d.text) for d in docs])["documents"]
    assert len(got) == 3 and all(
        isinstance(d.meta["r2r_calls"], int) and d.meta["r2r_calls"] > 0 for d in got
    )
    assert got[0].score > got[1].score > got[2].score

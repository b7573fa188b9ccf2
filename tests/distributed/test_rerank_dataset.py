"""``rerank_dataset`` on a local Ray against the in-process reranker: pointwise (pairs of many queries per actor
batch) and listwise (whole queries) give the same rows, ranks and scores; outputs are written atomically;
bad input is refused before any actor starts.

The in-process reference runs in a Ray worker process too (``reason2rank.load(...).rerank_batch``, one
process), so that both sides run under the same MKL setting (see conftest.py)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tiny_models  # noqa: E402
from reason2rank import Doc, Query  # noqa: E402
from reason2rank.data import write_trec_run  # noqa: E402
from reason2rank.distributed import rank_mode, rerank_dataset  # noqa: E402
from reason2rank.distributed.rerank import auto_pairs_per_call, length_tokenizer  # noqa: E402
from reason2rank.distributed.rows import pairs_table, sort_pairs_by_length  # noqa: E402


def make_items(n_queries: int, n_docs: int, seed: int = 0) -> list[tuple[Query, list[Doc]]]:
    rng = random.Random(seed)
    words = tiny_models.COMMON_WORDS
    items = []
    for i in range(n_queries):
        docs = [Doc(f"d{j}", " ".join(rng.choices(words, k=rng.randint(3, 40)))) for j in range(n_docs)]
        items.append((Query(f"q{i}", " ".join(rng.choices(words, k=4))), docs))
    q, docs = items[1]
    docs[2] = Doc("d2", None)  # no text: ranked last at min - 1, as in-process
    docs[3] = Doc("d3", docs[4].text)  # the same text as d4: equal scores keep the input order
    return items


def in_process(model: str, items, **options) -> list[tuple[str, list[tuple[str, float, int]]]]:
    import torch

    import reason2rank

    torch.set_num_threads(1)
    ranked = reason2rank.load(model, progress=False, **options).rerank_batch(items)
    return [(q.id, [(sd.doc.id, sd.score, sd.rank) for sd in lst]) for (q, _), lst in zip(items, ranked)]


def reference(ray, model: str, items, **options):
    return ray.get(ray.remote(num_cpus=1)(in_process).remote(model, items, **options))


def rows(run) -> list[tuple[str, list[tuple[str, float, int]]]]:
    return [(qid, [(sd.doc.id, sd.score, sd.rank) for sd in lst]) for qid, lst in run.results]


def test_pointwise_equals_in_process(ray_local, tiny_bert_dir, tmp_path):
    items = make_items(8, 12)
    assert rank_mode(tiny_bert_dir, "cross-encoder") == "pairs"
    # batch_size=1: each pair is a forward of its own on both sides, so the batches cannot differ: same bits
    expected = reference(ray_local, tiny_bert_dir, items, family="cross-encoder", batch_size=1)
    out = tmp_path / "run.trec"
    run = rerank_dataset(tiny_bert_dir, items, family="cross-encoder", batch_size=1, concurrency=2,
                         pairs_per_call=20, out=out)  # fmt: skip
    assert run.mode == "pairs" and run.actors == 2 and run.pairs == 96 and run.missing_text == 1
    assert run.info == {"pairs_per_call": 20}
    assert rows(run) == expected  # ids, scores and ranks, exactly
    assert rows(run)[1][1][-1][0] == "d2"  # the document without text is last
    ref_file = tmp_path / "ref.trec"
    write_trec_run(ref_file, {qid: [(d, s) for d, s, _ in lst] for qid, lst in expected})
    assert out.read_bytes() == ref_file.read_bytes()  # the TREC file the in-process CLI writes
    table = run.write(tmp_path / "run.parquet").stat()
    assert table.st_size > 0
    import pyarrow.parquet as pq

    got = pq.read_table(tmp_path / "run.parquet").to_pylist()
    flat = [{"qid": q, "docno": d, "score": s, "rank": r} for q, lst in expected for d, s, r in lst]
    assert got == flat
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_automatic_pairs_per_call():
    """About 4 calls per actor of an in-memory run, within 64..4096 pairs; 512 when the size is not known."""
    assert auto_pairs_per_call(4300, 1) == 1075  # ceil(4300 / 4)
    assert auto_pairs_per_call(4300, 2) == 538  # ceil(4300 / 8)
    assert auto_pairs_per_call(96, 2) == 64  # ceil(96 / 8) = 12, raised to the lower bound
    assert auto_pairs_per_call(10_000_000, 8) == 4096  # capped
    assert auto_pairs_per_call(None, 3) == auto_pairs_per_call(0, 3) == 512  # a Dataset input


def test_pairs_are_ordered_by_the_models_tokens(tiny_bert_dir, tmp_path):
    """With the model's tokenizer the driver orders pairs by tokens (query + title + text, a null as 0), which a
    character order gets wrong when long words are one token; with none it falls back to characters."""
    items = [
        (
            Query("q1", "people"),
            [Doc("a", "people people people"), Doc("b", "x,q;z", "time"), Doc("c", None)],
        ),
        (Query("q2", "x y"), [Doc("d", "about")]),
    ]
    tokenizer = length_tokenizer(tiny_bert_dir, {})
    assert tokenizer is not None
    assert length_tokenizer(tmp_path, {}) is None  # no tokenizer files: the character order is used

    def tokens(text):
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    table = pairs_table(items)
    by_tokens = sort_pairs_by_length(table, tokenizer).column("docno").to_pylist()
    counts = {d.id: tokens(q.text) + tokens(d.title) + tokens(d.text) for q, docs in items for d in docs}
    # a: people ×4; b: x , q ; z + time + people; c: people; d: x y about
    assert counts == {"a": 4, "b": 7, "c": 1, "d": 3}
    assert by_tokens == ["c", "d", "a", "b"]
    by_chars = sort_pairs_by_length(table).column("docno").to_pylist()
    assert by_chars == ["c", "d", "b", "a"]  # 6, 8, 15, 26 characters


def test_vision_pages_travel_as_paths(ray_local, tmp_path):
    """A vision family on Ray reads the pages from their paths (image-only pages are scored, not ranked last as
    documents without text): the same ids, scores and ranks as in-process; images held in memory, interleaved
    parts and mode='pairs' for a family that ranks whole queries are refused before any actor starts."""
    from tiny_vlm import make_tiny_qwen2_vl, random_image

    model = str(make_tiny_qwen2_vl(tmp_path / "vlm"))
    pages = []
    for i, (h, w) in enumerate([(56, 84), (112, 56), (84, 84), (56, 56)]):
        pages.append(tmp_path / f"p{i}.png")
        random_image(h, w, seed=i).save(pages[-1])
    items = [
        (Query("q1", "cat dog"), [Doc("a", None, images=[str(pages[0])]), Doc("b", "dog text"),
                                  Doc("c", None, images=[str(pages[1]), str(pages[2])])]),
        (Query("q2", "bird"), [Doc("d", None, images=[str(pages[3])]), Doc("e", None, images=[str(pages[0])])]),
    ]  # fmt: skip
    options = {"family": "vlm", "batch_size": 1}
    expected = reference(ray_local, model, items, **options)
    run = rerank_dataset(model, items, concurrency=1, **options)
    assert (
        run.mode == "queries" and run.missing_text == 0
    )  # the vlm family ranks whole queries (parts="best")
    assert rows(run) == expected
    assert len({s for _, lst in expected for _, s, _ in lst}) == 5  # every page was scored, none tied last

    with pytest.raises(ValueError, match=r"document 'm' has an image held in memory"):
        rerank_dataset(model, [(Query("q", "x"), [Doc("m", None, images=[random_image(28, 28)])])], **options)
    with pytest.raises(ValueError, match=r"document 'i' has interleaved parts"):
        rerank_dataset(model, [(Query("q", "x"), [Doc("i", None, parts=["text", str(pages[0])])])], **options)


def test_pairs_mode_is_refused_for_a_family_that_ranks_whole_queries(tiny_llama_dir):
    items = make_items(2, 5)
    with pytest.raises(ValueError, match=r"mode='pairs' scores each \(query, document\) pair apart"):
        rerank_dataset(tiny_llama_dir, items, family="listwise", mode="pairs")


@pytest.mark.slow
def test_pointwise_default_batches_and_dataset_input(ray_local, tiny_bert_dir):
    """With the engine's own batches (32 pairs) the actors' batches hold other pairs than the in-process ones:
    rows and order are the same, scores the same to float32 rounding (padding changes fp32 sums)."""
    items = make_items(6, 10, seed=1)
    expected = reference(ray_local, tiny_bert_dir, items, family="cross-encoder")
    table = pairs_table(items).drop_columns(["title"])
    shuffled = table.take(
        np.random.default_rng(0).permutation(table.num_rows)
    )  # the rank column keeps the order
    ds = ray_local.data.from_arrow([shuffled.slice(0, 25), shuffled.slice(25)])
    run = rerank_dataset(tiny_bert_dir, ds, family="cross-encoder", concurrency=2, pairs_per_call=16)
    got = rows(run)
    assert [q for q, _ in got] == sorted(q for q, _ in expected)  # a Dataset's queries come back by qid
    got_by, exp_by = dict(got), dict(expected)
    for qid, lst in exp_by.items():
        assert [(d, r) for d, _, r in got_by[qid]] == [(d, r) for d, _, r in lst]
        np.testing.assert_allclose([s for _, s, _ in got_by[qid]], [s for _, s, _ in lst], rtol=0, atol=1e-6)


def test_listwise_equals_in_process(ray_local, tiny_llama_dir):
    items = [(q, docs[:6]) for q, docs in make_items(4, 6, seed=2)]
    options = {"family": "listwise", "window": 4, "stride": 2, "max_new_tokens": 8}
    assert rank_mode(tiny_llama_dir, "listwise") == "queries"
    expected = reference(ray_local, tiny_llama_dir, items, **options)
    run = rerank_dataset(tiny_llama_dir, items, concurrency=2, queries_per_call=1, **options)
    assert run.mode == "queries"
    assert rows(run) == expected


def in_process_explained(model: str, items, explain: int, **options):
    import torch

    import reason2rank

    torch.set_num_threads(1)
    ranked = reason2rank.load(model, progress=False, **options).rerank_batch(items, explain=explain)
    return {q.id: [(sd.doc.id, sd.score, sd.rank, sd.reasoning, sd.evidence) for sd in lst]
            for (q, _), lst in zip(items, ranked)}  # fmt: skip


def test_explained_run_from_parquet_equals_in_process(ray_local, tiny_bert_dir, tmp_path):
    """A Parquet file of shuffled pair rows, explained (so by whole queries: ``groupby("qid")``, candidates put back
    in first-stage order by ``rank``): the same ranks, scores and evidence as in-process."""
    import pyarrow.parquet as pq

    items = [(q, docs[:5]) for q, docs in make_items(3, 5, seed=3)]
    options = {
        "family": "cross-encoder",
        "batch_size": 1,
    }  # one pair per forward: the same bits on both sides
    expected = ray_local.get(
        ray_local.remote(num_cpus=1)(in_process_explained).remote(tiny_bert_dir, items, 2, **options)
    )
    table = pairs_table(items)
    pq.write_table(
        table.take(np.random.default_rng(1).permutation(table.num_rows)), tmp_path / "pairs.parquet"
    )
    run = rerank_dataset(tiny_bert_dir, str(tmp_path / "pairs.parquet"), explain=2, concurrency=1, **options)
    assert run.mode == "queries" and [q for q, _ in run.results] == sorted(expected)
    got = {
        q: [(sd.doc.id, sd.score, sd.rank, sd.reasoning, sd.evidence) for sd in lst] for q, lst in run.results
    }
    assert got == expected
    explained = [row[4] for lst in got.values() for row in lst[:2] if row[4]]
    assert len(explained) >= 5  # the top two of each query carry their evidence span (d2 of q1 has no text)


def test_bad_input_is_refused_before_any_work(ray_local, tiny_bert_dir, tmp_path):
    ds = ray_local.data.from_items([{"qid": "1", "query": "q", "docno": "d", "body": "x", "rank": 0}])
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['text'\]"):
        rerank_dataset(tiny_bert_dir, ds, family="cross-encoder")
    ds = ray_local.data.from_items([{"qid": "1", "query": "q", "docno": "d", "text": "x"}])
    with pytest.raises(ValueError, match="neither a 'rank' nor a 'score'"):
        rerank_dataset(tiny_bert_dir, ds, family="cross-encoder")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        rerank_dataset(tiny_bert_dir, str(tmp_path / "nope.parquet"), family="cross-encoder")
    with pytest.raises(ValueError, match="concurrency must be a positive int"):
        rerank_dataset(tiny_bert_dir, [], family="cross-encoder", concurrency=0)
    with pytest.raises(ValueError, match="no r2r_model.json: pass family="):
        rank_mode(tiny_bert_dir)
    dup = [(Query("q", "text"), [Doc("a", "x"), Doc("a", "y")])]
    with pytest.raises(ValueError, match="duplicate doc ids"):
        rerank_dataset(tiny_bert_dir, dup, family="cross-encoder")


def test_without_ray_the_error_says_how_to_install(monkeypatch):
    from reason2rank.distributed import cluster

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"pip install 'reason2rank\[ray\]'"):
        cluster.import_ray()


@pytest.mark.slow
def test_cli_rerank_on_ray_matches_in_process(ray_local, tiny_bert_dir, tmp_path):
    from reason2rank.cli import main
    from reason2rank.data import read_trec_run, write_rankllm_candidates

    candidates = tmp_path / "c.json"
    write_rankllm_candidates(candidates, make_items(3, 6, seed=3))
    base = ["rerank", "--model", tiny_bert_dir, "--family", "cross-encoder", "--candidates", str(candidates),
            "--batch-size", "1", "--no-progress"]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "local.trec")]) == 0
    assert (
        main([*base, "--out", str(tmp_path / "ray.trec"), "--ray", "--actors", "2", "--pairs-per-call", "5"])
        == 0
    )
    local, distributed = read_trec_run(tmp_path / "local.trec"), read_trec_run(tmp_path / "ray.trec")
    assert local.keys() == distributed.keys()
    for qid in local:
        assert [d for d, _ in local[qid]] == [d for d, _ in distributed[qid]]
        np.testing.assert_allclose(
            [s for _, s in local[qid]], [s for _, s in distributed[qid]], rtol=0, atol=1e-6
        )


def test_cli_rerank_on_ray_reads_parquet_pairs(ray_local, tiny_bert_dir, tmp_path, capsys):
    """`rerank --ray --candidates pairs.parquet` (rows of pairs, as Ray Data reads them) writes the run the
    in-process CLI writes from the same candidates as rank_llm JSON; without --ray it is a usage error."""
    import pyarrow.parquet as pq

    from reason2rank.cli import main
    from reason2rank.data import read_trec_run, write_rankllm_candidates

    items = make_items(3, 5, seed=4)
    write_rankllm_candidates(tmp_path / "c.json", items)
    pq.write_table(pairs_table(items), tmp_path / "pairs.parquet")
    base = [
        "rerank",
        "--model",
        tiny_bert_dir,
        "--family",
        "cross-encoder",
        "--batch-size",
        "1",
        "--no-progress",
    ]
    assert main([*base, "--candidates", str(tmp_path / "c.json"), "--out", str(tmp_path / "local.trec")]) == 0
    ray_args = ["--candidates", str(tmp_path / "pairs.parquet"), "--out", str(tmp_path / "ray.trec"), "--ray"]
    assert main([*base, *ray_args]) == 0
    local, distributed = read_trec_run(tmp_path / "local.trec"), read_trec_run(tmp_path / "ray.trec")
    assert {q: [d for d, _ in lst] for q, lst in distributed.items()} == {
        q: [d for d, _ in lst] for q, lst in local.items()
    }
    for (
        qid
    ) in local:  # two processes: MKL's last bit may differ (see the module docstring of distributed.rerank)
        np.testing.assert_allclose(
            [s for _, s in distributed[qid]], [s for _, s in local[qid]], rtol=0, atol=1e-6
        )
    capsys.readouterr()
    assert (
        main([*base, "--candidates", str(tmp_path / "pairs.parquet"), "--out", str(tmp_path / "x.trec")]) == 2
    )
    assert "read by Ray Data: add --ray" in capsys.readouterr().err


def test_cli_ray_argument_errors(tiny_bert_dir, tmp_path, capsys):
    from reason2rank.cli import main

    base = ["rerank", "--model", tiny_bert_dir, "--candidates", "c.json", "--out", str(tmp_path / "r.trec")]
    assert main([*base, "--address", "auto"]) == 2
    assert "--address needs --ray" in capsys.readouterr().err
    assert main([*base, "--ray", "--actors", "0"]) == 2
    assert "--actors must be >= 1" in capsys.readouterr().err
    assert main([*base, "--ray", "--strategy", "listwise", "--llm-log", str(tmp_path / "log.jsonl")]) == 2
    assert "--llm-log does not work with --ray" in capsys.readouterr().err
    teach = [
        "teach",
        "--teacher",
        "openai:m@http://127.0.0.1:1/v1",
        "--candidates",
        "c.json",
        "--out",
        "a.jsonl",
    ]
    assert main([*teach, "--actors", "2"]) == 2
    assert "needs --ray" in capsys.readouterr().err


@pytest.mark.gpu
def test_gpu_actors_rank_like_in_process(ray_local, minilm_dir):
    """On a GPU machine: one actor per GPU (num_gpus=1) scores as the in-process reranker on the GPU (fp32, so that
    batches of other pairs move a score by rounding only)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    gpus = int(ray_local.cluster_resources().get("GPU", 0))
    if gpus < 1:
        pytest.skip("Ray sees no GPU")
    items = make_items(8, 50, seed=4)
    expected = in_process(minilm_dir, items, family="cross-encoder", device="cuda")
    run = rerank_dataset(
        minilm_dir, items, family="cross-encoder", device="cuda", concurrency=gpus, num_gpus=1
    )
    got = dict(rows(run))
    for qid, lst in expected:
        assert [d for d, _, _ in got[qid]] == [d for d, _, _ in lst]

"""Rows of a distributed run: what goes into the actors and what comes back.

Input (a Ray Dataset, Parquet files, or ``(Query, docs)`` pairs turned into rows here): one row per
(query, document) with the columns ``qid``, ``query``, ``docno``, ``text`` (null: no text), optionally ``title``
and, for the vision families, ``images`` (a list of image file paths: images travel as paths the actors read, so
they must be on storage every node sees; in-memory images and interleaved parts are refused), and the first-stage
order of each query's candidates: ``rank`` (smaller first) or, without it, ``score`` (larger first, then
``docno``). Order-returning strategies read the candidates in that order, and equal
pointwise scores keep it.

Output: one row per (query, document) with ``qid``, ``docno``, ``score``, ``rank`` (0-based, as
``ScoredDoc.rank`` and PyTerrier frames have it; TREC files get ``rank + 1``) and, when explained,
``reasoning``, ``evidence``, ``comparison``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from reason2rank.data.io import PathLike, atomic_write
from reason2rank.data.trec import write_trec_run
from reason2rank.types import Doc, Query, ScoredDoc

__all__ = [
    "as_dataset",
    "pack_query",
    "EXPLANATION_COLUMNS",
    "REQUIRED_COLUMNS",
    "check_columns",
    "image_paths",
    "items_table",
    "ordered_docs",
    "pairs_table",
    "results_table",
    "write_results",
]

REQUIRED_COLUMNS = ("qid", "query", "docno", "text")
EXPLANATION_COLUMNS = ("reasoning", "evidence", "comparison")


def check_columns(names: Iterable[str], what: str) -> None:
    """``ValueError`` naming the missing columns of ``what`` (a Dataset, a Parquet path) and the schema asked for."""
    names = set(names)
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise ValueError(
            f"{what} lacks the column(s) {missing} (it has {sorted(names)}); a run to rerank needs one row per "
            "(query, document) with qid, query, docno, text, plus rank (first-stage order) or score"
        )
    if "rank" not in names and "score" not in names:
        raise ValueError(
            f"{what} has neither a 'rank' nor a 'score' column: give the first-stage order of each query's "
            "candidates (rank: smaller first, or score: larger first)"
        )


def pairs_table(items: Sequence[tuple[Query, Sequence[Doc]]]) -> Any:
    """One pyarrow row per (query, document) of ``items``; ``rank`` is the position in the query's list."""
    import pyarrow as pa

    cols: dict[str, list[Any]] = {k: [] for k in ("qid", "query", "docno", "text", "title", "rank")}
    for query, docs in items:
        for position, doc in enumerate(docs):
            cols["qid"].append(query.id)
            cols["query"].append(query.text)
            cols["docno"].append(doc.id)
            cols["text"].append(_as_text(doc.text))
            cols["title"].append(_as_text(doc.title))
            cols["rank"].append(position)
    types = {"rank": pa.int64()}
    return pa.table({k: pa.array(v, type=types.get(k, pa.string())) for k, v in cols.items()})


def sort_pairs_by_length(table: Any, tokenizer: Any = None) -> Any:
    """``table`` (of ``pairs_table``) with its rows ordered by length, so that the slices handed to the actors hold
    pairs of similar length and their batches carry little padding (the in-process engine sorts the whole run
    the same way); the driver puts scores back by ``qid``/``rank``.

    The length is the pair's tokens (query + title + text) when ``tokenizer`` (the model's) is given, else their
    characters. Tokens are worth it: on DL19's 4,300 BM25 pairs cut into 4 slices, a character order left 3.2% of
    the MiniLM batches' token slots as padding, a token order 0.9% (the in-process sort of the whole run: 1.0%)."""
    import pyarrow.compute as pc

    def length(name: str) -> Any:
        if tokenizer is not None:
            return _token_counts(tokenizer, table[name])
        return pc.fill_null(pc.utf8_length(table[name]), 0)

    size = pc.add(pc.add(length("query"), length("title")), length("text"))
    return table.take(pc.sort_indices(size, sort_keys=[("", "ascending")]))


def _token_counts(tokenizer: Any, column: Any) -> Any:
    """Tokens of each string of ``column`` (0 for a null), each distinct string tokenised once."""
    import pyarrow as pa
    import pyarrow.compute as pc

    distinct = pc.unique(column).drop_null()
    if len(distinct) == 0:
        return pa.array([0] * len(column), pa.int64())
    ids = tokenizer(distinct.to_pylist(), add_special_tokens=False, return_attention_mask=False,
                    return_token_type_ids=False)["input_ids"]  # fmt: skip
    lengths = pa.array([len(x) for x in ids], pa.int64())
    return pc.fill_null(pc.take(lengths, pc.index_in(column, value_set=distinct)), 0)


def items_table(items: Sequence[tuple[Query, Sequence[Doc]]], images: bool = False) -> Any:
    """One pyarrow row per query of ``items``: ``qid``, ``query`` and list columns ``docnos``, ``texts``,
    ``titles`` in the query's candidate order (what the whole-query actors read)."""
    import pyarrow as pa

    strings = pa.list_(pa.string())
    table = {
        "qid": pa.array([q.id for q, _ in items], pa.string()),
        "query": pa.array([q.text for q, _ in items], pa.string()),
        "docnos": pa.array([[d.id for d in docs] for _, docs in items], strings),
        "texts": pa.array([[_as_text(d.text) for d in docs] for _, docs in items], strings),
        "titles": pa.array([[_as_text(d.title) for d in docs] for _, docs in items], strings),
    }
    if images:  # for a family that reads images: their paths (see ``image_paths``)
        table["images"] = pa.array([[image_paths(d) for d in docs] for _, docs in items], pa.list_(strings))
    return pa.table(table)


def image_paths(doc: Doc) -> list[str]:
    """The file paths of ``doc``'s images (what a Ray run sends the actors); a ``ValueError`` naming the document
    for an image held in memory or for interleaved parts, which a run's rows do not carry."""
    if doc.parts:
        raise ValueError(
            f"document {doc.id!r} has interleaved parts, which a Ray run does not carry; rerank it in-process, or "
            "give its page images as images=[paths]"
        )
    paths = []
    for ref in doc.images:
        if ref.path is None:
            raise ValueError(
                f"document {doc.id!r} has an image held in memory ({ref.label!r}); a Ray run "
                "sends images as file paths the actors read: save it to a file on storage every node sees"
            )
        paths.append(str(ref.path))
    return paths


def _as_text(value: Any) -> str | None:
    from reason2rank.types import text_or_none

    return text_or_none(value)


def ordered_docs(rows: Mapping[str, Sequence[Any]]) -> list[int]:
    """The indices of one query's rows in first-stage order: by ``rank``, else by descending ``score`` then
    ``docno`` (a stable order whatever order the rows arrived in)."""
    n = len(rows["docno"])
    if "rank" in rows and rows["rank"] is not None:
        ranks = rows["rank"]
        if any(r is None for r in ranks):
            raise ValueError(f"query {rows['qid'][0]!r}: some rows have no rank (null); give every row one")
        return sorted(range(n), key=lambda i: (ranks[i], str(rows["docno"][i])))
    scores = rows["score"]
    if any(s is None for s in scores):
        raise ValueError(f"query {rows['qid'][0]!r}: some rows have no score (null); give every row one")
    return sorted(range(n), key=lambda i: (-float(scores[i]), str(rows["docno"][i])))


def results_table(results: Sequence[tuple[str, Sequence[ScoredDoc]]], explain: bool = False) -> Any:
    """The output rows (see the module docstring) of ranked lists, queries in the order given, ranks ascending."""
    import pyarrow as pa

    cols: dict[str, list[Any]] = {"qid": [], "docno": [], "score": [], "rank": []}
    if explain:
        cols.update({k: [] for k in EXPLANATION_COLUMNS})
    for qid, ranked in results:
        for sd in sorted(ranked, key=lambda sd: sd.rank):
            cols["qid"].append(qid)
            cols["docno"].append(sd.doc.id)
            cols["score"].append(float(sd.score))
            cols["rank"].append(int(sd.rank))
            if explain:
                for k in EXPLANATION_COLUMNS:
                    cols[k].append(getattr(sd, k))
    types = {"score": pa.float64(), "rank": pa.int64()}
    return pa.table({k: pa.array(v, type=types.get(k, pa.string())) for k, v in cols.items()})


def write_results(
    path: PathLike,
    results: Sequence[tuple[str, Sequence[ScoredDoc]]],
    *,
    tag: str = "reason2rank",
    explain: bool = False,
) -> None:
    """Write ranked lists atomically: Parquet when ``path`` ends in ``.parquet`` (the rows of
    ``results_table``), else a TREC run (``rank + 1``; ``.gz`` compresses). A failed write leaves ``path`` as
    it was."""
    if str(path).endswith(".parquet"):
        import pyarrow.parquet as pq

        table = results_table(results, explain=explain)
        with atomic_write(path, "wb") as fh:
            pq.write_table(table, fh)
    else:
        write_trec_run(path, {qid: list(ranked) for qid, ranked in results}, tag=tag)


def pack_query(group: Any) -> Any:
    """One query's rows (a ``map_groups`` group) as one row with its candidates in first-stage order."""
    import pyarrow as pa

    cols = group.to_pydict()
    order = ordered_docs(cols)
    n = len(cols["docno"])
    titles = cols.get("title") or [None] * n
    strings = pa.list_(pa.string())
    table = {
        "qid": pa.array([str(cols["qid"][0])], pa.string()),
        "query": pa.array([cols["query"][0]], pa.string()),
        "docnos": pa.array([[str(cols["docno"][i]) for i in order]], strings),
        "texts": pa.array([[cols["text"][i] for i in order]], strings),
        "titles": pa.array([[titles[i] for i in order]], strings),
    }
    if "images" in cols:
        table["images"] = pa.array([[cols["images"][i] for i in order]], pa.list_(strings))
    return pa.table(table)


def as_dataset(ray: Any, data: Any) -> Any:
    """``data`` (a Ray Dataset, or a Parquet file or folder) as a Dataset whose columns were checked."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.exists():
            raise FileNotFoundError(f"Parquet input {str(data)!r} does not exist")
        ds = ray.data.read_parquet(str(path))
        what = f"Parquet input {str(data)!r}"
    elif isinstance(data, ray.data.Dataset):
        ds, what = data, "the Dataset"
    else:
        raise TypeError(
            f"data must be a list of (Query, docs) pairs, a Ray Dataset or a Parquet path, got {type(data).__name__}"
        )
    check_columns(ds.schema().names, what)
    return ds

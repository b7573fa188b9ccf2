"""ir_datasets collections (``pip install 'reason2rank[datasets]'``): topics, qrels and a docid -> ``Doc``
lookup over a dataset's docstore. ir_datasets may download a collection on first use."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from reason2rank.data.io import PathLike, require_file
from reason2rank.locations import location_kind
from reason2rank.types import Doc, clean_text, text_or_none

__all__ = ["DocsLookup", "IRDataset", "dataset_id", "dataset_topics", "load_ir_dataset", "open_dataset"]

_DATASETS_HINT = "pip install 'reason2rank[datasets]'"


def dataset_id(value: PathLike, what: str) -> str | None:
    """The ir_datasets id ``value`` stands for, or ``None`` when it is a file (which must then exist); the rule
    is ``reason2rank.locations.location_kind``."""
    if location_kind(value) == "id":
        return str(value)
    require_file(value, what)
    return None


def _import_ir_datasets() -> Any:
    try:
        import ir_datasets
    except ImportError as e:
        raise ImportError(
            f"reading ir_datasets collections needs the ir_datasets package: {_DATASETS_HINT}"
        ) from e
    return ir_datasets


def open_dataset(dataset_id: str) -> Any:
    """``ir_datasets.load(dataset_id)``, with errors that say what to install or that the id is unknown."""
    ir_datasets = _import_ir_datasets()
    try:
        return ir_datasets.load(dataset_id)
    except KeyError:
        raise ValueError(f"{dataset_id!r} is neither an existing file nor a known ir_datasets id") from None


def _record_fields(record: Any) -> dict[str, Any]:
    if hasattr(record, "_asdict"):
        return dict(record._asdict())
    if isinstance(record, Mapping):
        return dict(record)
    return dict(vars(record))


def _query_text(record: Any) -> str:
    fields = _record_fields(record)
    text = fields.get("text")
    if isinstance(text, str) and text.strip():
        return text
    for key, value in fields.items():
        if key != "query_id" and isinstance(value, str) and value.strip():
            return value
    return ""


def dataset_topics(ds: Any, dataset_id: str) -> dict[str, str]:
    """qid -> query text of an ir_datasets dataset."""
    if hasattr(ds, "has_queries") and not ds.has_queries():
        raise ValueError(f"ir_datasets {dataset_id!r} has no queries; give a topics file")
    return {str(q.query_id): _query_text(q) for q in ds.queries_iter()}


def _doc_from_ir_datasets(record: Any) -> Doc:
    fields = _record_fields(record)
    docid = str(fields.pop("doc_id"))
    title = fields.pop("title", None)
    text_key: str | None = next(
        (k for k in ("text", "body", "contents", "content", "passage") if k in fields), None
    )
    if text_key is None:
        text_key = next((k for k, v in fields.items() if isinstance(v, (str, bytes))), None)
    text = text_or_none(fields.pop(text_key)) if text_key is not None else None
    title = clean_text(title)[0] if title is not None else None
    return Doc(id=docid, text=text, title=title or None, meta=fields)


class DocsLookup:
    """docid -> ``Doc`` over an ir_datasets docs_store: call it, index it, or ``get_many(ids)``."""

    def __init__(self, ds: Any, dataset_id: str) -> None:
        if hasattr(ds, "has_docs") and not ds.has_docs():
            raise ValueError(f"ir_datasets {dataset_id!r} has no documents; give a JSONL corpus")
        self._ds = ds
        self._store: Any = None
        self.dataset_id = dataset_id

    @property
    def store(self) -> Any:
        """The dataset's docstore (opened on first use)."""
        if self._store is None:
            self._store = self._ds.docs_store()
        return self._store

    def get_many(self, ids: Iterable[str]) -> dict[str, Doc]:
        """docid -> ``Doc`` of the ids the docstore has (one batched lookup)."""
        return {
            str(docid): _doc_from_ir_datasets(doc) for docid, doc in self.store.get_many(list(ids)).items()
        }

    def __getitem__(self, docid: str) -> Doc:
        found = self.get_many([docid])
        if docid not in found:
            raise KeyError(docid)
        return found[docid]

    def __call__(self, docid: str) -> Doc:
        """The ``Doc`` of ``docid`` (``KeyError`` when the dataset has none)."""
        return self[docid]

    def __contains__(self, docid: object) -> bool:
        return isinstance(docid, str) and docid in self.get_many([docid])

    def __repr__(self) -> str:
        return f"<documents of ir_datasets {self.dataset_id!r}>"


@dataclass(frozen=True)
class IRDataset:
    """What ``load_ir_dataset`` gives: topics, qrels and a document lookup (``None`` when the dataset has none).

    Unpacks as ``topics, qrels, docs = load_ir_dataset(...)``.
    """

    dataset_id: str
    topics: dict[str, str]
    qrels: dict[str, dict[str, int]]
    docs: DocsLookup | None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.topics, self.qrels, self.docs))


def load_ir_dataset(dataset_id: str) -> IRDataset:
    """Open an ir_datasets dataset (``reason2rank[datasets]``); ir_datasets may download on first use.

    Returns topics (qid -> text: the ``text`` field, else the first non-empty text field, e.g. a TREC
    title), qrels (qid -> {docid: relevance}) and ``docs``, a lookup docid -> ``Doc`` over the dataset's
    docs_store (callable, indexable, and ``get_many(ids)`` for batches). Parts the dataset lacks are empty
    (``docs`` is ``None``).
    """
    ds = open_dataset(dataset_id)

    def has(part: str) -> bool:
        return bool(getattr(ds, f"has_{part}", lambda: True)())

    topics = dataset_topics(ds, dataset_id) if has("queries") else {}
    qrels: dict[str, dict[str, int]] = {}
    if has("qrels"):
        for qrel in ds.qrels_iter():
            qrels.setdefault(str(qrel.query_id), {})[str(qrel.doc_id)] = int(qrel.relevance)
    docs = DocsLookup(ds, dataset_id) if has("docs") else None
    return IRDataset(dataset_id=dataset_id, topics=topics, qrels=qrels, docs=docs)

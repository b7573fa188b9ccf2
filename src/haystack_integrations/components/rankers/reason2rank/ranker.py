"""``R2RRanker``: a Haystack ranker over the reason2rank core.

The component converts Haystack ``Document`` objects to core ``Doc`` objects, calls
``reason2rank.load(...)`` once and ``Reranker.rerank(...)`` per run, and converts the scored documents back.
It holds no model logic: every scoring and explanation feature lives in the core.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
import os
import threading
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict, logging
from haystack.dataclasses import ImageContent
from haystack.utils import ComponentDevice, Secret, deserialize_secrets_inplace

import reason2rank
from haystack_integrations.components.rankers.reason2rank.images import document_images
from reason2rank.reranker import Reranker
from reason2rank.types import Doc, Query, is_readable

logger = logging.getLogger(__name__)

#: meta keys written on explained documents (and removed from the others, so they never carry stale values)
META_REASONING = "r2r_reasoning"
META_EVIDENCE = "r2r_evidence"
META_COMPARISON = "r2r_comparison"
#: meta key of the number of LLM calls the ranking of this query took (LLM strategies only)
META_CALLS = "r2r_calls"
_META_KEYS = (META_REASONING, META_EVIDENCE, META_COMPARISON, META_CALLS)

#: model_kwargs keys that have their own R2RRanker argument
_OWN_ARGUMENTS = ("device", "token", "batch_size", "progress")

# one lock for all instances: warm_up is rare, and a lock attribute would make the component impossible to
# deep-copy or pickle
_WARM_UP_LOCK = threading.Lock()


class _NothingToScore(Reranker):
    """Stands in for a model not loaded yet when no document has text: the core ranks them without a model."""


def _check_top_k(top_k: Any) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")


def _check_explain(explain: Any) -> None:
    if isinstance(explain, bool) or not isinstance(explain, int) or explain < 0:
        raise ValueError(
            f"explain must be a non-negative int (how many top documents to explain), got {explain!r}"
        )


@component
class R2RRanker:
    """
    Ranks Documents by their relevance to a query with a reason2rank model, and explains the top ones on request.

    Any model ``reason2rank.load`` opens works: a reason2rank model directory (with ``r2r_model.json``), or a
    plain transformers cross-encoder, bi-encoder or causal LM with ``model_kwargs={"family": ...}``. Local paths
    and Hugging Face Hub ids are both accepted; nothing is downloaded for a local path.

    Every returned Document is a copy of the input one with ``score`` set; the list is sorted by descending
    score. With ``explain=k`` the top ``k`` Documents also get ``meta["r2r_reasoning"]`` (generated text on
    how the document addresses the query; causal-LM models only), ``meta["r2r_evidence"]`` (the sentence of the
    document whose removal lowers its score most) and ``meta["r2r_comparison"]`` (why it outranks the next
    document; causal-LM models only). A value is ``None`` where the model cannot give it. Documents whose
    ``content`` is ``None`` are kept, with a warning, and placed last with a finite score below every scored
    document (the core's policy for documents without text, the same in PyTerrier).

    Usage example:
    ```python
    from haystack import Document
    from haystack_integrations.components.rankers.reason2rank import R2RRanker

    ranker = R2RRanker(model="path/to/all-MiniLM-L6-v2", model_kwargs={"family": "bi-encoder"}, top_k=2, explain=1)
    docs = [
        Document(content="Paris is the capital of France. It has many museums."),
        Document(content="Berlin is the capital of Germany."),
        Document(content="Water boils at 100 degrees."),
    ]
    result = ranker.run(query="What is the capital of France?", documents=docs)
    for doc in result["documents"]:
        print(doc.score, doc.content, doc.meta.get("r2r_evidence"))
    # 0.72 Paris is the capital of France. It has many museums. Paris is the capital of France.
    # 0.40 Berlin is the capital of Germany. None
    ```

    In a pipeline it goes between a retriever and a prompt builder:
    `pipeline.connect("retriever.documents", "ranker.documents")`, then
    `pipeline.connect("ranker.documents", "prompt_builder.documents")`.
    """

    def __init__(
        self,
        *,
        model: str | os.PathLike,
        top_k: int = 10,
        score_threshold: float | None = None,
        explain: int = 0,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        device: ComponentDevice | None = None,
        token: Secret | None = Secret.from_env_var(["HF_API_TOKEN", "HF_TOKEN"], strict=False),  # noqa: B008
        batch_size: int | None = None,
        progress_bar: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        image_root: str | None = None,
    ) -> None:
        """
        Create the ranker. Nothing is loaded here; the model loads in ``warm_up()`` (or on the first ``run``).

        :param model: A local model directory or a Hugging Face Hub id, as ``reason2rank.load`` takes it.
        :param top_k: The maximum number of Documents to return.
        :param score_threshold: If set, only Documents with a score at or above it are returned.
        :param explain: How many of the top Documents to explain (0: none). Explaining costs extra model
            passes (and generation for causal-LM models), so keep it small.
        :param meta_fields_to_embed: Meta fields whose values are put before the content, joined with
            ``embedding_separator``, in the text the model reads. Missing or empty values are skipped.
        :param embedding_separator: The separator for ``meta_fields_to_embed``.
        :param device: The device to load the model on. ``None`` picks the default device (a GPU when there
            is one) at warm-up time, so a saved pipeline stays portable between machines.
        :param token: The Hugging Face token for gated or private hub models; passed on only when it resolves.
        :param batch_size: Pairs per forward pass; ``None`` lets reason2rank choose (it halves the batch on
            CUDA out-of-memory either way).
        :param progress_bar: Show a progress bar while scoring (off by default: the component runs once per
            query, and a bar per query floods logs).
        :param model_kwargs: More keyword arguments for ``reason2rank.load``, e.g.
            ``{"family": "bi-encoder", "dtype": "fp32", "max_length": 256}``.
        :param image_root: For vision-language models (``model_kwargs={"family": "vlm"}``): the directory image
            files named by ``meta["file_path"]`` must lie under (relative paths resolve against it). Images also
            come from ``blob`` and from ``run(image_contents=...)``.
        """
        _check_top_k(top_k)
        _check_explain(explain)
        if not isinstance(embedding_separator, str):
            raise ValueError(f"embedding_separator must be a str, got {embedding_separator!r}")
        if device is not None and not isinstance(device, ComponentDevice):
            raise ValueError(
                f"device must be a haystack ComponentDevice or None, got {device!r}; "
                "e.g. ComponentDevice.from_str('cuda:0')"
            )
        if device is not None and device.has_multiple_devices:
            raise ValueError(
                "R2RRanker runs on a single device; a ComponentDevice device map is not supported"
            )
        clashes = sorted(set(model_kwargs or {}) & set(_OWN_ARGUMENTS))
        if clashes:
            raise ValueError(
                f"model_kwargs must not contain {clashes}: pass them as R2RRanker arguments "
                f"({', '.join(f'{k}=...' for k in clashes)}) instead"
            )
        self.model = str(model)
        self.top_k = top_k
        self.score_threshold = score_threshold
        self.explain = explain
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.embedding_separator = embedding_separator
        self.device = device
        self.token = token
        self.batch_size = batch_size
        self.progress_bar = bool(progress_bar)
        self.model_kwargs = dict(model_kwargs or {})
        self.image_root = image_root
        self._reranker: Reranker | None = None

    # -- serialisation ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """
        Serialize this component to a dictionary.

        :returns: The dictionary, as ``Pipeline.dumps`` writes it.
        """
        return default_to_dict(
            self,
            model=self.model,
            top_k=self.top_k,
            score_threshold=self.score_threshold,
            explain=self.explain,
            meta_fields_to_embed=list(self.meta_fields_to_embed),
            embedding_separator=self.embedding_separator,
            device=self.device.to_dict() if self.device is not None else None,
            token=self.token.to_dict() if self.token is not None else None,
            batch_size=self.batch_size,
            progress_bar=self.progress_bar,
            model_kwargs=copy.deepcopy(self.model_kwargs),
            image_root=self.image_root,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> R2RRanker:
        """
        Deserialize the component from a dictionary (``data`` is left untouched).

        :param data: The dictionary ``to_dict`` wrote.
        :returns: The component.
        """
        data = {**data, "init_parameters": copy.deepcopy(data.get("init_parameters", {}))}
        init_params = data["init_parameters"]
        if init_params.get("device") is not None:
            init_params["device"] = ComponentDevice.from_dict(init_params["device"])
        deserialize_secrets_inplace(init_params, keys=["token"])
        return default_from_dict(cls, data)

    # -- model ------------------------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Load the model. Calling it again does nothing."""
        if self._reranker is not None:
            return
        with _WARM_UP_LOCK:
            if self._reranker is not None:
                return
            device = ComponentDevice.resolve_device(self.device)
            kwargs: dict[str, Any] = dict(self.model_kwargs)
            kwargs["device"] = device.to_torch_str()
            if self.batch_size is not None:
                kwargs["batch_size"] = self.batch_size
            kwargs["progress"] = self.progress_bar
            token = self.token.resolve_value() if self.token is not None else None
            if token is not None:
                kwargs["token"] = token
            self._reranker = reason2rank.load(self.model, **kwargs)

    async def warm_up_async(self) -> None:
        """Load the model in a worker thread, so an async pipeline's event loop is not blocked meanwhile."""
        await asyncio.get_running_loop().run_in_executor(None, self.warm_up)

    # -- running ----------------------------------------------------------------------------------------------
    def _title_of(self, doc: Document) -> str | None:
        """The ``meta_fields_to_embed`` values joined with ``embedding_separator``: the model reads them before
        the content, as a title, so that evidence is always a span of ``content``."""
        values = [
            str(doc.meta[key]) for key in self.meta_fields_to_embed if key in doc.meta and doc.meta[key]
        ]
        return self.embedding_separator.join(values) or None

    @component.output_types(documents=list[Document])
    def run(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        score_threshold: float | None = None,
        explain: int | None = None,
        image_contents: list[ImageContent | None] | None = None,
    ) -> dict[str, list[Document]]:
        """
        Rank the Documents by relevance to the query, highest score first.

        :param query: The query.
        :param documents: The candidate Documents. Duplicates (same id) are dropped, keeping the first.
        :param top_k: Overrides the ``top_k`` given at init.
        :param score_threshold: Overrides the ``score_threshold`` given at init.
        :param explain: Overrides the ``explain`` given at init.
        :param image_contents: Images aligned with ``documents`` (``None`` for a document without one), e.g. from
            ``DocumentToImageContent``, for vision-language models.
        :returns: ``{"documents": [...]}``: new Document objects with ``score`` (and, for explained
            documents, the ``r2r_*`` meta keys) set, sorted by descending score.
        :raises ValueError: If ``top_k`` is not positive or ``explain`` is negative.
        """
        top_k = self.top_k if top_k is None else top_k
        score_threshold = self.score_threshold if score_threshold is None else score_threshold
        explain = self.explain if explain is None else explain
        _check_top_k(top_k)
        _check_explain(explain)
        if not documents:
            return {"documents": []}
        if image_contents is not None and len(image_contents) != len(documents):
            raise ValueError(
                f"image_contents has {len(image_contents)} entries for {len(documents)} documents; give one per "
                "document (None where a document has no image)"
            )
        images = {
            id(doc): document_images(doc, image_contents[i] if image_contents else None, self.image_root)
            for i, doc in enumerate(documents)
        }

        unique: list[Document] = []
        seen: set[str] = set()
        for doc in documents:
            if doc.id in seen:
                continue
            seen.add(doc.id)
            unique.append(doc)
        if len(unique) < len(documents):
            kept_ids = {id(doc) for doc in unique}
            dropped = [doc.id for doc in documents if id(doc) not in kept_ids]
            logger.warning(
                "R2RRanker dropped {n} document(s) whose id repeats an earlier one, keeping the first of each "
                "(Haystack derives the id from content and meta, so e.g. content='' and content=None collide): {ids}",
                n=len(dropped),
                ids=", ".join(dropped[:5]) + (" ..." if len(dropped) > 5 else ""),
            )

        n_explain = min(explain, top_k)  # explanations past top_k would be cut anyway
        # documents without content go to the core as documents without text: it ranks them last (see
        # reason2rank.reranker) with a finite score, and warns once
        core_docs = [
            Doc(id=str(i), text=doc.content, title=self._title_of(doc), images=images[id(doc)])
            for i, doc in enumerate(unique)
        ]
        if any(is_readable(d, images=True) for d in core_docs):
            self.warm_up()
        reranker = self._reranker if self._reranker is not None else _NothingToScore()
        ranked: list[Document] = []
        results = reranker.rerank(Query(id="query", text=query), core_docs, explain=n_explain)
        calls = getattr(results, "info", {}).get("calls")  # LLM strategies: the calls ranking took
        for scored in results:
            doc = unique[int(scored.doc.id)]
            meta = {k: v for k, v in doc.meta.items() if k not in _META_KEYS}
            if calls is not None:
                meta[META_CALLS] = calls
            if scored.rank < n_explain:
                meta[META_REASONING] = scored.reasoning
                meta[META_EVIDENCE] = scored.evidence
                meta[META_COMPARISON] = scored.comparison
            ranked.append(dataclasses.replace(doc, score=scored.score, meta=meta))

        ranked = ranked[:top_k]
        if score_threshold is not None:
            ranked = [doc for doc in ranked if doc.score >= score_threshold]
        return {"documents": ranked}

    @component.output_types(documents=list[Document])
    async def run_async(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        score_threshold: float | None = None,
        explain: int | None = None,
        image_contents: list[ImageContent | None] | None = None,
    ) -> dict[str, list[Document]]:
        """
        Asynchronous ``run``: the same work, in a worker thread of the running event loop.

        :param query: The query.
        :param documents: The candidate Documents.
        :param top_k: Overrides the ``top_k`` given at init.
        :param score_threshold: Overrides the ``score_threshold`` given at init.
        :param explain: Overrides the ``explain`` given at init.
        :param image_contents: Images aligned with ``documents``, as ``run`` takes them.
        :returns: ``{"documents": [...]}``, as ``run`` returns it.
        """
        call = functools.partial(
            self.run,
            query=query,
            documents=documents,
            top_k=top_k,
            score_threshold=score_threshold,
            explain=explain,
            image_contents=image_contents,
        )
        return await asyncio.get_running_loop().run_in_executor(None, call)

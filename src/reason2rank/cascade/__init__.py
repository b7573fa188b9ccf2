"""Passage cascade for long documents (IDCM, Hofstätter et al., SIGIR 2021).

A long document is split into overlapping token windows (IDCM: 50 tokens plus 7 tokens of overlap on each
side; ``windows``). A cheap *selector* (ESM; ``selectors``) scores every window and keeps the top ``top_s`` per
document; the expensive *scorer* (ETM, any pointwise ``Reranker`` of the core) scores only the kept windows, in
one engine run over all documents of all queries; the window scores are aggregated into the document score
(``max``, ``first`` passage, or a learned ``weighted`` sum of the top-k). The best window is the document's
evidence (``reranker``).

``CascadeReranker`` *is* a ``Reranker``, so both adapters take it as they take any model::

    from reason2rank.cascade import CascadeReranker
    cascade = CascadeReranker("path/to/all-MiniLM-L6-v2", etm_family="bi-encoder", selector="bm25", top_s=4)
    cascade.rerank("how long is the life cycle of a flea", long_docs, explain=1)   # evidence = best window

Selectors: ``"bm25"`` (BM25 among the windows of the document, pure python), ``"bi-encoder"`` (cosine of a
bi-encoder, ``selector_model=``), ``"kernel"`` (the IDCM kernel model, ``selector_model=`` a directory written by
``KernelSelector.save``), ``"all"`` (no selection: every window is scored, i.e. max-passage), or any object
with ``score_windows(items) -> list[np.ndarray]`` where items are ``(query text, [window texts])`` pairs.

Training lives with the other training code, in ``reason2rank.distill.cascade``: ``train_etm_ranknet`` fine-tunes
the ETM (and the weighted aggregation) on all windows with RankNet on (query, relevant doc, non-relevant doc)
triples; ``distill_esm`` trains the kernel selector to reproduce the ETM's window ranking (LambdaRank-weighted
pairwise loss or KL between softmaxed score lists).
"""

from reason2rank.cascade.reranker import AGGREGATIONS, CascadeReranker, CascadeResult, WeightedTopK, aggregate
from reason2rank.cascade.selectors import (
    AllSelector,
    BiEncoderSelector,
    BM25Selector,
    IDCMKernelESM,
    KernelSelector,
    WindowSelector,
    select_top,
)
from reason2rank.cascade.windows import Window, split_windows

__all__ = [
    "AGGREGATIONS",
    "AllSelector",
    "BM25Selector",
    "BiEncoderSelector",
    "CascadeReranker",
    "CascadeResult",
    "IDCMKernelESM",
    "KernelSelector",
    "WeightedTopK",
    "Window",
    "WindowSelector",
    "aggregate",
    "select_top",
    "split_windows",
]

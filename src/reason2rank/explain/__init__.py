"""Explanations for the top-k of each ranking: generated reasoning and comparisons, and evidence sentences.

- ``top_k``: ``explain_top_k``, the step ``Reranker.rerank_batch(explain=k)`` runs;
- ``occlusion``: model-agnostic evidence (the sentence whose removal lowers the score most);
- ``evidence``: locating a teacher's evidence in a document, and the token machinery of a learned evidence head;
- ``sentences``: the sentence spans evidence is reported in.
"""

from reason2rank.explain.occlusion import occlusion_evidence
from reason2rank.explain.sentences import sentence_spans, split_sentences
from reason2rank.explain.top_k import explain_top_k

__all__ = ["explain_top_k", "occlusion_evidence", "sentence_spans", "split_sentences"]

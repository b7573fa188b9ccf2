"""Small training sets for the distillation tests: graded candidates with reasoning, evidence, comparisons."""

from __future__ import annotations

from reason2rank.distill.dataset import Candidate, Comparison, TrainingQuery, TrainingSet
from reason2rank.types import Doc, Query

TOPICS = ["coffee", "volcano", "glacier", "violin", "tomato", "satellite", "penguin", "copper"]


def toy_training_set(n_queries: int = 6, n_docs: int = 5, reasoning: bool = True) -> TrainingSet:
    """Per query: doc 0 grade 3 (on topic, with an answer), doc 1 grade 1 (on topic), the rest 0 (off topic);
    reasoning, evidence (a sentence of the document), one comparison."""
    queries = []
    for i in range(n_queries):
        topic = TOPICS[i % len(TOPICS)]
        cands = []
        for j in range(n_docs):
            subject = topic if j < 2 else TOPICS[(i + j) % len(TOPICS)]
            if j == 0:
                text = f"The {subject} changes because of heat. It describes how the {subject} changes over time."
            else:
                text = f"The {subject} report number {j}. It describes how the {subject} changes over time."
            grade = 3.0 if j == 0 else 1.0 if j == 1 else 0.0
            cands.append(
                Candidate(
                    doc=Doc(id=f"q{i}d{j}", text=text, title=f"Note {j}" if j % 2 else None),
                    grade=grade,
                    reasoning=(f"The document is about the {subject}." if reasoning else None),
                    evidence=(f"It describes how the {subject} changes over time." if grade > 0 else None),
                )
            )
        comps = [Comparison(better=f"q{i}d0", worse=f"q{i}d1", reasoning=f"A is the main {topic} report.")]
        queries.append(
            TrainingQuery(
                query=Query(id=f"q{i}", text=f"how does the {topic} change"),
                candidates=cands,
                comparisons=comps if reasoning else [],
            )  # fmt: skip
        )
    return TrainingSet(queries)

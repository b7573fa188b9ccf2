"""A scripted LLM that answers ranking prompts by the true relevance written into each passage ("grade N")."""

from __future__ import annotations

import re
import string

from reason2rank.llm.backend import Backend, GenerationResult

GRADE = re.compile(r"grade (\d+)")


def grade(text: str) -> int:
    m = GRADE.search(text)
    return int(m.group(1)) if m else -1


class OracleBackend(Backend):
    """Reads the passages of listwise ([n] text lines), setwise (Passage X: "text" or [n] text) and pairwise
    (Passage A / Passage B) prompts and answers with the truly best ones. ``garbage=True`` answers nonsense."""

    name = "oracle"
    supported_options = frozenset({"prefix", "seed", "top_p", "stop"})

    def __init__(self, garbage: bool = False, fail_on: str | None = None) -> None:
        self.garbage = garbage
        self.fail_on = fail_on
        self.calls = 0
        self.batches: list[int] = []

    def answer(self, prompt: str) -> str:
        if self.garbage:
            return "I am not sure what you mean."
        lettered = re.findall(r'Passage ([A-Z]): "(.*?)"', prompt, re.S)
        if lettered:
            if len(lettered) == 2 and "two passages" in prompt:
                (la, a), (lb, b) = lettered
                return " A" if grade(a) >= grade(b) else " B"
            best = max(range(len(lettered)), key=lambda i: (grade(lettered[i][1]), -i))
            return " " + lettered[best][0]
        numbered = re.findall(r"^\[(\d+)\] (.*)$", prompt, re.M)
        if "which of the following documents is most relevant" in prompt:
            best = max(range(len(numbered)), key=lambda i: (grade(numbered[i][1]), -i))
            return f"<think>document {numbered[best][0]} answers it</think> <answer>[{numbered[best][0]}]</answer>"
        if "Document A:" in prompt:
            a = prompt.split("Document A:")[1].split("Document B:")[0]
            b = prompt.split("Document B:")[1]
            return (
                "<think>comparing</think><answer>A</answer>" if grade(a) >= grade(b) else "<answer>B</answer>"
            )
        ranked = sorted(numbered, key=lambda t: (-grade(t[1]), int(t[0])))
        return " > ".join(f"[{n}]" for n, _ in ranked)

    def generate(
        self, messages, *, on_result=None, json_schema=None, max_new_tokens=1024, temperature=0.0, **options
    ):
        self.check_options(options)
        self.batches.append(len(messages))
        out = []
        for m in messages:
            self.calls += 1
            prompt = "\n".join(x["content"] for x in m)
            if self.fail_on and self.fail_on in prompt:
                out.append(GenerationResult(error="HTTP 503: overloaded"))
                continue
            out.append(
                GenerationResult(
                    text=self.answer(prompt), prompt_tokens=len(prompt.split()), completion_tokens=3
                )
            )
        return out


LETTERS = string.ascii_uppercase

"""Prompt templates render exactly (golden files) and documents are cut as configured.

Regenerate the golden files after a deliberate prompt change (and bump the template's version) with
``R2R_UPDATE_GOLDEN=1 pytest tests/teacher/test_prompts.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from mock_openai_server import MockChatServer
from reason2rank.teacher import DocCutter, PromptTemplate, Teacher, builtin_prompt, load_prompts
from reason2rank.teacher.prompts import messages_to_text, render_compare, render_direct, render_listwise
from reason2rank.types import Doc, Query

GOLDEN = Path(__file__).resolve().parent / "golden"
QUERY = Query("q1", "how long is the life cycle of a flea")
DOCS = [
    Doc("d1", "The flea life cycle can last from two weeks\nto eight months.   It depends on   conditions."),
    Doc("d2", "Female fleas lay their eggs on the host animal.", title="Flea eggs"),
    Doc("d3", "Our premium cat food keeps your pet healthy. " + " ".join(f"w{i}" for i in range(400))),
]


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("R2R_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"prompt differs from {path}"


def test_direct_prompt_golden():
    messages, shown = render_direct(builtin_prompt("direct"), QUERY, DOCS[0], DocCutter())
    assert [m["role"] for m in messages] == ["system", "user"]
    assert shown == "The flea life cycle can last from two weeks to eight months. It depends on conditions."
    check_golden("direct_v1.txt", messages_to_text(messages))


def test_compare_prompt_golden():
    messages, shown = render_compare(builtin_prompt("compare"), QUERY, DOCS[1], DOCS[0], DocCutter())
    assert shown[0] == "Flea eggs Female fleas lay their eggs on the host animal."
    check_golden("compare_v1.txt", messages_to_text(messages))


def test_listwise_prompt_golden_has_one_turn_per_passage():
    messages, shown = render_listwise(builtin_prompt("listwise"), QUERY, DOCS, DocCutter(max_words=20))
    roles = [m["role"] for m in messages]
    assert roles == ["system", "user", "assistant"] + ["user", "assistant"] * 3 + ["user"]
    assert messages[3]["content"] == "[1] " + shown[0]
    assert messages[8]["content"] == "Received passage [3]."
    assert len(shown[2].split()) == 20
    assert "I will provide you with 3 passages" in messages[1]["content"]
    assert messages[-1]["content"].startswith(f"Search Query: {QUERY.text}\nRank the 3 passages above")
    check_golden("listwise_v1.txt", messages_to_text(messages))


def test_cut_by_words():
    assert DocCutter(max_words=5)("a  b\tc\n d e f g") == "a b c d e"
    assert DocCutter(max_words=5)("  a b ") == "a b"
    assert DocCutter(max_words=None)("a  b\nc") == "a b c"
    text = DocCutter()(DOCS[2].text)
    assert len(text.split()) == 300 and text.endswith("w291")


def test_cut_by_tokens_keeps_the_documents_own_characters(tiny_llama_dir):
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    text = "The flea life cycle can last from two weeks to eight months, depending on conditions."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > 8
    cut = DocCutter(max_words=None, max_tokens=8, tokenizer=tok)(text)
    assert text.startswith(cut)
    assert len(tok(cut, add_special_tokens=False)["input_ids"]) == 8
    assert tok.decode(ids[:8]).strip() == cut
    assert DocCutter(max_words=None, max_tokens=len(ids), tokenizer=tiny_llama_dir)(text) == text
    with pytest.raises(ValueError, match="needs a tokenizer"):
        DocCutter(max_words=None, max_tokens=8)
    with pytest.raises(ValueError, match="not both"):
        DocCutter(max_words=10, max_tokens=8, tokenizer=tok)


def test_teacher_cuts_documents_by_tokens_of_a_given_tokenizer(tiny_llama_dir):
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    with MockChatServer() as server, Teacher(f"openai:m@{server.url}", max_tokens=6, tokenizer=tok) as t:
        t.annotate([(QUERY, [DOCS[0]])])
        prompt = server.requests[0]["messages"][1]["content"]
        rec = next(t.store.records())
    shown = prompt.split("Document:\n")[1].split("\n\nRelevance scale")[0]
    assert len(tok(shown, add_special_tokens=False)["input_ids"]) == 6
    assert rec["doc_cut"] == "tokens:6"


def test_template_parsing_rejects_mistakes(tmp_path):
    with pytest.raises(ValueError, match=r"placeholder \{\{document_a\}\} is not available in a 'direct'"):
        PromptTemplate.parse("# task: direct\n=== user ===\n{{document_a}}")
    with pytest.raises(ValueError, match="header '# task: ...' must be one of"):
        PromptTemplate.parse("=== user ===\n{{query}}")
    with pytest.raises(ValueError, match="only tasks with a list of passages .* have per-passage sections"):
        PromptTemplate.parse("# task: direct\n=== passage user ===\n{{query}}")
    with pytest.raises(
        ValueError, match=r"placeholder \{\{passage\}\} is not available in a 'listwise' user"
    ):
        PromptTemplate.parse("# task: listwise\n=== user ===\n{{passage}}\n=== passage user ===\n[{{n}}]")
    with pytest.raises(ValueError, match="text before the first"):
        PromptTemplate.parse("# task: direct\nhello\n=== user ===\n{{query}}")


def test_custom_prompt_dir_overrides_and_changes_the_key(tmp_path):
    (tmp_path / "direct_mine.txt").write_text(
        "# task: direct\n=== user ===\nQ: {{query}}\nD: {{document}}\nJSON please.\n", encoding="utf-8"
    )
    prompts = load_prompts(tmp_path)
    tpl = prompts["direct"]
    assert tpl.version.startswith("direct/custom-") and prompts["compare"].version == "compare/v1"
    assert tpl.render({"query": "q", "document": "d"}) == [
        {"role": "user", "content": "Q: q\nD: d\nJSON please."}
    ]
    with MockChatServer() as server:
        with (
            Teacher(f"openai:m@{server.url}") as builtin,
            Teacher(f"openai:m@{server.url}", prompts=tmp_path) as custom,
        ):
            assert builtin.key("direct", QUERY, ["d1"]) != custom.key("direct", QUERY, ["d1"])
            custom.annotate([(QUERY, [DOCS[1]])])
        assert server.requests[0]["messages"] == [
            {
                "role": "user",
                "content": f"Q: {QUERY.text}\nD: Flea eggs Female fleas lay their eggs on the host animal.\nJSON please.",
            }
        ]
    with pytest.raises(KeyError, match="needs a value for"):
        tpl.render({"query": "q"})

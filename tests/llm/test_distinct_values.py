"""Distinct values under constrained decoding: a listwise answer cannot rank a passage twice. The guard's bans by
hand on a small vocabulary (one- and two-digit values), the schema mark kept out of what xgrammar and servers get,
and a random tiny model under the listwise schema: with the mark every sampled answer is a permutation; without it
some are not (so the test can fail)."""

from __future__ import annotations

import json

import pytest

from reason2rank.llm.distinct_values import (
    DISTINCT_KEYWORD,
    DigitTokens,
    DistinctValues,
    distinct_keys,
    server_schema,
)
from reason2rank.teacher.parsing import listwise_schema

VOCAB = [b'{"ids": [{"id": ', b"1", b"2", b"3", b"1,", b"2}", b"0", b"12", b", ", b'{"id": ', b"}", b"x", b""]


def guard(values):
    return DistinctValues([("id", tuple(values))], VOCAB, DigitTokens(VOCAB))


def names(ids):
    return sorted(VOCAB[i].decode() for i in ids.tolist())


def test_the_guard_bans_a_written_value_and_only_while_that_key_is_written():
    g = guard([1, 2, 3])
    assert g.banned() is None
    g.accept(0)  # '{"ids": [{"id": '
    assert names(g.banned()) == ["0", "12"]  # no value starts with 0 or is 12; all else allowed
    g.accept(2)  # 2
    assert g.used["id"] == set()  # the number may still go on (no terminator yet): only 2 itself is free
    assert names(g.banned()) == ["0", "1", "1,", "12", "2", "2}", "3"]
    g.accept(10)  # }
    assert g.used["id"] == {"2"} and g.banned() is None
    g.accept(8), g.accept(9)  # ', {"id": '
    assert names(g.banned()) == ["0", "12", "2", "2}"]


def test_two_digit_values_need_the_whole_number():
    g = guard(range(1, 13))
    for t in (0, 1, 10):  # '{"id": 1}': value 1 is written
        g.accept(t)
    assert g.used["id"] == {"1"}
    g.accept(8), g.accept(9)
    banned = names(g.banned())
    assert "1" not in banned and "12" not in banned and "1," in banned and "0" in banned  # 10..12 still free
    g.accept(1)  # typed "1": only 10, 11, 12 remain, so a terminator now would repeat 1
    banned = names(g.banned())
    assert {"}", ", ", "x", "12"} <= set(banned)  # 1 again, or 112
    assert not {"0", "1", "1,", "2}"} & set(banned)  # 10, 11, 11 then a comma, 12 then a brace


def test_the_mark_is_read_once_and_kept_from_xgrammar_and_servers():
    schema = listwise_schema(3, max_chars=60)
    assert schema["properties"]["ranked_passages"][DISTINCT_KEYWORD] == "identifier"
    marks, plain = distinct_keys(schema)
    assert marks == (("identifier", (1, 2, 3)),)
    assert DISTINCT_KEYWORD not in json.dumps(plain) and DISTINCT_KEYWORD not in json.dumps(
        server_schema(schema)
    )
    pytest.importorskip("xgrammar")
    from reason2rank.llm.constraints import Constraint

    c = Constraint.json(schema)
    assert c.distinct == marks and DISTINCT_KEYWORD not in c.spec
    with pytest.raises(ValueError, match="integer enum"):
        distinct_keys({"type": "array", DISTINCT_KEYWORD: "name", "items": {"properties": {"name": {}}}})


def test_a_random_model_under_the_listwise_schema_never_ranks_a_passage_twice(tiny_llama_dir):
    pytest.importorskip("xgrammar")
    from reason2rank.llm.transformers_backend import TransformersBackend

    backend = TransformersBackend(tiny_llama_dir, dtype="fp32", batch_size=4)
    marked = listwise_schema(4, max_chars=40)
    unmarked = json.loads(json.dumps(marked))
    del unmarked["properties"]["ranked_passages"][DISTINCT_KEYWORD]
    prompts = [[{"role": "user", "content": f"rank the passages {i}"}] for i in range(4)]
    repeats = {"marked": 0, "unmarked": 0}
    for seed in range(6):
        for name, schema in (("marked", marked), ("unmarked", unmarked)):
            for res in backend.generate(
                prompts, json_schema=schema, max_new_tokens=400, temperature=1.0, seed=seed
            ):
                if res.finish_reason != "stop":
                    continue
                ids = [e["identifier"] for e in json.loads(res.text)["ranked_passages"]]
                repeats[name] += len(set(ids)) < len(ids)
    assert repeats["marked"] == 0 and repeats["unmarked"] > 0, repeats

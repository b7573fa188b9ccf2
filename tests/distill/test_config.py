"""Training configs: names and paths resolve against the YAML's folder the way a user expects."""

from __future__ import annotations


def test_a_builtin_prompt_name_in_a_yaml_config_resolves_to_the_builtin(tmp_path):
    from reason2rank.distill.config import TrainConfig
    from reason2rank.distill.students import _resolve_prompt

    cfg = TrainConfig.from_dict({"output_dir": "out", "student": {"type": "decoder", "model": "m"}, "data": {"train": "t.jsonl"}},
                                base_dir=tmp_path)  # fmt: skip
    assert _resolve_prompt(cfg, "r2r_student") == "r2r_student"  # not tmp_path/r2r_student
    (tmp_path / "mine.json").write_text("{}")
    assert _resolve_prompt(cfg, "mine.json") == str(tmp_path / "mine.json")
    (tmp_path / "r2r_student").write_text("{}")  # a file of that name next to the config wins
    assert _resolve_prompt(cfg, "r2r_student") == str(tmp_path / "r2r_student")

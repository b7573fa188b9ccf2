"""Boundaries and tooling: the core imports no framework, every core module imports, types and lint are clean."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_IMPORT_ALL = """
import importlib, json, pkgutil, sys
import reason2rank
names = sorted(m.name for m in pkgutil.walk_packages(reason2rank.__path__, "reason2rank.") if not m.name.endswith("__main__"))
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except ImportError as e:  # an optional extra that is not installed
        failed[name] = str(e)
frameworks = sorted(m for m in sys.modules if m.split(".")[0] in ("pyterrier", "haystack", "pt_r2r", "haystack_r2r", "haystack_integrations"))
print(json.dumps({"modules": names, "failed": failed, "frameworks": frameworks}))
"""


def test_importing_every_core_module_loads_no_framework():
    out = subprocess.run([sys.executable, "-c", _IMPORT_ALL], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(report["modules"]) > 40 and not report["failed"]
    assert report["frameworks"] == [], f"the core imported {report['frameworks']}"


def test_cli_help_imports_no_torch():
    code = (
        "import sys\nfrom reason2rank.cli import build_parser\nbuild_parser()\nprint('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_mypy_is_clean_on_the_core():
    pytest.importorskip("mypy")
    out = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:]


def test_ruff_is_clean():
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed")
    out = subprocess.run([ruff, "check", "src", "tests", "benchmarks", "examples", "scripts"], cwd=ROOT,
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stdout[-4000:]


def test_package_ships_py_typed_and_no_test_fixture():
    src = ROOT / "src" / "reason2rank"
    assert (src / "py.typed").is_file()
    assert not list(src.rglob("mock*server*.py")), "test fixtures belong under tests/"

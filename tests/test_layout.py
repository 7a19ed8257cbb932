"""The code's shape, checked: the listing reads as the flow and the imports point one way.

These are the rules of issue 10 made executable, so a later change cannot quietly
undo them: stages import only downward (import-linter, the contract in
pyproject.toml), every stage names its entry point, and functions stay short enough
to read at once.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 80
# The simulator's traffic profiles are long tables of provider facts, not logic.
LONG_FUNCTIONS_ALLOWED = {"stream/sim/simulate.py"}
STAGES = ("ingest", "windows", "judge", "alerting", "live", "offline", "sim", "cli")


def _functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (node.name, node.end_lineno - node.lineno + 1)  # type: ignore[operator]
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]


def test_no_function_is_longer_than_a_screen() -> None:
    long = [
        f"{path.relative_to(ROOT)}:{name} ({lines} lines)"
        for top in ("stream", "models", "benchmarks")
        for path in sorted((ROOT / top).rglob("*.py"))
        if str(path.relative_to(ROOT)) not in LONG_FUNCTIONS_ALLOWED
        for name, lines in _functions(path)
        if lines > MAX_FUNCTION_LINES
    ]
    assert long == []


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_names_its_entry_point(stage: str) -> None:
    init = ROOT / "stream" / stage / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
    assert "Entry point" in doc, f"stream/{stage}/__init__.py must say what its entry point is"


def test_stages_import_only_downward_and_models_never_import_stream() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "import-linter is a test dependency: pip install -e '.[test]'"
    run = subprocess.run(
        [lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout[-3000:]
    assert "Contracts: 2 kept, 0 broken." in run.stdout

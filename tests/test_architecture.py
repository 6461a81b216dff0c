"""The house's shape, checked: floors that import only downward (imports inside functions
included), no module over 500 lines, and the toy world plugged in from above.

The floors themselves are declared in pyproject.toml (``[tool.importlinter]``) and drawn in
docs/architecture.md; ``.ci/run`` runs ``lint-imports`` too, before the tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("repro", "hydra_plugins")
MAX_LINES = 500


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the tree at ``cwd`` (its pyproject.toml, its packages first on the
    path)."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command as c; c()",
            "--no-cache",
        ],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(cwd)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def copy_tree(dst: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package,
            dst / package,
            ignore=shutil.ignore_patterns("toy_models", "__pycache__"),
        )
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    return dst


def test_the_floors_hold():
    out = lint_imports(ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_an_upward_import_inside_a_function_breaks_the_floors(tmp_path):
    """The contract reads imports inside functions: the trainer (floor 2) reaching up to the
    results frame (floor 4) from inside a function fails, naming both."""
    tree = copy_tree(tmp_path)
    trainer = tree / "repro" / "trainer.py"
    trainer.write_text(
        trainer.read_text() + "\n\ndef _peek():\n    from repro.collect import collect_runs\n\n"
        "    return collect_runs\n"
    )
    out = lint_imports(tree)
    assert out.returncode != 0
    assert "repro.trainer is not allowed to import repro.collect" in out.stdout


def test_a_cycle_between_siblings_breaks_the_contract(tmp_path):
    tree = copy_tree(tmp_path)
    files = tree / "repro" / "files.py"  # floor 0 reaching sideways into the config schema
    config = tree / "repro" / "config.py"
    assert "repro.files" not in config.read_text()
    config.write_text(
        config.read_text() + "\n\ndef _write():\n    from repro import files\n\n    return files\n"
    )
    files.write_text(
        files.read_text()
        + "\n\ndef _schema():\n    from repro import config\n\n    return config\n"
    )
    out = lint_imports(tree)
    assert out.returncode != 0
    assert "no cycles" in out.stdout and "BROKEN" in out.stdout


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_is_over_500_lines(package):
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in (ROOT / package).rglob("*.py")
    }
    assert sizes
    assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}


def test_the_toy_world_plugs_in_from_above():
    """Nothing below the toy world imports it; asking the task registry for one of its tasks
    loads it through the ``repro.plugins`` entry point."""
    code = (
        "import sys, repro.tasks, repro.run, repro.cost, repro.collect;"
        "assert not [m for m in sys.modules if m.startswith('repro.toyworld')], 'imported';"
        "from repro.tasks import get_task, task_names;"
        "assert get_task('toy_review').generate is not None;"
        "assert 'repro.toyworld' in sys.modules;"
        "assert task_names('toy_fact') == ('toy_fact',)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)

"""DESIGN §5 conventions, enforced: the engine never imports streamlit; pages hold no torch."""

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "tlcore").rglob("*.py")), ids=lambda p: p.name)
def test_engine_never_imports_streamlit(path):
    assert "streamlit" not in imported_modules(path)


@pytest.mark.parametrize("path", [ROOT / "app.py", *sorted((ROOT / "app_pages").glob("*.py"))],
                         ids=lambda p: p.name)
def test_pages_hold_no_torch_code(path):
    assert not imported_modules(path) & {"torch", "torchvision"}


def test_every_segmented_control_wraps_its_options():
    """Placed in a column, a segmented control keeps its options on one row and scrolls them: in a
    1280 px window the zoo's chart axis hid its 'Year' option past the column's edge."""
    calls = [node for path in [ROOT / "app.py", *(ROOT / "app_pages").glob("*.py"), *(ROOT / "ui").glob("*.py")]
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "segmented_control"]
    assert len(calls) >= 4 and all(any(k.arg == "wrap" and getattr(k.value, "value", None) is True for k in c.keywords)
                                   for c in calls)


@pytest.mark.skipif(not importlib.util.find_spec("ruff"), reason="ruff comes with requirements-dev.txt")
def test_ruff_is_clean():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", str(ROOT)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_production_settings_are_what_the_readme_says():
    import tomllib

    settings = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    server = settings["server"]
    assert server["enableXsrfProtection"] and server["enableCORS"] and server["fileWatcherType"] == "none"
    # A forced full collection after every page run held the GIL ~0.37 s: two thirds of the
    # server's CPU with ten visitors (bench/load_test.py).
    assert settings["runner"]["postScriptGC"] is False


def test_a_test_run_leaves_no_data_folder_behind(tmp_path):
    # Each run's tlcore home holds ~300 MB of caches; hundreds of runs left behind once filled a disk.
    code = "import tests.conftest as c, os; assert os.path.isdir(c._HOME); print(c._HOME)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(str(tmp_path))  # it did make its folder there
    assert list(tmp_path.iterdir()) == []

"""The README says what the code does: its examples run, and its lists match the code's own."""

import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _python_blocks():
    """The README's Python examples: ``(host blocks, GPU blocks)``; a GPU block imports CuPy."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return [b for b in blocks if "import cupy" not in b], [b for b in blocks if "import cupy" in b]


@pytest.fixture(autouse=True)
def scratch_scheduler_registry(monkeypatch):
    """The README registers a scheduler of its own; keep it from outliving this module's tests."""
    from nmfsched.schedulers import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def _run(blocks):
    namespace = {}
    for block in blocks:  # later blocks may use names from earlier ones, as a reader would
        exec(compile(block, str(README), "exec"), namespace)
    return namespace


def test_readme_python_examples_run():
    blocks, gpu_blocks = _python_blocks()
    assert len(blocks) >= 3 and len(gpu_blocks) == 1
    namespace = _run(blocks)
    assert namespace["W"].shape[1] == 16
    best = namespace["search"].best_params_
    assert len(best) == 1 and namespace["search"].best_score_ > 0.5


@pytest.mark.gpu
def test_readme_gpu_example_runs():
    from nmfsched.kernels import unavailable_reason

    if unavailable_reason("gpu"):
        pytest.skip(unavailable_reason("gpu"))
    import cupy

    blocks, gpu_blocks = _python_blocks()
    namespace = _run(blocks + gpu_blocks)
    assert isinstance(namespace["W_gpu"], cupy.ndarray)


def _section(title):
    text = README.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_layout_lists_exactly_the_notebooks_that_exist():
    listed = set(re.findall(r"\b\w+\.ipynb\b", _section("Layout")))
    assert listed == {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}


def test_scheduler_table_lists_every_built_in_scheduler():
    from nmfsched import schedulers

    table = set(re.findall(r'^\| `"(\w+)"`', _section("Schedulers"), flags=re.M))
    built_in = {n for n in schedulers.available() if type(schedulers.get(n)).__module__.startswith("nmfsched.")}
    assert table == built_in


def test_history_keys_are_the_ones_listed():
    from nmfsched.epochs import HISTORY_KEYS

    text = _section("Use it from Python")
    listed = re.search(r"`history_` \(a dict of equal-length arrays, one entry per epoch: (.*?)\)", text, flags=re.S)
    assert re.findall(r"`(\w+)`", listed.group(1)) == list(HISTORY_KEYS)


@pytest.mark.parametrize("command", ["factorize", "bound", "demo", "train-policy"])
def test_every_command_line_flag_is_documented(command, capsys):
    from nmfsched.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    flags = set(re.findall(r"(--[a-z][a-z-]*)", capsys.readouterr().out)) - {"--help"}
    text = _section("Command line")
    missing = sorted(f for f in flags if f not in text and f.replace("--no-", "--", 1) not in text)
    assert flags and not missing


def test_every_manifest_key_is_documented():
    from nmfsched.options import BY_KEY

    text = _section("Command line")
    assert all(f"`{key}`" in text for key in BY_KEY)


def test_readme_missing_entries_example_completes_and_chooses_the_rank():
    blocks, _ = _python_blocks()
    namespace = _run(blocks)
    assert namespace["choice"].rank == 4
    hidden, truth, completed = namespace["hidden"], namespace["truth"], namespace["completed"]
    assert np.linalg.norm((completed - truth)[hidden]) <= 1e-3 * np.linalg.norm(truth[hidden])

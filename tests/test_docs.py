"""The documentation says what the code does: its examples run, its lists match the code's own,
every public name has an API page, every link between pages resolves, and the notebooks'
stored outputs come from their current code."""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GUIDE = DOCS / "user-guide"
#: The pages whose examples run, in the order a reader meets them (later pages use earlier names).
EXAMPLE_PAGES = ["getting-started.md", "user-guide/fitting.md", "user-guide/schedulers.md",
                 "user-guide/missing-penalties-rank.md", "user-guide/large-data.md"]


def _page(name):
    return (DOCS / name).read_text()


def _python_blocks(name):
    return re.findall(r"```python\n(.*?)```", _page(name), flags=re.S)


@pytest.fixture(autouse=True)
def scratch_scheduler_registry(monkeypatch):
    """A page registers a scheduler of its own; keep it from outliving this module's tests."""
    from nmfsched.schedulers import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


@pytest.fixture(scope="module")
def examples():
    """The namespace after every host example of :data:`EXAMPLE_PAGES` ran, in order."""
    from nmfsched.schedulers import registry

    saved = dict(registry._REGISTRY)
    namespace = {}
    try:
        for page in EXAMPLE_PAGES:
            for block in _python_blocks(page):
                assert "import cupy" not in block, page
                exec(compile(block, str(DOCS / page), "exec"), namespace)
    finally:
        registry._REGISTRY.clear()
        registry._REGISTRY.update(saved)
    return namespace


def test_every_page_with_python_examples_is_run():
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if "_build" not in p.parts
             and "generated" not in p.parts and "```python" in p.read_text()}
    assert pages == set(EXAMPLE_PAGES) | {"index.md", "user-guide/gpu.md"}


def test_examples_run_and_say_what_they_show(examples):
    assert examples["W"].shape[1] == 16
    best = examples["search"].best_params_
    assert len(best) == 1 and examples["search"].best_score_ > 0.5
    assert examples["choice"].rank == 4
    hidden, truth, completed = examples["hidden"], examples["truth"], examples["completed"]
    assert np.linalg.norm((completed - truth)[hidden]) <= 1e-3 * np.linalg.norm(truth[hidden])
    assert examples["model"].components_.shape == (16, 64)  # the Dask fit, last
    held = examples["held"].history_["batch_size"]  # a scheduler shaping the batch growth
    assert held[0] == held[1] == held[2] < held[3]


def test_home_page_example_runs():
    (block,) = _python_blocks("index.md")
    namespace = {}
    exec(compile(block, str(DOCS / "index.md"), "exec"), namespace)
    assert namespace["W"].shape == (1797, 16)


@pytest.mark.gpu
def test_gpu_example_runs(examples):
    from nmfsched.kernels import unavailable_reason

    if unavailable_reason("gpu"):
        pytest.skip(unavailable_reason("gpu"))
    import cupy

    namespace = dict(examples)
    for block in _python_blocks("user-guide/gpu.md"):
        exec(compile(block, str(GUIDE / "gpu.md"), "exec"), namespace)
    assert isinstance(namespace["W_gpu"], cupy.ndarray)


def _section(page, title):
    text = _page(page)
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_layout_lists_exactly_the_notebooks_that_exist():
    listed = set(re.findall(r"\b\w+\.ipynb\b", _section("developer.md", "Layout")))
    assert listed == {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}


def test_examples_page_shows_every_notebook():
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    toctree = re.search(r"```\{toctree\}\n(.*?)```", _page("examples/index.md"), flags=re.S).group(1)
    assert set(re.findall(r"^(\w+)$", toctree, flags=re.M)) == notebooks
    for name in notebooks:  # the page's entries are links to the notebooks themselves
        assert (DOCS / "examples" / f"{name}.ipynb").resolve() == ROOT / "notebooks" / f"{name}.ipynb"


def test_scheduler_table_lists_every_built_in_scheduler():
    from nmfsched import schedulers

    table = set(re.findall(r'^\| `"(\w+)"`', _page("user-guide/schedulers.md"), flags=re.M))
    built_in = {n for n in schedulers.available() if type(schedulers.get(n)).__module__.startswith("nmfsched.")}
    assert table == built_in


def test_history_keys_are_the_ones_listed():
    from nmfsched.epochs import HISTORY_KEYS

    listed = re.search(r"`history_` \(a dict of equal-length arrays, one entry per epoch: (.*?)\)",
                       _page("user-guide/fitting.md"), flags=re.S)
    assert re.findall(r"`(\w+)`", listed.group(1)) == list(HISTORY_KEYS)


@pytest.mark.parametrize("command", ["factorize", "bound", "demo", "train-policy"])
def test_every_command_line_flag_is_documented(command, capsys):
    from nmfsched.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    flags = set(re.findall(r"(--[a-z][a-z-]*)", capsys.readouterr().out)) - {"--help"}
    text = _page("user-guide/cli.md")
    missing = sorted(f for f in flags if f not in text and f.replace("--no-", "--", 1) not in text)
    assert flags and not missing


def test_every_manifest_key_is_documented():
    from nmfsched.options import BY_KEY

    text = _page("user-guide/cli.md")
    assert all(f"`{key}`" in text for key in BY_KEY)


# -- the API reference -------------------------------------------------------------------
PUBLIC_MODULES = ["nmfsched", "nmfsched.schedulers", "nmfsched.rl", "nmfsched.theory"]


def _api_entries():
    """``{module: names}`` of the autosummary blocks of docs/api.md."""
    entries = {}
    for block in re.findall(r"```\{eval-rst\}\n(.*?)```", _page("api.md"), flags=re.S):
        module = re.search(r"\.\. currentmodule:: (\S+)", block).group(1)
        names = re.findall(r"^   (\w+)$", block, flags=re.M)
        entries.setdefault(module, []).extend(names)
    return entries


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_is_in_the_api_reference(module_name):
    module = importlib.import_module(module_name)
    public = [n for n in module.__all__ if not n.startswith("__")]
    listed = _api_entries().get(module_name, [])
    assert sorted(listed) == sorted(public)


def test_api_reference_lists_only_public_modules():
    assert set(_api_entries()) == set(PUBLIC_MODULES)


# -- links -------------------------------------------------------------------------------
def _slug(heading):
    """The anchor MyST gives a heading (``myst_heading_anchors``): GitHub's rule."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(path):
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def _doc_pages():
    skip = {"_build", "generated", "_generated"}
    return [p for p in DOCS.rglob("*.md") if not skip & set(p.relative_to(DOCS).parts)]


def _local_links(path):
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    return [link for link in links if not re.match(r"[a-z]+:", link)]


@pytest.mark.parametrize("page", [*_doc_pages(), ROOT / "README.md"], ids=lambda p: str(p.relative_to(ROOT)))
def test_internal_links_resolve(page):
    """Every relative link of a page (and the README) names a file that exists, and a
    ``#heading`` in it names a heading of that page."""
    for link in _local_links(page):
        target, _, anchor = link.partition("#")
        path = page if not target else (DOCS / target.lstrip("/") if target.startswith("/") else page.parent / target)
        assert path.exists(), f"{page.name}: {link} names no file"
        if anchor:
            assert anchor in _anchors(path), f"{page.name}: {link} names no heading of {path.name}"


def test_toctrees_name_pages_that_exist():
    for page in _doc_pages():
        for toctree in re.findall(r"```\{toctree\}\n(.*?)```", page.read_text(), flags=re.S):
            for entry in re.findall(r"^([\w/.-]+)$", toctree, flags=re.M):
                assert any((page.parent / f"{entry}{suffix}").exists() for suffix in (".md", ".ipynb")), entry


# -- the notebooks' stored outputs -------------------------------------------------------
def _docs_extension(name):
    """A module of docs/_ext (not a package: Sphinx's conf.py puts the folder on the path)."""
    spec = importlib.util.spec_from_file_location(name, DOCS / "_ext" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_stored_notebook_outputs_come_from_its_current_code(path):
    """The docs show the outputs stored in each notebook: ``make notebooks`` made them from
    the code the notebook holds now, without an error."""
    import json

    nb = json.loads(path.read_text())
    refresh = _docs_extension("refresh_notebooks")
    stamp = nb["metadata"].get(refresh.STAMP_KEY, {}).get("code_sha256")
    assert stamp == refresh.code_digest(nb), f"{path.name} changed after its outputs were made: run make notebooks"
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert outputs and not [o for o in outputs if o.get("output_type") == "error"]


# -- the benchmarks page -----------------------------------------------------------------
def test_benchmarks_page_is_generated_from_the_scripts_json(tmp_path):
    """Every (case, peer) of the committed peers.json is a row, the summary counts them as
    the script did, and the schedules table has a row per baseline with its provenance."""
    import json

    pytest.importorskip("matplotlib")
    _docs_extension("benchmark_pages").write_pages(DOCS / "benchmarks", tmp_path)
    peers = json.loads((DOCS / "benchmarks" / "peers.json").read_text())
    page = (tmp_path / "peers.md").read_text()
    assert page.startswith(f"Produced by `{peers['command']}` on {peers['date']}")
    rows = [line for line in page.splitlines() if line.startswith("| ") and not line.startswith("| data")]
    pairs = [(case["name"], p["peer"]) for case in peers["cases"] for p in case["peers"]]
    assert [r.split("|")[4].strip() for r in rows] == [peer for _, peer in pairs]
    reach = sum(p["defaults_reach"] for case in peers["cases"] for p in case["peers"])
    assert f"stops at or below the peer's error: {reach} of {len(pairs)}" in page
    assert (tmp_path / "peers_curves.png").stat().st_size > 10_000
    schedules = json.loads((DOCS / "benchmarks" / "schedulers.json").read_text())
    table = (tmp_path / "schedulers.md").read_text()
    assert set(re.findall(r"^\| (\w+) \| \d+%", table, flags=re.M)) == set(schedules["rows"])

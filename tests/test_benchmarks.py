"""The benchmark scripts run (a smoke test; timings are never asserted)."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_core_vs_sklearn_quick(capsys):
    load("core_vs_sklearn").main(["--quick", "--param", "max_epochs=3"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| data | rank | solver |")
    rows = [line for line in out if line.startswith("| digits |")]
    assert {r.split("|")[3].strip() for r in rows} == {"nmfsched", "sklearn NMF(cd)", "sklearn MiniBatchNMF"}


def test_schedulers_quick(capsys):
    load("schedulers").main(["--quick"])
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.startswith("| ") and not line.startswith("| baseline")]
    assert {r.split("|")[1].strip() for r in rows} >= {"constant", "step", "linear", "cosine", "hypergradient"}
    assert all(r.split("|")[2].strip().endswith("%") for r in rows)

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

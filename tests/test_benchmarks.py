"""The benchmark scripts run (a smoke test; timings are never asserted)."""

import importlib.util
import json
import re
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_core_vs_sklearn_quick(capsys):
    load("core_vs_sklearn").main(["--quick", "--param", "max_iter=3"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| data | rank | solver |")
    rows = [line for line in out if line.startswith("| digits |")]
    assert {r.split("|")[3].strip() for r in rows} == {"nmfsched", "sklearn NMF(cd)", "sklearn MiniBatchNMF"}


def test_schedulers_quick(capsys, tmp_path):
    load("schedulers").main(["--quick", "--json", str(tmp_path / "schedulers.json")])
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.startswith("| ") and not line.startswith("| baseline")]
    assert {r.split("|")[1].strip() for r in rows} >= {"constant", "step", "linear", "cosine", "hypergradient"}
    assert all(r.split("|")[2].strip().endswith("%") for r in rows)
    assert "line_search" in {r.split("|")[1].strip() for r in rows}
    assert any(line.startswith("line_search wall time / greedy's per fit") for line in out)
    report = json.loads((tmp_path / "schedulers.json").read_text())  # the docs' schedules table
    assert report["script"] == "benchmarks/schedulers.py" and report["pairs"] == 1
    assert set(report["rows"]) == {r.split("|")[1].strip() for r in rows}
    (finals,) = report["final_losses"].values()
    tied = max(finals.values()) <= min(finals.values()) * (1 + report["tie"])
    assert report["all_tied"] == int(tied)
    assert out[-1] == f"every scheduler within {report['tie']:g} of the best final loss: {int(tied)} of 1 (problem, seed) pairs"


def test_scheduler_comparison_counts_wins_ties_and_speed():
    compare = load("schedulers").compare
    np = __import__("numpy")
    sec = np.arange(1.0, 4.0)
    runs = {
        # greedy ends lower and reaches the target (the worst final, 10) first
        ("a", 0): {"greedy": (np.array([9.0, 8, 7]), sec, 0), "constant": (np.array([12.0, 11, 10]), sec, 0)},
        # greedy ends 0.2% higher: a loss strictly, a tie within 0.5%; it reaches 10.02 later
        ("b", 0): {"greedy": (np.array([11.0, 10.5, 10.02]), sec, 0), "constant": (np.array([10.0, 10, 10]), sec, 0)},
    }
    final, final_tie, epochs, wall, ratio = compare(runs, ["greedy", "constant"], tie=0.005)["constant"]
    assert (final, final_tie, epochs, wall) == (0.5, 1.0, 0.5, 0.5)
    np.testing.assert_allclose(ratio, np.mean([10 / 7, 10 / 10.02]))


def test_peers_quick_prints_each_peer_against_nmfsched_and_a_roofline(capsys, tmp_path):
    peers = load("peers")
    skip = [name for name in peers.available_peers() if name not in ("NMF(cd)", "NMF(mu)")]
    argv = ["--quick", "--case", "digits", *[a for name in skip for a in ("--skip-peer", name)]]
    results = peers.main([*argv, "--json", str(tmp_path / "peers.json")])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| data | rank | peer | peer s | peer error | nmfsched s | nmfsched error |")
    rows = [line.split("|") for line in out if line.startswith("| digits |")]
    assert [r[3].strip() for r in rows] == ["NMF(cd)", "NMF(mu)"]
    assert all(r[9].strip() in ("yes", "no") for r in rows)
    assert [r.peer for r in results] == ["NMF(cd)", "NMF(mu)"]
    roofline = [line for line in out if line.startswith("- digits:")]
    assert len(roofline) == 1 and "of GEMM" in roofline[0]
    assert re.search(r"nothing but its two products would reach \d+% of GEMM$", roofline[0])
    assert re.search(r"one-batch epochs [\d.]+ ms = [\d.]+x their two products \([\d.]+ ms\)", roofline[0])
    assert out[-1].startswith("to each peer's error in <= 0.5x its time: ") and "of 2 (case, peer) pairs" in out[-1]
    report = json.loads((tmp_path / "peers.json").read_text())  # what the docs' benchmarks page is made from
    assert report["script"] == "benchmarks/peers.py" and report["command"].endswith("peers.json")
    assert report["machine"]["cores"] >= 1 and report["date"]
    (case,) = report["cases"]
    assert case["name"] == "digits" and [p["peer"] for p in case["peers"]] == ["NMF(cd)", "NMF(mu)"]
    assert [p["error"] for p in case["peers"]] == [r.error for r in results]
    curve = case["curve"]
    assert len(curve["seconds"]) == len(curve["rel_error"]) > 1 and np.all(np.diff(curve["seconds"]) >= 0)
    many = np.arange(5000.0)  # a long run's curve is thinned for the file, its ends kept
    thin = peers.thinned_curve(many, many[::-1])
    assert len(thin["seconds"]) <= peers.CURVE_POINTS + 2 and thin["seconds"][::len(thin["seconds"]) - 1] == [0, 4999]
    assert thin["rel_error"] == [4999 - t for t in thin["seconds"]]
    assert case["roofline"] == roofline[0][len("- "):]


def test_peers_ratio_and_reach_against_peers_of_known_error():
    peers = load("peers")
    np = __import__("numpy")
    rng = np.random.default_rng(0)
    W, H = rng.random((60, 6)), rng.random((6, 20))
    X = W @ H
    exact = peers.Peer(lambda X, k, seed: (W, H))  # error 0 at rank 6: out of reach at rank 3
    useless = peers.Peer(lambda X, k, seed: (np.zeros_like(W), H), dense_only=True)  # error 1
    results = peers.run_case(X, 3, 0, {"exact": exact, "useless": useless}, tolerance=1e-3, repeats=2)[0]  # rank 3
    by_name = {r.peer: r for r in results}
    assert by_name["exact"].error == 0 and not by_name["exact"].defaults_reach
    assert by_name["exact"].ratios == [float("inf")] * 2
    assert abs(by_name["useless"].error - 1) < 1e-12 and by_name["useless"].defaults_reach
    assert all(0 < ratio < float("inf") for ratio in by_name["useless"].ratios)
    assert peers.spread([float("inf"), float("inf")]) == "not reached"
    assert peers.spread([0.5, 0.25, 1.0]) == "0.50 [0.25-1.00]"
    assert peers.spread([0.5]) == "0.50"


def test_peers_time_to_target():
    peers = load("peers")
    np = __import__("numpy")
    history = {"seconds": np.array([1.0, 2.0, 3.0]), "rel_error": np.array([0.5, 0.3, 0.2])}
    assert peers.time_to(history, 0.3, 0.0) == 2.0
    assert peers.time_to(history, 0.2999, 1e-3) == 2.0  # within the tolerance
    assert peers.time_to(history, 0.1, 1e-4) == float("inf")


def test_settings_quick_compares_each_setting_with_the_first(capsys):
    results = load("settings").main(
        ["--quick", "--setting", "short={\"max_iter\": 3}", "--setting", "shorter={\"max_iter\": 1}"]
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| case | rank | short: error, epochs, s | shorter: error, epochs, s |")
    assert {line.split("|")[1].strip() for line in out if line.startswith("| digits")} == {"digits"}
    assert all(row["shorter"][1] == 1 and row["short"][1] == 3 for row in results.values())
    assert out[-1].startswith("shorter vs short: ")


def test_settings_summary_counts_ties_wins_and_losses():
    summarise = load("settings").summarise
    results = {
        "a": {"ref": (1.0, 5, 2.0), "x": (1.004, 5, 1.0)},  # a tie
        "b": {"ref": (1.0, 5, 2.0), "x": (0.9, 5, 1.0)},  # lower
        "c": {"ref": (1.0, 5, 2.0), "x": (1.2, 5, 1.0)},  # higher
    }
    tied, lower, higher, err, sec = summarise(results, ["ref", "x"], 0.005)["x"]
    assert (tied, lower, higher) == (1, 1, 1)
    assert abs(err - (1.004 * 0.9 * 1.2) ** (1 / 3)) < 1e-12 and abs(sec - 0.5) < 1e-12


def test_rl_policy_quick_compares_the_policy_with_every_baseline(capsys, tmp_path):
    load("rl_policy").main(["--quick", "--json", str(tmp_path / "rows.json")])
    out = capsys.readouterr().out
    summary = [line for line in out.splitlines() if line.startswith("| ") and "%" in line]
    names = {line.split("|")[1].strip() for line in summary}
    assert {"greedy", "constant", "cosine"} <= names and any(n.startswith("step(") for n in names)
    assert "held-out check: none of the" in out
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert rows[0]["problem"] == "digits r16" and set(rows[0]["equal_epochs"]) >= {"rl", "greedy"}


def test_gpu_benchmark_quick_runs_the_gpu_code_path_on_numpy(capsys):
    load("gpu").main(["--quick", "--backend", "numpy", "--epochs", "4"])
    out = capsys.readouterr().out
    assert "device: CPU (numpy backend" in out
    rows = [line for line in out.splitlines() if line.startswith("| dense") or line.startswith("| sparse")]
    assert len(rows) == 2 and all("% GEMM" not in r and "%)" in r for r in rows)
    assert all(r.split("|")[10].strip() == "yes" for r in rows)  # the same steps: errors agree
    assert "dense 3000x300: PyTorch peers: not run (no GPU)" in out
    assert "- batch_overhead_flops: " in out


def test_gpu_benchmark_without_a_gpu_says_why_and_exits(monkeypatch, capsys):
    import sys

    import pytest

    from nmfsched.kernels import unavailable_reason

    monkeypatch.setitem(sys.modules, "cupy", None)
    unavailable_reason.cache_clear()
    try:
        with pytest.raises(SystemExit) as exit_info:
            load("gpu").main(["--quick"])
    finally:
        unavailable_reason.cache_clear()
    assert exit_info.value.code == 2
    assert "needs CuPy" in capsys.readouterr().err


def test_dask_scaling_quick_compares_with_in_memory_and_counts_bytes(capsys):
    load("dask_scaling").main(["--quick", "--epochs", "3"])
    out = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| gen")]
    assert len(out) == 3 and "in memory" in out[0] and "Dask 2 worker(s)" in out[2]
    errors = {line.split("|")[5].strip() for line in out}
    assert len(errors) == 1  # one batch: the same algorithm in memory and on Dask
    assert all(float(line.split("|")[6]) > 0 for line in out[1:])


def test_dask_out_of_core_small_runs_and_reports_peak_memory(capsys, tmp_path):
    load("dask_out_of_core").main(["--gigabytes", "0.01", "--columns", "100", "--rank", "4", "--epochs", "2",
                                   "--worker-memory", "1GB", "--subsample", "0.5", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "peak worker memory:" in out and "worker restarted: False" in out and "ratio" in out


def test_cold_start_probe_times_a_fresh_process(tmp_path):
    result = load("cold_start").probe("json", "X.sum()", str(tmp_path))
    assert set(result) == {"import", "first_fit", "second_fit"}
    assert all(seconds >= 0 for seconds in result.values())


def test_peers_one_batch_work_counts_only_the_one_batch_epochs_after_the_first():
    peers = load("peers")
    np = __import__("numpy")
    X = np.ones((10, 4))
    history = {"batch_size": np.array([10, 5, 10, 10, 10]), "seconds": np.array([0.0, 1.0, 1.5, 1.75, 2.0])}
    flops, seconds, count = peers.one_batch_work(X, 2, history, 1)
    assert (count, seconds) == (3, 1.0)  # the first epoch and the minibatch one left out
    assert flops == 3 * peers.epoch_work(X, 2, 10, 1)[0]


def test_penalties_quick_compares_the_penalised_objective_with_scikit_learns(capsys):
    rows = load("penalties").main(["--quick", "--case", "digits", "--alphas", "0.001", "--l1-ratios", "0.5",
                                   "--budget-factor", "1"])
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("| data | k | alpha_W | l1_ratio | peer |")
    assert [r.split("|")[5].strip() for r in rows] == ["NMF(cd)", "MiniBatchNMF"]
    for row in rows:
        cells = [c.strip() for c in row.split("|")]
        assert float(cells[7]) > 0 and float(cells[9]) > 0 and float(cells[10]) > 0
        assert cells[11] == "not reached" or float(cells[11]) > 0


def test_missing_benchmark_runs_on_a_small_ratings_file(tmp_path, capsys):
    import pytest

    pytest.importorskip("surprise")
    np = __import__("numpy")
    rng = np.random.default_rng(0)
    truth = 0.5 + 4.5 * (rng.random((60, 3)) @ rng.random((3, 40))) / 3
    users, movies = np.nonzero(rng.random(truth.shape) < 0.4)
    lines = ["userId,movieId,rating,timestamp"] + [
        f"{u + 1},{m + 10},{np.round(truth[u, m] * 2) / 2:.1f},0" for u, m in zip(users, movies)]
    (tmp_path / "ratings.csv").write_text("\n".join(lines))
    out = tmp_path / "out.json"
    assert load("missing").main(["--data", str(tmp_path / "ratings.csv"), "--seeds", "0", "--alphas", "0.01", "0.1",
                                 "--epochs", "1", "2", "--tensorly-iters", "0", "--rank", "3", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "surprise NMF 50 epochs" in printed and "nmfsched by epochs: 1:" in printed
    result = __import__("json").loads(out.read_text())["results"][0]
    assert result["alpha_W"] in (0.01, 0.1) and len(result["nmfsched_curve"]) == 2
    assert all(0 < p["rmse"] < 5 for p in result["peers"].values())


def test_rank_selection_benchmark_runs(capsys):
    assert load("rank_selection").main(["--seeds", "1", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "dense: true rank 4 chosen in" in out and "sparse counts: true rank 4 chosen in" in out


def test_peers_large_cases_print_the_anytime_curve_and_the_schedules_under_a_budget(capsys, monkeypatch):
    peers = load("peers")
    skip = [name for name in peers.available_peers() if name != "NMF(cd)"]
    monkeypatch.setattr(peers, "ANYTIME_SECONDS", (0.01, 0.1))  # the smoke test waits for no 120 s curve
    peers.main(["--large", "0.001", "--budget-epochs", "2", *[a for name in skip for a in ("--skip-peer", name)]])
    out = capsys.readouterr().out
    assert "large dense 1000x300 float32" in out and "large counts 300x30000" in out
    assert out.count("nmfsched's error reached by 0.01 s: ") == 2 and "0.1 s: " in out
    assert out.count("under 2 epochs: ") == 2 and "rl " in out and "cosine " in out
    assert out.count("batches under 2 epochs") == 2 and "defaults " in out and "fixed 16384 " in out


def test_stopping_benchmark_asks_the_library_rule_with_and_without_the_floor(capsys):
    rows = load("stopping").main(["--quick", "--case", "digits"])
    assert len(rows) == 1 and rows[0]["floor"]["epoch"] <= rows[0]["no floor"]["epoch"] <= 60
    assert "stopped above the peer error" in capsys.readouterr().out


def test_stopping_benchmark_stops_where_the_rule_says():
    stopping = load("stopping")
    losses = [10.0, 5.0] + [4.0] * 20
    assert stopping.stop_epoch(losses, list(range(22)), 100.0, 0.0, tol=1e-3, window=10) == 13
    falling = [1e-3 * 0.999**t for t in range(40)]  # falls 1% a window, below 1e-3 of the zero fit's loss
    assert stopping.stop_epoch(falling, list(range(40)), 100.0, 0.0, tol=1e-3, window=10) == 40
    assert stopping.stop_epoch(falling, list(range(40)), 100.0, 1e-3, tol=1e-3, window=10) == 11


def test_peers_skip_a_dense_only_peer_whose_dense_copy_of_a_sparse_case_is_too_large(monkeypatch, capsys):
    peers = load("peers")
    np = __import__("numpy")
    sp = __import__("scipy.sparse", fromlist=["csr_matrix"])
    X = sp.csr_matrix(np.random.default_rng(0).random((40, 12)))
    dense_only = peers.Peer(lambda X, k, seed: (_ for _ in ()).throw(AssertionError("densified")), dense_only=True)
    sparse_ok = peers.Peer(lambda X, k, seed: (np.ones((40, 2)), np.ones((2, 12))))
    monkeypatch.setattr(peers, "QUIET_SECONDS", 0)
    monkeypatch.setattr(peers, "DENSE_PEER_MAX_BYTES", 40 * 12 * 8 - 1)
    results = peers.run_case(X, 2, 0, {"torch": dense_only, "sparse": sparse_ok}, tolerance=1e-3)[0]
    assert [r.peer for r in results] == ["sparse"]
    assert "torch skipped: a dense copy would take" in capsys.readouterr().out

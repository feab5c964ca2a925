"""`nmfsched factorize` and `nmfsched bound`, run as a user runs them (a subprocess)."""

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp


def nmfsched(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "nmfsched.cli", *map(str, args)], capture_output=True, text=True, timeout=300, **kwargs
    )


def low_rank(n, m, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 4)) @ rng.random((4, m))


@pytest.fixture
def mixed(tmp_path):
    """A folder of good and bad inputs, as a user might have it."""
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    X = low_rank(60, 30)
    np.save(d / "dense.npy", X)
    sp.save_npz(d / "sparse.npz", sp.random(80, 40, density=0.3, random_state=0, format="csr"))
    np.savez(d / "named.npz", X=X[:50])
    scipy.io.mmwrite(d / "sub" / "market.mtx", sp.random(50, 30, density=0.3, random_state=1))
    np.savetxt(d / "table.csv", X[:40], delimiter=",", header="a,b", comments="")
    with gzip.open(d / "sub" / "table.tsv.gz", "wt") as f:
        np.savetxt(f, X[:45], delimiter="\t")
    bad = X.copy()
    bad[3, 4] = -1.0
    np.save(d / "negative.npy", bad)
    bad = X.copy()
    bad[5, 2] = np.inf
    np.save(d / "inf.npy", bad)
    (d / "truncated.npy").write_bytes((d / "dense.npy").read_bytes()[:300])
    np.savetxt(d / "text_not_npy.npy", X[:10], delimiter=",")  # a wrong extension: text named .npy
    return d


BAD = {"negative.npy": "Negative values", "inf.npy": "infinity", "truncated.npy": "cannot be read",
       "text_not_npy.npy": "cannot be read"}


def test_mixed_folder_outputs_every_good_file_and_one_error_line_per_bad_one(mixed, tmp_path):
    out = tmp_path / "out"
    r = nmfsched("factorize", mixed, "--rank", 3, "--out", out, "--max-epochs", 15, "--skip-header")
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("nmfsched: error:")]
    assert len(errors) == len(BAD)
    for name, problem in BAD.items():
        assert sum(name in line and problem in line for line in errors) == 1, (name, errors)
    assert "Traceback" not in r.stderr
    done = {p.name for p in out.iterdir() if p.is_dir()}
    # table.csv and sub/table.tsv.gz share a name: the parent folder tells them apart
    assert done == {"dense", "sparse", "named", "market", "in__table", "sub__table"}
    for folder in out.iterdir():
        if folder.is_dir():
            W, H = np.load(folder / "W.npy"), np.load(folder / "H.npy")
            report = json.loads((folder / "report.json").read_text())
            n, m = report["shape"]
            assert W.shape == (n, 3) and H.shape == (3, m) and (W >= 0).all() and (H >= 0).all()
            assert 0 <= report["relative_error"] < 1 and report["stability_certificate"]["descent"]
            assert len(report["history"]["loss"]) == report["n_epochs"]
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert sorted(r["status"] for r in rows) == ["done"] * 6 + ["failed"] * 4
    assert "6 factorized, 0 skipped (already done), 4 failed" in r.stdout


def test_all_good_exits_0_and_existing_outputs_are_never_overwritten_silently(mixed, tmp_path):
    out = tmp_path / "out"
    args = ("factorize", mixed / "dense.npy", mixed / "sub", "--rank", 2, "--out", out, "--max-epochs", 5)
    assert nmfsched(*args).returncode == 0
    before = (out / "dense" / "W.npy").read_bytes()
    again = nmfsched(*args)
    assert again.returncode == 1 and "exists" in again.stderr and "--overwrite" in again.stderr
    assert (out / "dense" / "W.npy").read_bytes() == before
    other_seed = nmfsched(*args, "--seed", 5, "--resume")  # same input, other parameters: not "done"
    assert other_seed.returncode == 1 and "other inputs or parameters" in other_seed.stderr
    replaced = nmfsched(*args, "--seed", 5, "--overwrite")
    assert replaced.returncode == 0 and (out / "dense" / "W.npy").read_bytes() != before
    assert json.loads((out / "dense" / "report.json").read_text())["params"]["random_state"] == 5


def test_missing_entries_are_fitted_over_the_observed_ones_or_refused(tmp_path):
    X = low_rank(50, 20, 3)
    X[np.random.default_rng(0).random(X.shape) < 0.2] = np.nan
    np.save(tmp_path / "gaps.npy", X)
    ratings = sp.random(60, 25, density=0.3, random_state=0, format="csr")
    ratings.data = np.ceil(5 * ratings.data)
    sp.save_npz(tmp_path / "ratings.npz", ratings)
    out = tmp_path / "out"
    r = nmfsched("factorize", tmp_path / "gaps.npy", "--rank", 3, "--out", out, "--max-iter", 5)
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "gaps" / "report.json").read_text())
    assert report["observed_fraction"] == pytest.approx(np.mean(~np.isnan(X)))
    assert report["params"]["missing"] == "nan"
    r = nmfsched("factorize", tmp_path / "ratings.npz", "--rank", 3, "--out", out, "--max-iter", 5,
                 "--missing", "unstored")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "ratings" / "report.json").read_text())["observed_fraction"] == pytest.approx(0.3)
    r = nmfsched("factorize", tmp_path / "gaps.npy", "--rank", 3, "--out", tmp_path / "refused", "--missing", "error")
    assert r.returncode == 1 and "gaps.npy" in r.stderr and "missing='nan'" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "refused" / "gaps").exists()


def test_npz_format_float32_and_scheduler_params(mixed, tmp_path):
    out = tmp_path / "out"
    r = nmfsched("factorize", mixed / "dense.npy", "--rank", 2, "--out", out, "--max-epochs", 6, "--format", "npz",
                 "--dtype", "float32", "--scheduler", "step", "--scheduler-param", "step_size=2",
                 "--scheduler-param", "gamma=0.5", "--lr", "0.8", "--tol", "0")
    assert r.returncode == 0, r.stderr
    with np.load(out / "dense" / "factors.npz") as f:
        assert f["W"].dtype == np.float32 and f["H"].shape == (2, 30)
    report = json.loads((out / "dense" / "report.json").read_text())
    assert report["params"]["scheduler_params"] == {"step_size": 2, "gamma": 0.5}
    np.testing.assert_allclose(report["history"]["lr"], [0.8, 0.8, 0.4, 0.4, 0.2, 0.2])


@pytest.mark.parametrize(
    "args, message",
    [
        (("--rank", 0), "--rank must be >= 1"),
        (("--rank", 2, "--scheduler", "nope"), "argument --scheduler: invalid choice: 'nope'"),
        (("--rank", 2, "--scheduler-param", "factor=5"), "factor must be a finite number in (0, 1)"),
        (("--rank", 2, "--backend", "cupy"), "argument --backend: invalid choice: 'cupy'"),
        (("--rank", 2, "--scheduler-param", "gamma"), "argument --scheduler-param: expects KEY=VALUE"),
        (("--rank", 2, "--lr", "-1"), "argument --lr: must be > 0"),
        (("--rank", 2, "--jobs", 0), "--jobs must be >= 1"),
        (("--rank", 2, "--batch-size", "0"), "--batch-size: must be >= 1"),
        (("--rank", 2, "--batch-size", "many"), "--batch-size: must be a positive integer or 'auto'"),
    ],
)
def test_usage_errors_exit_2_before_reading_anything(mixed, tmp_path, args, message):
    r = nmfsched("factorize", mixed / "dense.npy", "--out", tmp_path / "out", *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_missing_input_and_rank_too_large(mixed, tmp_path):
    r = nmfsched("factorize", tmp_path / "nothing.npy", "--rank", 2, "--out", tmp_path / "out")
    assert r.returncode == 2 and "no such file" in r.stderr
    r = nmfsched("factorize", mixed / "dense.npy", "--rank", 31, "--out", tmp_path / "out")
    assert r.returncode == 1 and "rank 31 is larger than min(n_rows, n_columns) = 30" in r.stderr


def test_parallel_jobs_give_the_same_factors_as_one_process(mixed, tmp_path):
    inputs = [mixed / "dense.npy", mixed / "sparse.npz", mixed / "named.npz"]
    args = ("--rank", 2, "--max-epochs", 8, "--seed", 0)
    one = nmfsched("factorize", *inputs, *args, "--out", tmp_path / "one")
    two = nmfsched("factorize", *inputs, *args, "--out", tmp_path / "two", "--jobs", 2)
    assert one.returncode == two.returncode == 0, two.stderr
    for name in ("dense", "sparse", "named"):
        np.testing.assert_allclose(np.load(tmp_path / "one" / name / "H.npy"), np.load(tmp_path / "two" / name / "H.npy"),
                                   rtol=1e-10, atol=1e-12)


def test_sigkill_then_resume_completes_everything_and_recomputes_nothing_finished(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(8):
        np.save(src / f"m{i}.npy", low_rank(1500, 200, seed=i))
    out = tmp_path / "out"
    args = [sys.executable, "-m", "nmfsched.cli", "factorize", str(src), "--rank", "6", "--out", str(out),
            "--max-epochs", "60", "--tol", "0"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out.exists() and any((p / "report.json").exists() for p in out.iterdir())):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.name: (p / "report.json").stat().st_mtime_ns for p in out.iterdir()
                if p.is_dir() and not p.name.startswith(".")}
    assert 1 <= len(finished) < 8, "kill the batch part-way"
    for name in finished:  # whatever is visible is whole
        np.load(out / name / "W.npy"), np.load(out / name / "H.npy"), json.loads((out / name / "report.json").read_text())
    r = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rows = {row["input"]: row["status"] for row in csv.DictReader(open(out / "summary.csv"))}
    assert sum(s == "skipped" for s in rows.values()) == len(finished)
    assert sum(s == "done" for s in rows.values()) == 8 - len(finished)
    for name, mtime in finished.items():
        assert (out / name / "report.json").stat().st_mtime_ns == mtime  # not recomputed
    visible = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert visible == [f"m{i}" for i in range(8)]  # no partial folders left behind
    for name in visible:
        assert np.load(out / name / "H.npy").shape == (6, 200)


def test_bound_prints_the_bound_and_clip_limit(mixed):
    r = nmfsched("bound", mixed / "dense.npy", "--rank", 3, "--epochs", 3)
    assert r.returncode == 0, r.stderr
    assert "learning-rate bound at initialisation:" in r.stdout and "clipping limit" in r.stdout
    assert len([line for line in r.stdout.splitlines() if line.strip()[:1].isdigit()]) == 3
    bad = nmfsched("bound", mixed / "negative.npy", "--rank", 3)
    assert bad.returncode == 1 and "Negative values" in bad.stderr


def test_plots_of_history_and_components(tmp_path):
    pytest.importorskip("matplotlib")
    src = tmp_path / "faces.npy"
    np.save(src, low_rank(40, 6 * 5))
    out = tmp_path / "out"
    r = nmfsched("factorize", src, "--rank", 4, "--out", out, "--max-epochs", 5, "--plot", "--image-shape", "6,5")
    assert r.returncode == 0, r.stderr
    for name in ("history.png", "components.png"):
        assert (out / "faces" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    wrong = nmfsched("factorize", src, "--rank", 4, "--out", tmp_path / "o2", "--plot", "--image-shape", "4,4")
    assert wrong.returncode == 1 and "16 pixels but the matrix has 30 columns" in wrong.stderr
    assert not (tmp_path / "o2" / "faces").exists()
    usage = nmfsched("factorize", src, "--rank", 4, "--out", tmp_path / "o3", "--image-shape", "6,5")
    assert usage.returncode == 2 and "--image-shape needs --plot" in usage.stderr


def test_manifests_give_each_input_its_own_rank_and_options(mixed, tmp_path):
    (tmp_path / "jobs.csv").write_text(
        "path,rank,scheduler,max_iter,scheduler_params,grow_batch\n"
        f"{mixed / 'dense.npy'},3,step,4,\"{{\"\"step_size\"\": 1}}\",false\n"
        "in/sparse.npz,2,,,,\n"  # relative to the manifest's folder; empty cells: the command line's
    )
    out = tmp_path / "out"
    r = nmfsched("factorize", "--manifest", tmp_path / "jobs.csv", "--out", out, "--max-epochs", 6, "--tol", 0)
    assert r.returncode == 0, r.stderr
    dense = json.loads((out / "dense" / "report.json").read_text())
    sparse_ = json.loads((out / "sparse" / "report.json").read_text())
    assert (dense["rank"], dense["n_epochs"], dense["params"]["scheduler"]) == (3, 4, "step")
    assert dense["params"]["scheduler_params"] == {"step_size": 1}
    assert dense["params"]["grow_batch"] is False and sparse_["params"]["grow_batch"] is True
    assert (sparse_["rank"], sparse_["n_epochs"], sparse_["params"]["scheduler"]) == (2, 6, "greedy")

    (tmp_path / "jobs.toml").write_text(
        f'[[input]]\npath = "{mixed / "named.npz"}"\nrank = 2\nlr = 0.5\nscheduler = "constant"\n'
    )
    r = nmfsched("factorize", "--manifest", tmp_path / "jobs.toml", "--out", out, "--max-epochs", 3)
    assert r.returncode == 0, r.stderr
    named = json.loads((out / "named" / "report.json").read_text())
    assert named["params"]["learning_rate"] == 0.5 and named["rank"] == 2


@pytest.mark.parametrize(
    "text, message",
    [
        ("path,rank\nx.npy,\n", "no rank"),
        ("path,rank,colour\nx.npy,2,red\n", "unknown key(s) colour"),
        ("path,rank\nx.npy,two\n", "rank='two' is not an integer"),
        ("path,rank,lr\nx.npy,2,fast\n", "x.npy: lr must be a number or 'auto', got 'fast'"),
        ("path,rank,grow_batch\nx.npy,2,maybe\n", "grow_batch must be true or false"),
        ("path,rank,backend\nx.npy,2,cupy\n", "backend"),
        ("rank\n2\n", "no 'path'"),
    ],
)
def test_bad_manifest_is_a_usage_error_naming_the_entry(tmp_path, text, message):
    (tmp_path / "m.csv").write_text(text)
    r = nmfsched("factorize", "--manifest", tmp_path / "m.csv", "--out", tmp_path / "out")
    assert r.returncode == 2 and message in r.stderr and "m.csv" in r.stderr, r.stderr


def test_no_extrapolate_reaches_the_estimator_and_the_report(tmp_path):
    np.save(tmp_path / "x.npy", low_rank(40, 20))
    runs = {}
    for flag in ("--extrapolate", "--no-extrapolate"):
        out = tmp_path / flag.strip("-")
        r = nmfsched("factorize", tmp_path / "x.npy", "--rank", 3, "--out", out, "--max-epochs", 30, "--tol", 0,
                     "--seed", 0, flag)
        assert r.returncode == 0, r.stderr
        runs[flag] = json.loads((out / "x" / "report.json").read_text())
    assert runs["--extrapolate"]["params"]["extrapolate"] is True
    assert runs["--no-extrapolate"]["params"]["extrapolate"] is False
    # one batch of 40 rows: the extrapolated run takes other steps
    assert runs["--extrapolate"]["history"]["loss"] != runs["--no-extrapolate"]["history"]["loss"]


def test_progress_shows_the_epochs_of_one_input_and_the_files_of_several(mixed, tmp_path, capsys):
    from nmfsched.batch import Task, run_batch

    params = {"max_iter": 4, "tol": 0, "random_state": 0}
    run_batch([Task(mixed / "dense.npy", 3, params)], tmp_path / "one", progress=True)
    err = capsys.readouterr().err
    assert "4/4" in err and "epoch" in err and "factorize" not in err
    run_batch([Task(mixed / "dense.npy", 3, params), Task(mixed / "named.npz", 3, params)], tmp_path / "two",
              progress=True)
    err = capsys.readouterr().err
    assert "factorize" in err and "file" in err and "epoch" not in err
    run_batch([Task(mixed / "dense.npy", 3, params)], tmp_path / "quiet", progress=False)
    assert capsys.readouterr().err == ""

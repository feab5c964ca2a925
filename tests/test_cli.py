"""The nmfsched command, run as a user runs it (a subprocess)."""

import subprocess
import sys


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "nmfsched.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_demo_prints_report():
    r = run("demo", "--rank", "8")
    assert r.returncode == 0, r.stderr
    assert "scikit-learn digits, X 1797 x 64, rank 8" in r.stdout
    assert "relative error" in r.stdout and "ratios (nmfsched / sklearn)" in r.stdout


def test_demo_without_comparison():
    r = run("demo", "--rank", "4", "--no-compare")
    assert r.returncode == 0, r.stderr
    assert "scikit-learn NMF" not in r.stdout


def test_info_lists_versions_and_backends():
    r = run("info")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("nmfsched ")
    assert "backends: cpu" in r.stdout and "numba threads" in r.stdout


def test_usage_errors_exit_2():
    assert run().returncode == 2
    assert run("nonsense").returncode == 2
    r = run("demo", "--rank", "0")
    assert r.returncode == 2 and "--rank must be >= 1" in r.stderr


def test_closed_pipe_is_not_a_traceback():
    cmd = f"{sys.executable} -m nmfsched.cli demo --rank 4 --no-compare | head -1"
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert r.stdout.startswith("nmfsched demo:")
    assert "Traceback" not in r.stderr

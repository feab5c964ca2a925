"""`make gpu-check` (benchmarks/gpu_check.py): stops cleanly without a GPU, and its steps work.

Its GPU run can only happen on a GPU machine; here the same steps run with ``--backend numpy``
(the gpu tests skip, the benchmark takes its quick cases on the GPU code path over NumPy).
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_benchmarks import load

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def gpu_check():
    return load("gpu_check")


def test_without_a_gpu_it_stops_at_once_with_one_line_and_writes_nothing(gpu_check, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)  # as on a machine without CuPy
    monkeypatch.setenv("GPU_CHECK_OUT", str(tmp_path / "out"))
    assert gpu_check.main([]) == gpu_check.NO_GPU_EXIT
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("gpu-check: no GPU to check here: CuPy is not installed")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_gpu_check_fails_cleanly_without_a_gpu(gpu_check, tmp_path):
    if gpu_check.gpu_absent_reason() is None:
        pytest.skip("this machine has a GPU: make gpu-check would run for real")
    out = tmp_path / "out"
    result = subprocess.run(["make", "-s", "gpu-check", f"GPU_PYTHON={sys.executable}"], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, "GPU_CHECK_OUT": str(out)},
                            timeout=120)
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.splitlines()[0].startswith("gpu-check: no GPU to check here:")
    assert not out.exists()


def test_its_steps_run_end_to_end_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "GPU_CHECK_OUT": str(out), "GPU_CHECK_STEPS": "pytest,bench"}
    result = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--backend", "numpy"], cwd=ROOT,
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert {p.name for p in out.iterdir()} >= {
        "versions.txt", "pytest-gpu.log", "pytest-gpu.xml", "gpu-bench.log", "gpu-table.md", "gpu-bench.json",
        "summary.txt"}
    assert "python: " in (out / "versions.txt").read_text()
    summary = (out / "summary.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in summary] == ["pytest", "bench"]
    assert all(": ok: " in line for line in summary)
    assert "conformance 0 passed, 0 failed," in summary[0]  # no device: every gpu test skipped
    table = (out / "gpu-table.md").read_text()
    assert table.startswith("device: CPU (numpy backend") and "| dense 3000x300 |" in table
    bench = json.loads((out / "gpu-bench.json").read_text())
    assert [case["case"] for case in bench["cases"]] == ["dense 3000x300", "sparse 4000x2000"]
    assert all(case["agrees"] for case in bench["cases"])
    assert bench["calibration"]["flops"] > 0
    assert summary == result.stdout.strip().splitlines()[-2:]


def test_an_unknown_step_is_named(gpu_check, monkeypatch, capsys):
    monkeypatch.setenv("GPU_CHECK_STEPS", "pytest,benchmark")
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(["--backend", "numpy"])
    assert exit_info.value.code == 2
    assert "unknown step(s) benchmark" in capsys.readouterr().err


def _junit(tmp_path, cases):
    body = "".join(
        f'<testcase classname="tests.{module}" name="{name}">{child}</testcase>' for module, name, child in cases)
    path = tmp_path / "junit.xml"
    path.write_text(f'<testsuites><testsuite name="pytest">{body}</testsuite></testsuites>')
    return path


def test_a_skipped_gpu_test_fails_the_check_on_a_gpu_but_not_on_the_cpu(gpu_check, tmp_path):
    path = _junit(tmp_path, [
        ("test_backends", "test_gram[gpu]", ""),
        ("test_backends", "test_sweep[gpu]", '<skipped message="no device"/>'),
        ("test_readme", "test_readme_gpu_example_runs", ""),
    ])
    outcomes = gpu_check.test_outcomes(path)
    assert outcomes["conformance"]["passed"] == ["tests.test_backends::test_gram[gpu]"]
    assert outcomes["conformance"]["skipped"] == ["tests.test_backends::test_sweep[gpu]"]
    assert outcomes["other"]["passed"] == ["tests.test_readme::test_readme_gpu_example_runs"]
    ok_on_gpu, line = gpu_check.judge_tests(outcomes, skips_fail=True)
    assert not ok_on_gpu
    assert line == "conformance 1 passed, 0 failed, 1 skipped; other 1 passed, 0 failed, 0 skipped"
    assert gpu_check.judge_tests(outcomes, skips_fail=False)[0]


def test_a_failure_or_no_test_at_all_fails_the_check(gpu_check, tmp_path):
    failed = gpu_check.test_outcomes(_junit(tmp_path, [("test_backends", "t[gpu]", '<error message="boom"/>')]))
    assert not gpu_check.judge_tests(failed, skips_fail=False)[0]
    empty = gpu_check.test_outcomes(_junit(tmp_path, []))
    assert gpu_check.judge_tests(empty, skips_fail=False) == (False, "no test marked gpu was collected")


def test_a_step_past_its_time_is_killed_and_logged(gpu_check, tmp_path, capsys):
    sleeper = textwrap.dedent("""
        import subprocess, sys, time
        print("started", flush=True)
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        time.sleep(60)
    """)
    code, seconds = gpu_check.run_logged([sys.executable, "-c", sleeper], tmp_path / "step.log", timeout=2)
    assert code == 124 and seconds < 30
    log = (tmp_path / "step.log").read_text()
    assert "started" in log and log.rstrip().endswith("killed after 2 s")

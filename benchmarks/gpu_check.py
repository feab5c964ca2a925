"""Everything a GPU machine should run for nmfsched, in one command: ``make gpu-check``.

GPU machines come rarely and briefly, start bare and cannot download anything, so the whole
check is prepared here and runs in one go:

1. without a CUDA device (or without CuPy) it stops at once with one line and exit code 3;
2. it prints the GPU, driver, CUDA and CuPy versions and saves them (``versions.txt``);
3. it installs nmfsched from this working tree without fetching anything (``pip install
   --no-deps --no-build-isolation --no-index -e .``, after any wheels in ``$GPU_CHECK_WHEELS``,
   such as the PyTorch peer's from ``make gpu-wheels``): ``install.log``;
4. it runs every test marked ``gpu``, the backend conformance suite against ``gpu`` among them:
   ``pytest-gpu.log`` and ``pytest-gpu.xml``; a ``gpu`` test that skips on a GPU fails the check;
5. it runs ``benchmarks/gpu.py --check`` (the three cases at full size, the CPU backend and the
   PyTorch peers beside the GPU, the per-minibatch overhead calibration): ``gpu-bench.log``,
   ``gpu-table.md`` and ``gpu-bench.json``;
6. it writes ``summary.txt``, one line a step, prints it, and exits 1 if any step failed.

Environment: ``GPU_CHECK_OUT`` (the folder for all of the above, default ``gpu-check-out``),
``GPU_CHECK_DATA`` (a folder holding ``tdt2.npz``, default ``../shared/data``),
``GPU_CHECK_WHEELS`` (a folder of wheels to install first, default ``.whl`` when present),
``GPU_CHECK_STEPS`` (a comma list of ``install``, ``pytest`` and ``bench`` to run only those,
for a second try after a fix). ``--backend numpy`` runs the same steps on a machine without a
GPU (the ``gpu`` tests skip, the benchmark runs its quick cases on the GPU code path over
NumPy): a check of this script, not of the GPU.

    python benchmarks/gpu_check.py [--backend gpu|numpy]
"""

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("install", "pytest", "bench")
#: Seconds each step may take; together they stay inside one 10-minute device command.
TIMEOUTS = {"install": 120, "pytest": 240, "bench": 330}
NO_GPU_EXIT = 3


def gpu_absent_reason():
    """Why there is no GPU to check here, or None when CuPy sees a CUDA device."""
    try:
        import cupy
    except ImportError as exc:
        return f"CuPy is not installed ({exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError without a driver or a device
        return f"CuPy {cupy.__version__} finds no usable CUDA device ({exc})"
    return None if count > 0 else f"CuPy {cupy.__version__} finds no CUDA device"


def versions(backend):
    """Lines naming the machine, the GPU and the versions of what the check runs on."""
    import numba
    import numpy
    import scipy
    import sklearn

    lines = [
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"host: {platform.node()} ({platform.machine()}, {os.cpu_count()} CPU cores)",
        f"python: {sys.version.split()[0]} at {sys.executable}",
        f"numpy {numpy.__version__}, scipy {scipy.__version__}, numba {numba.__version__}, "
        f"scikit-learn {sklearn.__version__}",
        f"nmfsched commit: {_git('rev-parse', 'HEAD')}{' (with uncommitted changes)' if _git('status', '--porcelain') else ''}",
    ]
    if backend != "gpu":
        return lines + ["GPU: none (--backend numpy: a check of this script on the CPU)"]
    import cupy

    runtime = cupy.cuda.runtime
    for device in range(runtime.getDeviceCount()):
        props = runtime.getDeviceProperties(device)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        lines.append(f"GPU {device}: {name}, compute capability {props['major']}.{props['minor']}, "
                     f"{props['totalGlobalMem'] / 2**30:.1f} GiB, {props['multiProcessorCount']} SMs")
    lines.append(f"CuPy {cupy.__version__}; CUDA runtime {_cuda_version(runtime.runtimeGetVersion())}, "
                 f"driver supports CUDA {_cuda_version(runtime.driverGetVersion())}")
    smi = _run_quietly(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    lines.append(f"nvidia-smi: {smi or 'not available'}")
    try:
        import torch

        lines.append(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
    except ImportError:
        lines.append("torch: not installed (the PyTorch peers will not run)")
    return lines


def _cuda_version(number):
    return f"{number // 1000}.{number % 1000 // 10}"


def _run_quietly(command):
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _git(*args):
    return _run_quietly(["git", "-C", str(ROOT), *args]) or "unknown"


def run_logged(command, log_path, timeout, env=None):
    """Run ``command`` in the repository, its output both shown and written to ``log_path``.

    Returns ``(exit code, seconds)``; a command past ``timeout`` seconds is killed and gets
    exit code 124, as ``timeout(1)`` gives.
    """
    start = time.perf_counter()
    with open(log_path, "w") as log:
        log.write(f"$ {' '.join(map(str, command))}\n")
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, env=env, start_new_session=True)
        timer = threading.Timer(timeout, os.killpg, (process.pid, signal.SIGKILL))  # its children too
        timer.start()
        try:
            for line in process.stdout:
                sys.stdout.write(line)
                log.write(line)
            code = process.wait()
        finally:
            timed_out = not timer.is_alive()
            timer.cancel()
        if timed_out and code != 0:
            log.write(f"\nkilled after {timeout} s\n")
            print(f"killed after {timeout} s")
            code = 124
    return code, time.perf_counter() - start


def test_outcomes(junit_path):
    """``{"conformance" | "other": {"passed", "failed", "skipped": [test ids]}}`` from a JUnit file.

    The conformance suite is ``tests/test_backends.py``; "failed" holds errors too.
    """
    outcomes = {group: {"passed": [], "failed": [], "skipped": []} for group in ("conformance", "other")}
    for case in ET.parse(junit_path).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        group = "conformance" if "test_backends" in case.get("classname", "").split(".") else "other"
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        else:
            outcome = "passed"
        outcomes[group][outcome].append(test_id)
    return outcomes


def judge_tests(outcomes, skips_fail):
    """``(ok, summary line)`` for the ``gpu`` tests: any failure fails, and on a GPU any skip too."""
    parts, ok = [], True
    for group, result in outcomes.items():
        counts = {outcome: len(ids) for outcome, ids in result.items()}
        parts.append(f"{group} {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
        ok &= counts["failed"] == 0 and not (skips_fail and counts["skipped"])
    total = sum(len(ids) for result in outcomes.values() for ids in result.values())
    ok &= total > 0
    return ok, "; ".join(parts) if total else "no test marked gpu was collected"


def install(out, python):
    """Install nmfsched (and any carried wheels) without reaching a package index."""
    wheels_dir = Path(os.environ.get("GPU_CHECK_WHEELS", ROOT / ".whl"))
    wheels = sorted(wheels_dir.glob("*.whl")) if wheels_dir.is_dir() else []
    log = out / "install.log"
    pip = [python, "-m", "pip", "install", "--no-deps", "--no-index", "--no-build-isolation"]
    if wheels:
        code, _ = run_logged([*pip, *map(str, wheels)], out / "install-wheels.log", TIMEOUTS["install"])
        if code:
            return False, f"installing the wheels in {wheels_dir} failed (exit {code}); see install-wheels.log"
    code, seconds = run_logged([*pip, "-e", "."], log, TIMEOUTS["install"])
    if code:
        return False, f"pip install -e . failed (exit {code}); see install.log"
    probe = subprocess.run([python, "-c", "import nmfsched, nmfsched.kernels.gpu; print(nmfsched.__file__)"],
                           capture_output=True, text=True, cwd=out)
    if probe.returncode:
        return False, f"nmfsched does not import after the install: {probe.stderr.strip().splitlines()[-1]}"
    return True, f"installed in {seconds:.0f} s ({len(wheels)} carried wheel(s)), imports from {probe.stdout.strip()}"


def run_tests(out, python, backend):
    junit = out / "pytest-gpu.xml"
    command = [python, "-m", "pytest", "-m", "gpu", "-rfEs", "-p", "no:cacheprovider", f"--junitxml={junit}", "tests"]
    code, seconds = run_logged(command, out / "pytest-gpu.log", TIMEOUTS["pytest"])
    if not junit.exists():
        return False, f"pytest wrote no report (exit {code}); see pytest-gpu.log"
    ok, line = judge_tests(test_outcomes(junit), skips_fail=backend == "gpu")
    if code not in (0, 5) and ok:  # pytest's own failure outside any test (exit 5: none collected)
        ok, line = False, f"{line}; pytest exit {code}"
    return ok, f"{line} in {seconds:.0f} s"


def run_bench(out, python, backend):
    mode = ["--check"] if backend == "gpu" else ["--quick", "--epochs", "3"]
    command = [python, "benchmarks/gpu.py", *mode, "--backend", backend, "--json", str(out / "gpu-bench.json")]
    log = out / "gpu-bench.log"
    code, seconds = run_logged(command, log, TIMEOUTS["bench"])
    table = [line for line in log.read_text().splitlines()
             if line.startswith(("device:", "run:", "|", "- "))]
    (out / "gpu-table.md").write_text("\n".join(table) + "\n")
    if code:
        return False, f"benchmarks/gpu.py exited {code} after {seconds:.0f} s; see gpu-bench.log"
    disagreeing = [line.split("|")[1].strip() for line in table if line.startswith("|") and "| NO |" in line]
    if disagreeing:
        return False, f"the GPU's error is above the CPU's by over 0.1% on: {', '.join(disagreeing)}"
    n_cases = len(json.loads((out / "gpu-bench.json").read_text())["cases"])
    return True, f"{n_cases} case(s) in {seconds:.0f} s"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="gpu-check", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["gpu", "numpy"], default="gpu",
                        help="gpu (default), or numpy: run the same steps on the CPU to check this script")
    args = parser.parse_args(argv)
    if args.backend == "gpu":
        reason = gpu_absent_reason()
        if reason is not None:
            print(f"gpu-check: no GPU to check here: {reason}. Run `make gpu-check` on a machine "
                  "with an NVIDIA GPU and CuPy.", file=sys.stderr)
            return NO_GPU_EXIT
    requested = os.environ.get("GPU_CHECK_STEPS", ",".join(STEPS))
    steps = [step.strip() for step in requested.split(",") if step.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        parser.error(f"GPU_CHECK_STEPS names unknown step(s) {', '.join(unknown)}; steps: {', '.join(STEPS)}")
    out = Path(os.environ.get("GPU_CHECK_OUT", ROOT / "gpu-check-out")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    info = versions(args.backend)
    (out / "versions.txt").write_text("\n".join(info) + "\n")
    print("\n".join(info), flush=True)
    python = sys.executable
    summary = []
    for step, run in (("install", install), ("pytest", run_tests), ("bench", run_bench)):
        if step not in steps:
            continue
        print(f"\n== gpu-check: {step} ==", flush=True)
        ok, line = run(out, python) if step == "install" else run(out, python, args.backend)
        summary.append(f"{step}: {'ok' if ok else 'FAILED'}: {line}")
    (out / "summary.txt").write_text("\n".join(summary) + "\n")
    if "bench" in steps and (out / "gpu-table.md").exists():
        print("\n" + (out / "gpu-table.md").read_text(), end="")
    print("\n== gpu-check summary (" + str(out) + ") ==\n" + "\n".join(summary))
    return 0 if all(": ok:" in line for line in summary) else 1


if __name__ == "__main__":
    sys.exit(main())

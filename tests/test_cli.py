"""The nmfsched command, run as a user runs it (a subprocess)."""

import subprocess
import sys

import pytest


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


def _choices_in_help(command, flag):
    """The ``{a,b,c}`` choices a subcommand's --help prints for ``flag``."""
    import re

    r = run(command, "--help")
    assert r.returncode == 0, r.stderr
    match = re.search(re.escape(flag) + r" \{([^}]*)\}", r.stdout)
    assert match, r.stdout
    return match.group(1).split(",")


def test_factorize_help_lists_exactly_the_registered_backends_and_schedulers():
    from nmfsched import schedulers
    from nmfsched.kernels import backend_names

    assert _choices_in_help("factorize", "--backend") == backend_names()
    assert _choices_in_help("factorize", "--scheduler") == schedulers.available()


def test_registering_a_backend_or_scheduler_reaches_the_cli_choices(monkeypatch):
    """The choices are generated from the registries, not written out."""
    from nmfsched import cli, kernels, schedulers
    from nmfsched.schedulers import registry

    argv = ["factorize", "x.npy", "--rank", "2", "--out", "o", "--backend", "fake", "--scheduler", "zz-custom"]
    with pytest.raises(SystemExit):  # argparse refuses both
        cli.build_parser().parse_args(argv)
    monkeypatch.setitem(kernels._REGISTRY, "fake", "nowhere:Nothing")
    monkeypatch.setitem(registry._REGISTRY, "zz-custom", schedulers.ConstantScheduler)
    args = cli.build_parser().parse_args(argv)
    assert (args.backend, args.scheduler) == ("fake", "zz-custom")


def test_command_line_defaults_are_the_estimators():
    import inspect

    from nmfsched import StochasticNMF
    from nmfsched.cli import build_parser
    from nmfsched.options import FIT_PARAMS, fit_params_from_args

    args = build_parser().parse_args(["factorize", "x.npy", "--rank", "2", "--out", "o"])
    defaults = inspect.signature(StochasticNMF).parameters
    assert fit_params_from_args(args) == {p: defaults[p].default for p in FIT_PARAMS}

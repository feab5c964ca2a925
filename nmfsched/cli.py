"""The ``nmfsched`` command."""

import argparse
import os
import platform
import sys


def _cmd_demo(args):
    from .demo import run_demo

    run_demo(n_components=args.rank, random_state=args.seed, compare=not args.no_compare)
    return 0


def _cmd_info(args):
    import numba
    import numpy
    import scipy
    import sklearn
    from threadpoolctl import threadpool_info

    from . import __version__
    from .kernels import available_backends

    print(f"nmfsched {__version__}")
    print(f"python {platform.python_version()} ({sys.executable})")
    for mod in (numpy, scipy, numba, sklearn):
        print(f"{mod.__name__} {mod.__version__}")
    print(f"backends: {', '.join(available_backends())}")
    print(f"numba threads: {numba.get_num_threads()} (layer: {numba.config.THREADING_LAYER})")
    for pool in threadpool_info():
        print(
            f"{pool['user_api']}: {pool['internal_api']} {pool.get('version') or ''} "
            f"({pool['num_threads']} threads)"
        )
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="nmfsched",
        description="Stochastic NMF with scheduled, provably safe learning rates.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="factorize scikit-learn's digits and print a report")
    demo.add_argument("--rank", type=int, default=16, help="number of components (default 16)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--no-compare", action="store_true", help="skip the scikit-learn comparison")
    demo.set_defaults(func=_cmd_demo)

    info = sub.add_parser("info", help="versions, backends, threads and BLAS")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv=None):
    """Entry point of the console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    if getattr(args, "rank", 1) < 1:
        print("nmfsched: error: --rank must be >= 1", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("nmfsched: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `nmfsched demo | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())

"""The ``nmfsched`` command."""

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np


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
    from .kernels import available_backends, backend_names, unavailable_reason

    print(f"nmfsched {__version__}")
    print(f"python {platform.python_version()} ({sys.executable})")
    for mod in (numpy, scipy, numba, sklearn):
        print(f"{mod.__name__} {mod.__version__}")
    print(f"backends: {', '.join(available_backends())}")
    for name in backend_names()[1:]:
        reason = unavailable_reason(name)
        if reason is not None:
            print(f"  {name} unavailable: {reason}")
    print(f"numba threads: {numba.get_num_threads()} (layer: {numba.config.THREADING_LAYER})")
    for pool in threadpool_info():
        print(
            f"{pool['user_api']}: {pool['internal_api']} {pool.get('version') or ''} "
            f"({pool['num_threads']} threads)"
        )
    return 0


class _UsageError(Exception):
    pass


def _check_params(params, rank):
    """Fail once, before any file is read, on a bad scheduler or estimator parameter."""
    from .estimator import check_params
    from .kernels import BackendUnavailableError

    try:
        check_params(rank, **params)
    except (ValueError, TypeError, BackendUnavailableError) as e:
        raise _UsageError(str(e)) from None


def _tasks(args, params):
    """The inputs with their rank and parameters: from INPUT... and/or --manifest."""
    from .batch import Task
    from .io import InputError, find_inputs
    from .manifest import ManifestError, read_manifest

    if not args.inputs and not args.manifest:
        raise _UsageError("give INPUT files, directories or patterns, or --manifest FILE")
    if args.inputs and args.rank is None:
        raise _UsageError("--rank is required for inputs given on the command line")
    tasks = []
    try:
        if args.inputs:
            tasks += [Task(p, args.rank, params) for p in find_inputs(args.inputs)]
        if args.manifest:
            tasks += read_manifest(args.manifest, rank=args.rank, params=params)
    except (InputError, ManifestError) as e:
        raise _UsageError(str(e)) from None
    # the command line's own parameters are checked already; a manifest's, once per distinct set
    checked = [params]
    for task in tasks:
        if task.params in checked:
            continue
        try:
            _check_params(task.params, task.rank)
        except _UsageError as e:  # only a manifest entry has parameters of its own
            raise _UsageError(f"{args.manifest}: {task.path}: {e}") from None
        checked.append(task.params)
    return tasks


def _cmd_factorize(args):
    from .batch import format_table, run_batch, write_summary
    from .options import fit_params_from_args

    params = fit_params_from_args(args)
    _check_params(params, args.rank or 1)
    tasks = _tasks(args, params)
    image_shape = _image_shape(args.image_shape)
    if args.plot:
        try:
            from .plots import pyplot

            pyplot()
        except ImportError as e:
            raise _UsageError(str(e)) from None
    elif image_shape is not None:
        raise _UsageError("--image-shape needs --plot")
    if args.dask is not None and args.jobs != 1:
        raise _UsageError("--dask runs the inputs one after another on the cluster; leave out --jobs")
    if args.dask is not None:
        try:
            import dask.array  # noqa: F401
            import distributed  # noqa: F401
        except ImportError:
            raise _UsageError("--dask needs dask and distributed: pip install 'nmfsched[dask]'") from None
    rows = run_batch(
        tasks, args.out, dtype=args.dtype, fmt=args.format, dataset=args.dataset, dask=args.dask,
        skip_header=args.skip_header, resume=args.resume, overwrite=args.overwrite, jobs=args.jobs,
        verbose=args.verbose, plot=args.plot, image_shape=image_shape, progress=sys.stderr.isatty() and not args.verbose, log=lambda m: print(m, file=sys.stderr),
    )
    write_summary(rows, Path(args.out) / "summary.csv")
    print(format_table(rows))
    failed = sum(r["status"] == "failed" for r in rows)
    done = sum(r["status"] == "done" for r in rows)
    skipped = len(rows) - failed - done
    print(f"{done} factorized, {skipped} skipped (already done), {failed} failed; summary: {Path(args.out) / 'summary.csv'}")
    return 1 if failed else 0


def _image_shape(text):
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 2 or min(shape) < 1:
        raise _UsageError(f"--image-shape expects two positive integers H,W, got {text!r}")
    return shape


def _cmd_bound(args):
    import warnings

    from . import StochasticNMF
    from .io import InputError, check_rank, read_matrix
    from .stability import StabilityWarning
    from .theory import entry_clip_limits

    try:
        X = read_matrix(args.input, skip_header=args.skip_header)
        check_rank(args.input, X, args.rank)
    except InputError as e:
        print(f"nmfsched: error: {e}", file=sys.stderr)
        return 1
    model = StochasticNMF(args.rank, max_iter=max(1, args.epochs), tol=0, random_state=args.random_state,
                          batch_size=args.batch_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StabilityWarning)
        model.fit(X)
    h = model.history_
    rho = model.curvature_tolerance
    rel, _ = entry_clip_limits(np.ones(args.rank), X.shape[1], rho)
    print(f"{args.input}: {X.shape[0]} x {X.shape[1]}, rank {args.rank}, batch size {int(h['batch_size'][0])}")
    print(f"learning-rate bound at initialisation: {h['lr_bound'][0]:.6g} "
          f"(the solver applies at most {model.safety_factor} x the bound)")
    print(f"clipping limit: an entry of H moves at most {rel[0]:.4g} x its value per update "
          f"(or {rel[0]:.4g} x its component's RMS entry, whichever is larger; curvature tolerance {rho})")
    if args.epochs:
        print("epoch  batch size  bound in force  applied lr  rel. error")
        for e, bs, b, lr, err in zip(h["epoch"], h["batch_size"], h["lr_bound"], h["lr"], h["rel_error"]):
            print(f"{int(e):5d}  {int(bs):10d}  {b:14.6g}  {lr:10.4g}  {err:10.5f}")
    return 0


def parse_ranks(text):
    """``"2-6,8,10"`` -> ``[2, 3, 4, 5, 6, 8, 10]``: comma-separated ranks and inclusive ranges."""
    ranks = set()
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            low = int(low)
            high = int(high) if dash else low
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects ranks such as 2-10 or 2,4,8, got {text!r}") from None
        if low < 1 or high < low:
            raise argparse.ArgumentTypeError(f"expects ranks >= 1 and ranges low-high with low <= high, got {text!r}")
        ranks.update(range(low, high + 1))
    return sorted(ranks)


def _cmd_rank(args):
    import json

    from .io import InputError, check_rank, read_matrix
    from .options import fit_params_from_args
    from .rank_selection import select_rank

    out = Path(args.out)
    targets = [out / "rank_selection.json", out / "rank_selection.png"]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not args.overwrite:
        raise _UsageError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace")
    params = fit_params_from_args(args)
    seed = params.pop("random_state")
    try:
        X = read_matrix(args.input, skip_header=args.skip_header)
        check_rank(args.input, X, max(args.ranks))
        result = select_rank(X, args.ranks, test_fraction=args.test_fraction, n_repeats=args.repeats, rule=args.rule,
                             n_jobs=args.jobs, random_state=seed, progress=not args.quiet and None, **params)
    except (InputError, ValueError) as e:
        message = str(e) if str(e).startswith(str(args.input)) else f"{args.input}: {e}"
        print(f"nmfsched: error: {message}", file=sys.stderr)
        return 1
    print(f"{args.input}: {X.shape[0]} x {X.shape[1]}, {args.repeats} splits hiding {args.test_fraction:g} of the "
          f"observed entries")
    print(" rank  held-out error (mean)      std")
    for rank, mean, std in zip(result.ranks, result.mean, result.std):
        print(f"{rank:5d}  {mean:21.6g}  {std:7.2g}{'  <- chosen' if rank == result.rank else ''}")
    print(f"chosen rank: {result.rank} ({result.rule} rule); {result.seconds:.1f} s for {result.scores.size} fits")
    out.mkdir(parents=True, exist_ok=True)
    record = {"input": str(args.input), "shape": list(X.shape), "params": params, "seed": seed, **result.as_dict()}
    _write_atomically(targets[0], lambda path: Path(path).write_text(json.dumps(record, indent=2)))
    from .plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    result.plot(ax)
    ax.set_title(Path(args.input).name, fontsize=9)
    fig.tight_layout()
    _write_atomically(targets[1], lambda path: fig.savefig(path, dpi=100, format="png"))
    plt.close(fig)
    return 0


def _write_atomically(path, write):
    """``write(temporary path)`` then rename it to ``path``: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _cmd_train_policy(args):
    from tqdm import tqdm

    from .rl.policy import card_path as card_of
    from .rl.train import ESConfig, train_policy, write_card

    out, card_path = Path(args.out), card_of(args.out)
    existing = [str(p) for p in (out, card_path) if p.exists()]
    if existing and not args.overwrite:
        raise _UsageError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace")
    if not out.parent.is_dir():
        raise _UsageError(f"--out: directory {str(out.parent)!r} does not exist")
    if args.minutes is not None and args.minutes <= 0:
        raise _UsageError("--minutes must be > 0")
    try:
        config = ESConfig(generations=args.generations, population=args.population)
    except ValueError as e:
        raise _UsageError(str(e)) from None
    bar = tqdm(total=config.generations, desc="train-policy", unit="gen", disable=args.quiet or None,
               file=sys.stderr)

    def progress(row):
        shown = {"return": f"{row['train_return']:.3f}"}
        if row["validation_return"] is not None:
            shown["validation"] = f"{row['validation_return']:.3f}"
        bar.set_postfix(shown, refresh=False)
        bar.update(1)

    try:
        policy, card = train_policy(args.seed, config, jobs=args.jobs, minutes=args.minutes, progress=progress)
    finally:
        bar.close()
    policy.save(out)
    write_card(card, card_path)
    print(f"policy {policy.sha256[:12]} (generation {card['best_generation']} of {len(card['curve'])}, "
          f"validation return {card['best_validation_return']:.4f}) in {card['seconds']:.0f} s")
    print(f"weights: {out}\ncard:    {card_path}")
    print(f"use it:  nmfsched factorize ... --scheduler rl --scheduler-param policy={out}")
    return 0


def build_parser():
    from .options import add_fit_arguments

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

    fz = sub.add_parser(
        "factorize", help="factorize matrix files into W, H and a report each",
        description="Factorize every input (files, directories searched recursively, glob patterns) "
        "into OUT/<name>/ with W and H and report.json, plus OUT/summary.csv. Exit status: 0 when every "
        "input succeeded, 1 when some failed, 2 for a usage error.",
    )
    fz.add_argument("inputs", nargs="*", metavar="INPUT",
                    help=".npy, .npz, .mtx[.gz], .csv[.gz], .tsv[.gz], .zarr (a directory), .h5/.hdf5")
    fz.add_argument("--rank", type=int, help="number of components (a manifest may give its own)")
    fz.add_argument("--manifest", metavar="FILE", help="a .csv or .toml list of inputs with per-file rank and options")
    fz.add_argument("--out", required=True, metavar="DIR", help="output directory")
    add_fit_arguments(fz)
    fz.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    fz.add_argument("--format", choices=["npy", "npz"], default="npy", help="W.npy + H.npy, or factors.npz")
    fz.add_argument("--skip-header", action="store_true", help="the first line of .csv/.tsv inputs is a header")
    fz.add_argument("--dataset", metavar="NAME", help="the dataset of .h5/.hdf5 inputs (default: their only 2-D one)")
    fz.add_argument("--dask", nargs="?", const="local", metavar="ADDRESS",
                    help="fit each input as a Dask array on dask.distributed: zarr, HDF5 and .npy are read chunk "
                    "by chunk, never whole (out of core); ADDRESS is a scheduler's (default: a cluster on this "
                    "machine); the report records the cluster")
    fz.add_argument("--jobs", type=int, default=1, help="files factorized in parallel processes")
    fz.add_argument("--resume", action="store_true", help="skip inputs already done with the same input and parameters")
    fz.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    fz.add_argument("--plot", action="store_true", help="history.png (loss and learning rate per epoch)")
    fz.add_argument("--image-shape", metavar="H,W", help="with --plot: components.png, each row of H as an H x W image")
    fz.add_argument("-v", "--verbose", action="count", default=0, help="per-epoch progress")
    fz.set_defaults(func=_cmd_factorize)

    bd = sub.add_parser("bound", help="the stability bound and clipping limit of a matrix")
    bd.add_argument("input")
    bd.add_argument("--rank", type=int, required=True)
    bd.add_argument("--epochs", type=int, default=0, help="also follow the bound along a short run")
    add_fit_arguments(bd, only=("batch_size", "random_state"))
    bd.add_argument("--skip-header", action="store_true")
    bd.set_defaults(func=_cmd_bound)

    rk = sub.add_parser(
        "rank", help="choose the rank of a matrix by held-out entries",
        description="Hide a random fraction of the observed entries (several splits), fit every candidate rank on "
        "the rest, score the hidden entries, and print the curve and the chosen rank; OUT/rank_selection.json "
        "holds every score and OUT/rank_selection.png the curve. NaN cells are missing (never hidden or scored); "
        "--missing unstored makes a sparse file's unstored entries missing (ratings).",
    )
    rk.add_argument("input")
    rk.add_argument("--ranks", type=parse_ranks, required=True, metavar="RANKS",
                    help="candidate ranks, e.g. 2-10 or 2,4,8,16")
    rk.add_argument("--out", required=True, metavar="DIR", help="output directory")
    rk.add_argument("--test-fraction", type=float, default=0.1, help="share of observed entries hidden (default 0.1)")
    rk.add_argument("--repeats", type=int, default=3, help="random splits (default 3)")
    rk.add_argument("--rule", choices=["one_se", "min"], default="one_se",
                    help="one_se: the smallest rank within one standard error of the best (default); min: the best")
    rk.add_argument("--jobs", type=int, default=1, help="fits run in parallel processes")
    add_fit_arguments(rk)
    rk.add_argument("--skip-header", action="store_true")
    rk.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    rk.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    rk.set_defaults(func=_cmd_rank)

    from .rl.train import ESConfig

    tp = sub.add_parser(
        "train-policy", help="train an RL learning-rate policy for --scheduler rl",
        description="Train a learning-rate policy by evolution strategies on generated NMF problems and "
        "write its weights (OUT, .npz) and a JSON card (OUT's name with .card.json: seed, versions, "
        "training problems, training curve). The same --seed and --generations give the same weights.",
    )
    tp.add_argument("--seed", type=int, default=0, help="seeds everything (default 0)")
    tp.add_argument("--out", required=True, metavar="FILE", help="weights file to write, e.g. policy.npz")
    tp.add_argument("--generations", type=int, default=ESConfig.generations,
                    help=f"ES generations (default {ESConfig.generations}: about 10 minutes on 2 cores)")
    tp.add_argument("--population", type=int, default=ESConfig.population,
                    help=f"candidates per generation, even (default {ESConfig.population})")
    tp.add_argument("--minutes", type=float, help="also stop after this many minutes (the result then "
                    "depends on the machine's speed)")
    tp.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)")
    tp.add_argument("--overwrite", action="store_true", help="replace existing weights and card")
    tp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    tp.set_defaults(func=_cmd_train_policy)
    return parser


def main(argv=None):
    """Entry point of the console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    for flag in ("rank", "jobs", "max_iter", "generations", "population", "repeats"):
        value = getattr(args, flag, 1)
        if value is not None and value < 1:
            print(f"nmfsched: error: --{flag.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    if getattr(args, "epochs", 0) < 0:
        print("nmfsched: error: --epochs must be >= 0", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except _UsageError as e:
        print(f"nmfsched: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nmfsched: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `nmfsched demo | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())

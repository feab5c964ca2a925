"""The estimator parameters that the command line and manifests also set, declared once.

Each :class:`FitOption` names a :class:`~nmfsched.StochasticNMF` parameter, its key in a
manifest (and in ``report.json``'s record of a job), its command-line flag, how text
becomes a value, and, for parameters with a fixed set of values, where that set comes
from (the scheduler and backend registries). Defaults are never repeated here: they are
read from the estimator's signature, so the command line's defaults are the estimator's.
"""

import argparse
import inspect
import json
from collections.abc import Callable
from typing import NamedTuple

from ._init import DEFAULT_INIT, INIT_METHODS


class FitOption(NamedTuple):
    """One estimator parameter as the command line and manifests see it."""

    param: str  #: the StochasticNMF parameter
    key: str  #: the manifest key
    flag: str  #: the command-line flag
    parse: Callable[[str], object]  #: text of a flag or a CSV cell -> value; ValueError says why not
    help: str
    choices: Callable[[], list] | None = None  #: the allowed values, asked when needed
    aliases: tuple = ()  #: former flags and manifest keys, still accepted


def _auto_or_positive(text, kind, what, is_positive, positive):
    if text == "auto":
        return text
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"must be {what} or 'auto', got {text!r}") from None
    if not is_positive(value):
        raise ValueError(f"must be {positive}, got {text!r}")
    return value


def parse_auto_or_positive_int(text):
    return _auto_or_positive(text, int, "a positive integer", lambda v: v >= 1, ">= 1")


def parse_auto_or_positive_float(text):
    return _auto_or_positive(text, float, "a number", lambda v: v > 0, "> 0")


def parse_bool(text):
    value = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(text.lower())
    if value is None:
        raise ValueError(f"must be true or false, got {text!r}")
    return value


def parse_int(text):
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"must be an integer, got {text!r}") from None


def parse_float(text):
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"must be a number, got {text!r}") from None


def parse_nonnegative_float(text):
    value = parse_float(text)
    if not value >= 0:
        raise ValueError(f"must be >= 0, got {text!r}")
    return value


def parse_same_or_nonnegative_float(text):
    return text if text == "same" else parse_nonnegative_float(text)


def parse_json_object(text):
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ValueError(f"must be a JSON object such as {{\"gamma\": 0.5}}, got {text!r}")
    return value


def parse_json_or_text(text):
    """A value given as text: JSON when it parses (numbers, true/false, lists), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _schedulers():
    from .schedulers import available

    return available()


def _backends():
    from .kernels import backend_names

    return backend_names()


def _missing_modes():
    from .observed import MISSING_MODES

    return list(MISSING_MODES)


def _inits():
    return [m for m in INIT_METHODS if m != "custom"]  # "custom" needs factors, not a file


FIT_OPTIONS = (
    FitOption("scheduler", "scheduler", "--scheduler", str, "the learning-rate scheduler", _schedulers),
    FitOption(
        "scheduler_params", "scheduler_params", "--scheduler-param", parse_json_object,
        "a scheduler parameter as KEY=VALUE (repeatable); in a manifest, a JSON object or TOML table",
    ),
    FitOption("learning_rate", "lr", "--lr", parse_auto_or_positive_float, "initial learning rate, or 'auto'"),
    FitOption("batch_size", "batch_size", "--batch-size", parse_auto_or_positive_int,
              "rows per minibatch at the start, or 'auto' (from the shape)"),
    FitOption("grow_batch", "grow_batch", "--grow-batch", parse_bool, "grow the batch after every epoch (at least twofold, more where gradient noise dominates)"),
    FitOption("extrapolate", "extrapolate", "--extrapolate", parse_bool,
              "extrapolate H in one-batch epochs, with restarts"),
    FitOption("max_iter", "max_iter", "--max-iter", parse_int, "maximum passes over the data (epochs)",
              aliases=("max_epochs",)),
    FitOption("tol", "tol", "--tol", parse_float, "stop when the loss improves by less (relative); 0: never"),
    FitOption("alpha_W", "alpha_W", "--alpha-W", parse_nonnegative_float,
              "penalty weight on W, as scikit-learn's NMF (0: none)"),
    FitOption("alpha_H", "alpha_H", "--alpha-H", parse_same_or_nonnegative_float,
              "penalty weight on H, or 'same' (alpha_W's)"),
    FitOption("l1_ratio", "l1_ratio", "--l1-ratio", parse_float, "the L1 share of the penalties, in [0, 1]"),
    FitOption("missing", "missing", "--missing", str,
              "which entries are missing: 'nan' (NaN cells), 'unstored' (a sparse file's unstored entries: ratings), "
              "or 'error' (NaN is an error)", _missing_modes),
    FitOption("init", "init", "--init", str, f"initialisation (default: {DEFAULT_INIT}, or random where the rank is too large)",
              _inits),
    FitOption("backend", "backend", "--backend", str, "where the arithmetic runs", _backends),
    FitOption("random_state", "seed", "--seed", parse_int,
              "random seed of the initialisation and the minibatch order (default: none, a fresh one each run)"),
)

#: The estimator parameters these options set (what report.json records of a job).
FIT_PARAMS = tuple(o.param for o in FIT_OPTIONS)

#: Manifest key -> option (former keys too).
BY_KEY = {key: o for o in FIT_OPTIONS for key in (o.key, *o.aliases)}


def estimator_default(param):
    """The default of a :class:`~nmfsched.StochasticNMF` parameter, from its signature."""
    from .estimator import StochasticNMF

    return inspect.signature(StochasticNMF).parameters[param].default


def _argparse_type(parse):
    def convert(text):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = parse.__name__
    return convert


def _key_value(text):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"expects KEY=VALUE, got {text!r}")
    return key, parse_json_or_text(value)


def add_fit_arguments(parser, only=None):
    """Add the :data:`FIT_OPTIONS` flags (those of the parameters ``only``, or all) to
    ``parser``, with the estimator's defaults."""
    for option in FIT_OPTIONS:
        if only is not None and option.param not in only:
            continue
        default = estimator_default(option.param)
        kwargs = {"dest": option.param, "help": option.help}
        if option.param == "scheduler_params":
            kwargs.update(action="append", type=_argparse_type(_key_value), metavar="KEY=VALUE")
        elif isinstance(default, bool):
            kwargs.update(action=argparse.BooleanOptionalAction, default=default)
            kwargs["help"] += f" (default: {'on' if default else 'off'})"
        else:
            kwargs.update(type=_argparse_type(option.parse), default=default)
            if option.choices is not None:
                kwargs["choices"] = option.choices()
            else:
                kwargs["metavar"] = option.key.upper()
            if default is not None:
                kwargs["help"] += " (default: %(default)s)"
        former = [f"--{alias.replace('_', '-')}" for alias in option.aliases]
        parser.add_argument(option.flag, *former, **kwargs)


def fit_params_from_args(args):
    """The estimator parameters of parsed command-line arguments."""
    params = {o.param: getattr(args, o.param) for o in FIT_OPTIONS}
    params["scheduler_params"] = dict(params["scheduler_params"] or ()) or None
    return params

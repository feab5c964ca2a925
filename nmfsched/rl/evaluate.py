"""Comparing schedules on held-out problems: runs, step-decay tuning and summary statistics.

Used by ``benchmarks/rl_policy.py`` and ``notebooks/04_rl_policy.ipynb``. Two regimes:

- ``EQUAL_EPOCHS``: a fixed batch of 256 rows, no batch growth, no early stop; schedules
  compare by the loss they reach in the same number of epochs.
- ``DEFAULTS``: the estimator's defaults (growing batch, ``tol``); schedules compare by
  the time and epochs to a common target error and by their final error.
"""

import warnings

import numpy as np

from ..estimator import StochasticNMF
from ..schedulers import CosineScheduler, StepScheduler
from ..stability import StabilityWarning
from .problems import make_matrix

EQUAL_EPOCHS = dict(batch_size=256, grow_batch=False, tol=0.0)
DEFAULTS = dict()
#: The step-decay grid tuned on training problems: (step_size, gamma).
STEP_GRID = tuple((step, gamma) for step in (5, 10, 20, 40) for gamma in (0.3, 0.5, 0.7, 0.9))


def fit_history(X, k, scheduler, seed, epochs, regime):
    """``history_`` of one fit (its "seconds" count from the fit's start), with "stop_reason"."""
    model = StochasticNMF(k, scheduler=scheduler, max_iter=epochs, random_state=seed, **regime)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StabilityWarning)
        model.fit(X)
    history = dict(model.history_)
    history["stop_reason"] = model.stop_reason_
    return history


def tune_step_decay(problems, grid=STEP_GRID):
    """The (step_size, gamma) of lowest mean log final loss on training ``problems`` (ProblemSpec).

    Each problem runs with its own batch, growth and epoch budget. Returns the best pair and
    ``{(step_size, gamma): mean log final loss}``.
    """
    scores = {}
    matrices = [(spec, make_matrix(spec)) for spec in problems]
    for step_size, gamma in grid:
        logs = []
        for spec, X in matrices:
            regime = dict(batch_size=spec.batch_size, grow_batch=spec.grow_batch, tol=0.0)
            h = fit_history(X, spec.n_components, StepScheduler(step_size, gamma), spec.seed, spec.epochs, regime)
            logs.append(np.log(h["loss"][-1]))
        scores[step_size, gamma] = float(np.mean(logs))
    return min(scores, key=scores.get), scores


def baselines(step_size, gamma):
    """The schedules the policy is compared with, by display name."""
    return {
        f"step({step_size},{gamma})": StepScheduler(step_size, gamma),
        "greedy": "greedy",
        "constant": "constant",
        "cosine": CosineScheduler(),
    }


def target_reach(history, target):
    """(epochs, seconds) to reach ``target`` loss, or (None, None)."""
    hit = np.flatnonzero(history["loss"] <= target)
    if not hit.size:
        return None, None
    return int(hit[0]) + 1, float(history["seconds"][hit[0]])


def summarize(finals, reference="rl", tie=1e-3):
    """Per baseline: share of cases the reference ends strictly lower, within ``tie``, and ratios.

    ``finals``: a list of dicts, one per (problem, seed), schedule name -> final loss.
    "strictly_lower": reference < baseline; "within_tie": reference <= (1 + tie) x baseline.
    """
    out = {}
    names = [n for n in finals[0] if n != reference]
    for name in names:
        ratios = np.array([f[reference] / f[name] for f in finals])
        out[name] = {
            "strictly_lower": float(np.mean(ratios < 1.0)),
            "within_tie": float(np.mean(ratios <= 1.0 + tie)),
            "median_ratio": float(np.median(ratios)),
            "worst_ratio": float(ratios.max()),
            "best_ratio": float(ratios.min()),
        }
    return out


def all_tied(finals, tie=1e-3):
    """Share of cases where every schedule ended within ``tie`` (relative) of the best."""
    return float(np.mean([max(f.values()) <= (1 + tie) * min(f.values()) for f in finals]))

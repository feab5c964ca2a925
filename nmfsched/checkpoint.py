"""Per-epoch checkpoints of a fit, so a run stopped by a crash or a kill continues where it was.

A checkpoint is one ``.npz`` file (no pickles) of a run's ``state_dict`` (see
:meth:`nmfsched.run.FitRun.state_dict`): the factors and the history as arrays; the
scheduler's ``state_dict``, the guard, the random generator, the batch size and the
extrapolation's scalars as JSON; and a fingerprint of the data and the parameters. It is
replaced atomically after every epoch (written beside itself, then renamed), so a kill
leaves the previous one intact.
"""

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

FORMAT_VERSION = 2  # 2: the extrapolation's state
#: Prefix of the history's arrays in the file, and the key of the extrapolation's last H^T.
_HISTORY, _H_PREV = "history_", "extrapolation_h_prev"

#: Parameters that may change between a run and its continuation (they bound how long it
#: runs, or what it prints); every other parameter must match the checkpoint's.
_RESUMABLE_PARAMS = ("max_iter", "max_epochs", "max_time", "tol", "n_iter_no_change", "verbose", "progress_bar", "checkpoint",
                     "backend")


def fingerprint(X_shape, dtype, sq_norm_X, n_components, params, defaults=None):
    """What must match for a checkpoint to continue: the data's shape, dtype and squared
    norm, the rank, and every parameter not in ``_RESUMABLE_PARAMS``.

    ``defaults`` (the estimator's) stand in for parameters a checkpoint written by an earlier
    version does not name (parameters added since), so such a file still continues at them.
    """
    kept = {k: v for k, v in sorted(params.items()) if k not in _RESUMABLE_PARAMS}
    return {
        "shape": [int(s) for s in X_shape],
        "dtype": str(np.dtype(dtype)),
        "sq_norm_X": float(sq_norm_X),
        "n_components": int(n_components),
        "params": _as_json(kept),
        "defaults": _as_json({k: v for k, v in (defaults or {}).items() if k in kept}),
    }


def _as_json(params):
    return json.loads(json.dumps(params, default=repr))


class FitCheckpoint:
    """The checkpoint file of one fit.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` file (created after the first epoch).
    fingerprint : dict
        From :func:`fingerprint`.
    """

    def __init__(self, path, fingerprint):
        self.path = Path(path)
        self.fingerprint = fingerprint

    def load(self):
        """The saved run state (as :meth:`nmfsched.run.FitRun.state_dict` gives it), or None
        when there is no checkpoint yet.

        Raises
        ------
        ValueError
            When the file is not a checkpoint, or one written for other data or parameters.
        """
        if not self.path.exists():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as f:
                meta = json.loads(str(f["meta"]))
                arrays = {key: f[key] for key in f.files if key != "meta"}
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"checkpoint {self.path} cannot be read ({exc}); delete it to start over.") from exc
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"checkpoint {self.path} has format {meta.get('format')!r}, expected {FORMAT_VERSION}.")
        self._check_matches(meta["fingerprint"])
        history = {key[len(_HISTORY) :]: values for key, values in arrays.items() if key.startswith(_HISTORY)}
        extrapolation = meta["extrapolation"]
        return {
            "W": arrays["W"],
            "H": arrays["H"],
            "history": history,
            **{key: meta[key] for key in ("scheduler", "guard", "rng", "stop_reason")},
            "batch_size": int(meta["batch_size"]),
            "refreshed": bool(meta["refreshed"]),
            "extrapolation": None if extrapolation is None else (extrapolation, arrays.get(_H_PREV)),
        }

    def _check_matches(self, saved):
        mine = self.fingerprint
        for key in ("shape", "dtype", "n_components"):
            if saved[key] != mine[key]:
                raise ValueError(
                    f"checkpoint {self.path} is of a fit with {key} {saved[key]}, this one has {mine[key]}; "
                    f"use another checkpoint path, or delete it to start over."
                )
        if not math.isclose(saved["sq_norm_X"], mine["sq_norm_X"], rel_tol=1e-6):
            raise ValueError(
                f"checkpoint {self.path} is of a fit on other data (||X||^2 {saved['sq_norm_X']:.9g}, "
                f"this X has {mine['sq_norm_X']:.9g}); use another checkpoint path, or delete it to start over."
            )
        theirs = {**mine.get("defaults", {}), **saved["params"]}  # parameters added since default
        changed = sorted(k for k in set(theirs) | set(mine["params"]) if theirs.get(k) != mine["params"].get(k))
        if changed:
            diffs = ", ".join(f"{k}={theirs.get(k)!r} there, {mine['params'].get(k)!r} here" for k in changed)
            raise ValueError(
                f"checkpoint {self.path} was written with other parameters ({diffs}); "
                f"use the same parameters to continue, or delete it to start over."
            )

    def save(self, state):
        """Replace the checkpoint with a run's ``state_dict`` (atomically)."""
        extrapolation = state["extrapolation"]
        meta = {
            "format": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            **{key: state[key] for key in ("scheduler", "guard", "rng", "stop_reason")},
            "batch_size": int(state["batch_size"]),
            "refreshed": bool(state["refreshed"]),
            "extrapolation": None if extrapolation is None else extrapolation[0],
        }
        arrays = {f"{_HISTORY}{key}": values for key, values in state["history"].items()}
        if extrapolation is not None and extrapolation[1] is not None:
            arrays[_H_PREV] = extrapolation[1]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, meta=np.array(json.dumps(meta)), W=state["W"], H=state["H"], **arrays)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

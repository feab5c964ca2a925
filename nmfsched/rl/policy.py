"""The learned schedule: a small MLP from run features to a fraction of the stability bound.

``fraction = MIN + (MAX - MIN) * sigmoid(w2 . tanh(W1 x + b1) + b2)``; the rate proposed for
the next epoch is that fraction of the bound the solver reports for it. Deterministic at
inference; a policy's identity is the SHA-256 of its weights and feature version, so a
saved run state names the policy it came from.
"""

import hashlib
import json
import os
from importlib import resources
from pathlib import Path

import numpy as np

from .features import FEATURE_NAMES, FEATURES_VERSION, N_FEATURES

#: The policy shipped with the package (``nmfsched train-policy --seed 0``; see its card).
DEFAULT_POLICY = "default"
#: The fraction of the bound a policy proposes lies in [MIN_FRACTION, MAX_FRACTION]. The top
#: is above the guard's cap (0.9 by default), so a policy can run at the cap exactly: with
#: a top of 0.9 it stayed a hair below it, and lost to any schedule the cap binds.
MIN_FRACTION = 0.01
MAX_FRACTION = 1.0
#: Hidden units.
HIDDEN = 16
_ARRAYS = ("W1", "b1", "w2", "b2")


def card_path(policy):
    """The JSON card beside a weights file (``p.npz`` -> ``p.card.json``); for "default", the shipped one."""
    if policy == DEFAULT_POLICY:
        with resources.as_file(resources.files(__package__) / "policies" / "default.card.json") as shipped:
            return Path(shipped)
    path = Path(policy)
    return path.with_name(f"{path.name.removesuffix('.npz')}.card.json")


class PolicyError(ValueError):
    """A policy file is missing, unreadable or was trained on other features."""


class Policy:
    """A deterministic MLP policy.

    Parameters
    ----------
    W1 : ndarray of shape (hidden, N_FEATURES)
    b1 : ndarray of shape (hidden,)
    w2 : ndarray of shape (hidden,)
    b2 : float
    """

    def __init__(self, W1, b1, w2, b2):
        self.W1 = np.asarray(W1, dtype=np.float64)
        self.b1 = np.asarray(b1, dtype=np.float64)
        self.w2 = np.asarray(w2, dtype=np.float64)
        self.b2 = np.asarray(b2, dtype=np.float64).reshape(())
        hidden = self.b1.shape[0] if self.b1.ndim == 1 else -1
        if self.W1.shape != (hidden, N_FEATURES) or self.w2.shape != (hidden,):
            raise PolicyError(
                f"Policy weights have shapes W1 {self.W1.shape}, b1 {self.b1.shape}, w2 {self.w2.shape}; "
                f"expected ({hidden}, {N_FEATURES}), ({hidden},), ({hidden},)."
            )
        if not all(np.all(np.isfinite(a)) for a in (self.W1, self.b1, self.w2, self.b2)):
            raise PolicyError("Policy weights contain NaN or infinity.")

    # ------------------------------------------------------------------ parameters
    @classmethod
    def initial(cls, rng, hidden=HIDDEN):
        """A starting policy: random first layer, zero output layer (the fraction is 0.505 everywhere)."""
        W1 = rng.normal(0.0, 1.0 / np.sqrt(N_FEATURES), (hidden, N_FEATURES))
        return cls(W1, np.zeros(hidden), np.zeros(hidden), 0.0)

    @property
    def n_params(self):
        return self.W1.size + self.b1.size + self.w2.size + 1

    def flat(self):
        """All weights as one vector (the trainer's parameter space)."""
        return np.concatenate([self.W1.ravel(), self.b1, self.w2, self.b2.reshape(1)])

    @classmethod
    def from_flat(cls, theta, hidden=HIDDEN):
        theta = np.asarray(theta, dtype=np.float64)
        i = hidden * N_FEATURES
        return cls(theta[:i].reshape(hidden, N_FEATURES), theta[i : i + hidden],
                   theta[i + hidden : i + 2 * hidden], theta[i + 2 * hidden])

    # ------------------------------------------------------------------ inference
    def fraction(self, features):
        """The fraction of the bound to propose for the features of one epoch."""
        hidden = np.tanh(self.W1 @ features + self.b1)
        z = float(self.w2 @ hidden + self.b2)
        return MIN_FRACTION + (MAX_FRACTION - MIN_FRACTION) / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))

    @property
    def sha256(self):
        """The policy's identity: a hash of its feature version and weights."""
        digest = hashlib.sha256(f"nmfsched-policy features={FEATURES_VERSION};".encode())
        for name in _ARRAYS:
            digest.update(np.ascontiguousarray(getattr(self, name), dtype="<f8").tobytes())
        return digest.hexdigest()

    # ------------------------------------------------------------------ files
    def save(self, path):
        """Write the weights to ``path`` (``.npz``) atomically."""
        path = Path(path)
        meta = json.dumps({"features_version": FEATURES_VERSION, "features": list(FEATURE_NAMES),
                           "min_fraction": MIN_FRACTION, "max_fraction": MAX_FRACTION, "sha256": self.sha256})
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(meta), **{name: getattr(self, name) for name in _ARRAYS})
        os.replace(tmp, path)

    @classmethod
    def load(cls, path):
        """Read a policy written by :meth:`save`; ``"default"`` is the shipped one."""
        if path == DEFAULT_POLICY:
            with resources.as_file(resources.files(__package__) / "policies" / "default.npz") as shipped:
                return cls.load(shipped)
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                arrays = {name: data[name] for name in _ARRAYS}
        except FileNotFoundError:
            raise PolicyError(f"Policy file {str(path)!r} does not exist.") from None
        except (OSError, KeyError, ValueError) as e:
            raise PolicyError(f"{str(path)!r} is not a policy file written by nmfsched ({e}).") from None
        if (meta.get("min_fraction"), meta.get("max_fraction")) != (MIN_FRACTION, MAX_FRACTION):
            raise PolicyError(
                f"Policy {str(path)!r} was trained to propose fractions in "
                f"[{meta.get('min_fraction')}, {meta.get('max_fraction')}] of the bound; this nmfsched maps "
                f"its output to [{MIN_FRACTION}, {MAX_FRACTION}]. Retrain it with `nmfsched train-policy`."
            )
        if meta.get("features_version") != FEATURES_VERSION:
            raise PolicyError(
                f"Policy {str(path)!r} was trained on features version {meta.get('features_version')!r}; "
                f"this nmfsched computes version {FEATURES_VERSION}. Retrain it with `nmfsched train-policy`."
            )
        return cls(**arrays)

    def __repr__(self):
        return f"Policy(hidden={self.b1.shape[0]}, sha256={self.sha256[:12]})"

"""The learned schedule: a policy trained by reinforcement learning, run as a scheduler."""

import copy
import math
import os

from ..rl.features import ScheduleFeatures
from ..rl.policy import DEFAULT_POLICY, Policy, PolicyError
from .base import Scheduler
from .registry import register

_CACHE = {}


def _load(policy):
    """The :class:`Policy` at ``policy`` ("default" or a path), cached per file version."""
    if policy == DEFAULT_POLICY:
        key = policy
    else:
        try:
            stat = os.stat(policy)
        except OSError:
            raise PolicyError(f"RLScheduler: policy file {str(policy)!r} does not exist.") from None
        key = (os.path.abspath(policy), stat.st_mtime_ns, stat.st_size)
    if key not in _CACHE:
        _CACHE[key] = Policy.load(policy)
    return _CACHE[key]


@register("rl")
class RLScheduler(Scheduler):
    """A learned schedule: after each epoch a policy picks the next rate as a fraction of the bound.

    The policy (a small MLP, :mod:`nmfsched.rl.policy`) reads scale-free features of the
    run (:mod:`nmfsched.rl.features`: loss progress and slopes, the bound, the applied
    fraction of it, gradient noise against signal, gradient cosine, rejections, the share
    of the epoch budget used) and proposes a fraction in [0.01, 1] of the next epoch's
    stability bound; the guard caps (at 0.9 of the bound by default) and clips as for
    any scheduler. The first epoch runs
    at the initial rate, as with every scheduler.

    Parameters
    ----------
    policy : str or path-like, default="default"
        "default": the policy shipped with nmfsched (trained by
        ``nmfsched train-policy --seed 0``); or the path of a weights file written by
        ``nmfsched train-policy``.

    Notes
    -----
    :meth:`state_dict` is JSON-safe: it holds the policy's name or path and its SHA-256,
    never its weights; :meth:`load_state_dict` loads that policy and refuses the state
    when the file's weights are no longer those the state was produced with.
    """

    def __init__(self, policy=DEFAULT_POLICY):
        super().__init__()
        if not isinstance(policy, (str, os.PathLike)):
            raise ValueError(f"RLScheduler: policy must be 'default' or a file path, got {policy!r}.")
        self.policy = policy
        self.policy_sha256 = _load(policy).sha256  # a bad file fails here, not mid-fit
        self._features = ScheduleFeatures()

    def _adopt_params(self, params):
        super()._adopt_params(params)
        self.policy_sha256 = _load(self.policy).sha256

    def _reset(self):
        self._features.reset(self.total_epochs)

    def _next_lr(self, obs):
        features = self._features.update(obs)
        bound = obs.lr_bound
        if not (math.isfinite(bound) and bound >= 0):  # no usable bound was computed: keep the rate
            return self.lr
        return _load(self.policy).fraction(features) * bound

    def state_dict(self):
        state = {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k != "_features"}
        state["policy"] = os.fspath(self.policy)
        state["features"] = self._features.state_dict()
        return state

    def load_state_dict(self, state):
        """Restore a state of :meth:`state_dict`, with its policy; refused if that file has changed since."""
        state = dict(state)
        features = state.pop("features", None)
        policy = state.get("policy", self.policy)
        found = _load(policy).sha256
        if state.get("policy_sha256") != found:
            raise ValueError(
                f"RLScheduler.load_state_dict: the state was produced by policy {policy!r} with sha256 "
                f"{str(state.get('policy_sha256'))[:12]}, but that policy now has sha256 {found[:12]}."
            )
        super().load_state_dict(state)
        if features is not None:
            self._features.load_state_dict(features)

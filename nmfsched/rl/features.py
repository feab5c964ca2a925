"""What a learned schedule sees: scale-free features of a run's progress, from its Observations.

The same :class:`ScheduleFeatures` turns the epoch :class:`~nmfsched.schedulers.Observation`
stream into the policy's input in the training environment and in the ``rl`` scheduler,
so a policy sees at inference exactly what it saw in training. Every feature is
dimensionless (ratios and logs of ratios of the loss, the rate and the bound), squashed
into ``[-CLIP, CLIP]``, so one policy applies to any scale, shape and rank.
"""

import math

import numpy as np

#: Bumped whenever a feature's definition changes: a policy trained on other features is refused.
FEATURES_VERSION = 1

#: The features, in order, with what each measures.
FEATURE_NAMES = (
    "budget_used",  # epochs done / the run's epoch budget (0 when the budget is unknown)
    "log_loss_drop",  # log(loss / first epoch's loss) / 5: how far the run has come
    "last_slope",  # asinh(100 log(loss_t / loss_t-1)) / 5: the last epoch's relative change
    "mean_slope",  # the same of the mean log change over the last WINDOW epochs
    "slope_trend",  # last_slope - mean_slope: speeding up (<0) or slowing down (>0)
    "log_bound",  # log(next bound / 2) / 3: 0 for a noise-free (one-batch) epoch
    "log_applied_fraction",  # log(applied rate / bound in force): where the policy put the rate
    "log_noise_to_signal",  # log(noise_sq / grad_sq) / 5: minibatch noise against the gradient
    "grad_cos",  # cosine of this and the last epoch's mean gradients
    "rejected",  # 1 when the guard undid the epoch
    "worsened",  # 1 when the loss rose during the epoch
)
N_FEATURES = len(FEATURE_NAMES)
#: Every feature lies in [-CLIP, CLIP].
CLIP = 5.0
#: Epochs in the rolling mean of ``mean_slope``.
WINDOW = 5


def _squash(value, scale):
    return math.asinh(value * scale) / 5.0


class ScheduleFeatures:
    """Rolling state of one run, turned into the policy's feature vector after every epoch.

    Call :meth:`reset` at the start of a run and :meth:`update` with each epoch's
    observation; :meth:`state_dict` is JSON-safe, so a stopped run continues exactly.
    """

    def __init__(self):
        self.reset()

    def reset(self, total_epochs=None):
        self.total_epochs = total_epochs
        self.first_loss = None
        self.last_loss = None
        self.bound_in_force = None  # the bound the observed epoch ran under
        self.slopes = []  # the last WINDOW log-loss changes

    def update(self, obs):
        """The feature vector (float64, shape ``(N_FEATURES,)``) after observation ``obs``."""
        loss = float(obs.loss)
        if self.first_loss is None:
            self.first_loss = loss
            slope = 0.0
        else:
            slope = log_ratio(loss, self.last_loss)
        self.slopes = (self.slopes + [slope])[-WINDOW:]
        mean_slope = sum(self.slopes) / len(self.slopes)
        bound = float(obs.lr_bound)
        budget = 0.0 if not self.total_epochs else min(1.0, obs.epoch / self.total_epochs)
        if self.bound_in_force is not None and self.bound_in_force > 0 and obs.lr > 0:
            applied = math.log(obs.lr / self.bound_in_force)
        else:
            applied = math.log(0.5)  # the first epoch runs at the estimator's start, half the bound
        grad_sq, noise_sq = float(obs.grad_sq), float(obs.noise_sq)
        if grad_sq > 0 and noise_sq > 0:
            noise = math.log(noise_sq / grad_sq) / 5.0
        else:
            noise = -CLIP if grad_sq > 0 or not noise_sq > 0 else CLIP
        cos = float(obs.grad_cos)
        values = [
            budget,
            log_ratio(loss, self.first_loss) / 5.0,
            _squash(slope, 100.0),
            _squash(mean_slope, 100.0),
            _squash(slope, 100.0) - _squash(mean_slope, 100.0),
            math.log(bound / 2.0) / 3.0 if bound > 0 else -CLIP,
            applied,
            noise,
            cos if math.isfinite(cos) else 0.0,
            1.0 if obs.rejected else 0.0,
            1.0 if slope > 0 else 0.0,
        ]
        self.last_loss = loss
        self.bound_in_force = bound if math.isfinite(bound) else None
        out = np.asarray(values, dtype=np.float64)
        np.nan_to_num(out, copy=False, nan=0.0, posinf=CLIP, neginf=-CLIP)
        return np.clip(out, -CLIP, CLIP, out=out)

    def state_dict(self):
        """The rolling state as a JSON-safe dict."""
        return {
            "total_epochs": self.total_epochs,
            "first_loss": self.first_loss,
            "last_loss": self.last_loss,
            "bound_in_force": self.bound_in_force,
            "slopes": list(self.slopes),
        }

    def load_state_dict(self, state):
        unknown = set(state) - set(self.state_dict())
        if unknown:
            raise ValueError(f"ScheduleFeatures.load_state_dict: unknown keys {sorted(unknown)}.")
        self.__dict__.update(state)
        self.slopes = list(self.slopes)


def log_ratio(a, b):
    """``log(a / b)`` of two losses; 0 unless both are positive and finite (an exact fit stops the run anyway)."""
    if 0 < a < math.inf and 0 < b < math.inf:
        return math.log(a / b)
    return 0.0

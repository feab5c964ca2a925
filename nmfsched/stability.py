"""Enforcement of the theory bound: the one place where the learning rate is capped."""

import math


class StabilityWarning(UserWarning):
    """A requested learning rate exceeded the stability bound and was capped."""


class StabilityGuard:
    """Caps the scheduler's learning rate at ``safety_factor x bound`` and keeps the record.

    The bound guarantees descent in expectation; the guard makes "never worse than the
    start" sure. An epoch whose exact loss ends above the loss the run started from is
    rejected (the solver restores the factors from before it) and the cap is halved
    until an epoch succeeds. Epochs that rise above the previous epoch but stay below
    the start are kept: a stochastic method's loss is not monotone, and undoing every
    uptick undid more than half of all epochs on digits and stalled the run.

    Parameters
    ----------
    enforce : bool, default=True
        Cap learning rates and clip updates. ``False`` only records the bound (for
        experiments that show what happens without the guarantee).
    safety_factor : float, default=0.9
        Applied rates never exceed ``safety_factor * bound``; the bound is estimated
        from the previous epoch, so the margin absorbs its drift.
    curvature_tolerance : float, default=1.0
        ``rho`` of the clipping limit: one update may change a component's curvature by
        at most a factor ``1 + rho`` (see ``nmfsched.theory.entry_clip_limits``).
    """

    def __init__(self, enforce=True, safety_factor=0.9, curvature_tolerance=1.0):
        self.enforce = bool(enforce)
        self.safety_factor = float(safety_factor)
        self.curvature_tolerance = float(curvature_tolerance)
        self.bound = math.nan
        self.initial_loss = math.nan
        self.max_ratio = 0.0
        self.n_capped = 0
        self.n_clipped = 0
        self.n_rejected = 0
        self.backoff = 1.0

    @property
    def cap(self):
        """The largest learning rate the next epoch may apply."""
        return self.safety_factor * self.backoff * self.bound

    def should_reject(self, loss, start_loss):
        """Whether an epoch that ended at ``loss`` in a run that started at ``start_loss`` is undone."""
        return self.enforce and loss > start_loss

    def reject(self):
        """Book a rejected epoch and halve the cap for the next try."""
        self.n_rejected += 1
        self.backoff *= 0.5

    def accept(self):
        self.backoff = 1.0

    @property
    def clip_tolerance(self):
        """The curvature tolerance of the clip, or None when nothing is enforced."""
        return self.curvature_tolerance if self.enforce else None

    def apply(self, proposed):
        """The learning rate to apply for a scheduler's proposal."""
        if not self.enforce or not math.isfinite(self.bound) or proposed <= self.cap:
            return proposed
        self.n_capped += 1
        return self.cap

    def record(self, applied, n_clipped):
        """Book one epoch: its applied rate (against the bound in force) and its clips."""
        if self.bound > 0:
            ratio = applied / self.bound
        else:
            ratio = 0.0 if applied == 0 else math.inf
        self.max_ratio = max(self.max_ratio, ratio)
        self.n_clipped += int(n_clipped)

    def state_dict(self):
        """The guard's settings and record (JSON-safe), enough to continue a run."""
        return {key: value for key, value in vars(self).items() if isinstance(value, (int, float, bool))}

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned."""
        unknown = set(state) - set(vars(self))
        if unknown:
            raise ValueError(f"Not a StabilityGuard state: unknown keys {sorted(unknown)}.")
        vars(self).update(state)

    def certificate(self, losses):
        """The stability certificate of a run whose per-epoch losses are ``losses``."""
        final = float(losses[-1]) if len(losses) else math.nan
        finite = all(math.isfinite(x) for x in losses)
        return {
            "enforced": self.enforce,
            "safety_factor": self.safety_factor,
            "curvature_tolerance": self.curvature_tolerance,
            "max_lr_to_bound": self.max_ratio,
            "n_capped_epochs": self.n_capped,
            "n_clipped_steps": self.n_clipped,
            "n_rejected_epochs": self.n_rejected,
            "initial_loss": self.initial_loss,
            "final_loss": final,
            "all_losses_finite": finite,
            "descent": bool(finite and final <= self.initial_loss),
        }

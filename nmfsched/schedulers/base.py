"""The scheduler protocol: what the solver tells a scheduler, and what it gets back."""

import copy
import inspect
import math
from dataclasses import dataclass
from numbers import Integral


@dataclass(frozen=True)
class Observation:
    """What the solver reports to the scheduler after every epoch.

    Attributes
    ----------
    epoch : int
        Epochs completed (1 after the first).
    loss : float
        ``1/2 ||X - W H||_F^2`` at the end of the epoch.
    rel_error : float
        ``||X - W H||_F / ||X||_F``.
    lr : float
        The (dimensionless) learning rate applied during the epoch.
    lr_bound : float
        The stability bound for the next epoch (NaN when not computed); the solver
        never applies more than a safety factor times it.
    grad_sq : float
        Squared norm of the epoch-mean projected gradient of ``H``.
    grad_cos : float
        Cosine between this epoch's mean gradient of ``H`` and the previous one's (the
        signal of hypergradient descent); NaN when either is zero.
    noise_sq : float
        Variance of the minibatch gradient of ``H`` around that mean.
    seconds : float
        Wall time since the fit started.
    """

    epoch: int
    loss: float
    rel_error: float
    lr: float
    lr_bound: float = math.nan
    grad_sq: float = math.nan
    grad_cos: float = math.nan
    noise_sq: float = math.nan
    seconds: float = math.nan


class Scheduler:
    """Base class of learning-rate schedulers (framework-free, after ``torch.optim.lr_scheduler``).

    The learning rate is dimensionless: it multiplies each component's ``1/L`` step, so
    ``1.0`` is the exact coordinate minimiser in the deterministic case.

    Subclasses implement :meth:`_next_lr` and, if they keep extra state, :meth:`_reset`.
    Everything in ``__dict__`` is the scheduler's state (parameters included, as in torch).
    """

    #: The registry name; set by :func:`nmfsched.schedulers.register`.
    name = None

    def __init__(self):
        self.lr0 = math.nan
        self.lr = math.nan
        self.last_epoch = 0
        self.total_epochs = None

    def reset(self, lr0, total_epochs=None):
        """Start a new run from the learning rate ``lr0``.

        ``total_epochs`` is the run's epoch budget (the estimator passes ``max_epochs``);
        schedules defined over a horizon (cosine, linear) use it when not given their own.
        """
        lr0 = float(lr0)
        if not (math.isfinite(lr0) and lr0 > 0):
            raise ValueError(f"{type(self).__name__}: initial learning rate must be > 0, got {lr0!r}.")
        if total_epochs is not None and (
            isinstance(total_epochs, bool) or not isinstance(total_epochs, Integral) or total_epochs < 1
        ):
            raise ValueError(
                f"{type(self).__name__}: total_epochs must be an integer >= 1, got {total_epochs!r}."
            )
        self.lr0 = lr0
        self.lr = lr0
        self.last_epoch = 0
        self.total_epochs = None if total_epochs is None else int(total_epochs)
        self._reset()

    def _reset(self):
        """Reset subclass state (hook); may set ``self.lr``, the first epoch's rate."""

    def step(self, obs):
        """Record one epoch's observation and return the learning rate for the next epoch."""
        if math.isnan(self.lr0):
            raise RuntimeError(f"{type(self).__name__}.step() called before reset(lr0).")
        self.last_epoch += 1
        lr = float(self._next_lr(obs))
        if not (math.isfinite(lr) and lr >= 0):  # 0 is valid: H holds still for an epoch
            raise ValueError(f"{type(self).__name__} proposed an invalid learning rate {lr!r}.")
        self.lr = lr
        return lr

    def _next_lr(self, obs):
        raise NotImplementedError

    def state_dict(self):
        """The scheduler's state as a dict (a deep copy; safe to pickle or JSON-dump)."""
        return copy.deepcopy(self.__dict__)

    def load_state_dict(self, state):
        """Restore a state produced by :meth:`state_dict`."""
        unknown = set(state) - set(self.__dict__)
        if unknown:
            raise ValueError(f"{type(self).__name__}.load_state_dict: unknown keys {sorted(unknown)}.")
        self.__dict__.update(copy.deepcopy(state))

    def __repr__(self):
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    def get_params(self):
        """The constructor parameters (read back from the attributes of the same name)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

"""Linear warmup in front of any other scheduler."""

from sklearn.base import clone

from ._checks import check_int, check_real
from .base import MinibatchSearch, Scheduler
from .registry import get, register


@register("warmup")
class WarmupScheduler(Scheduler):
    """Ramp the rate linearly up to the initial rate, then hand over to another scheduler.

    Epoch ``t`` (from 1) of the first ``warmup_epochs`` runs at
    ``lr0 * (start_factor + (1 - start_factor) * (t - 1) / warmup_epochs)``; then the
    inner scheduler runs from ``lr0`` with the remaining epoch budget, seeing the epochs
    counted from its own start.

    Parameters
    ----------
    after : str or Scheduler, default="constant"
        The scheduler that follows (a registered name or an instance, which is cloned for
        each run and never modified by one; its parameters are ``after__<name>``).
    after_params : dict, default=None
        Parameters for ``after`` when it is a name.
    warmup_epochs : int, default=5
    start_factor : float, default=0.1
        The first epoch's rate as a fraction of ``lr0``, in (0, 1].
    """

    def __init__(self, after="constant", after_params=None, warmup_epochs=5, start_factor=0.1):
        super().__init__()
        owner = type(self).__name__
        self.warmup_epochs = check_int(owner, "warmup_epochs", warmup_epochs, 0)
        self.start_factor = check_real(owner, "start_factor", start_factor, 0, 1, low_open=True)
        if isinstance(after, Scheduler):
            if after_params:
                raise ValueError(f"{owner}: after_params apply only when after is a scheduler name.")
            following = after
        elif isinstance(after, str):
            if after == "warmup":
                raise ValueError(f"{owner}: after must be another scheduler than 'warmup'.")
            following = get(after, **(after_params or {}))  # fail now on an unknown name or parameter
        else:
            raise ValueError(f"{owner}: after must be a scheduler name or a Scheduler, got {after!r}.")
        if isinstance(following, MinibatchSearch):
            raise ValueError(f"{owner}: {after!r} picks each minibatch's rate itself; it cannot follow a warmup.")
        self.after = after
        self.after_params = after_params
        self.inner = None

    def _inner(self):
        if isinstance(self.after, Scheduler):
            return clone(self.after)
        return get(self.after, **(self.after_params or {}))

    def _reset(self):
        self.inner = self._inner()
        remaining = None if self.total_epochs is None else max(1, self.total_epochs - self.warmup_epochs)
        self.inner.reset(self.lr0, remaining)
        if self.warmup_epochs:
            self.lr = self.lr0 * self.start_factor

    def _next_lr(self, obs):
        t = self.last_epoch
        if t < self.warmup_epochs:
            return self.lr0 * (self.start_factor + (1 - self.start_factor) * t / self.warmup_epochs)
        if t == self.warmup_epochs:
            return self.inner.lr
        return self.inner.step(obs)

    def state_dict(self):
        state = super().state_dict()
        if self.inner is not None:
            state["inner"] = self.inner.state_dict()
        if isinstance(self.after, Scheduler):
            state["after"] = {"name": self.after.name, "params": self.after.get_params(deep=False)}
        return state

    def load_state_dict(self, state):
        state = dict(state)
        inner = state.pop("inner", None)
        state["inner"] = None
        after = state.get("after")
        if isinstance(after, dict):
            state["after"] = get(after["name"], **after["params"])
        super().load_state_dict(state)
        if inner is not None:
            self.inner = self._inner()
            self.inner.load_state_dict(inner)

""":class:`Scheduler`, the base class of the built-in schedulers.

It implements the loop's scheduler protocol (:mod:`nmfsched.contracts`, re-exported here:
:class:`Observation`, :class:`SchedulerProtocol`, :class:`MinibatchSearch`,
:class:`BatchPolicy`, :class:`BatchProposal`) and
scikit-learn's parameter protocol (``get_params``/``set_params``), so that ``clone``,
``GridSearchCV`` and pipelines work with scheduler instances.
"""

import copy
import inspect
import math
from numbers import Integral

from ..contracts import BatchPolicy, BatchProposal, MinibatchSearch, Observation, SchedulerProtocol

__all__ = ["BatchPolicy", "BatchProposal", "MinibatchSearch", "Observation", "Scheduler", "SchedulerProtocol"]


class Scheduler:
    """Base class of learning-rate schedulers (framework-free, after ``torch.optim.lr_scheduler``).

    The learning rate is dimensionless: it multiplies each component's ``1/L`` step, so
    ``1.0`` is the exact coordinate minimiser in the deterministic case.

    Subclasses implement :meth:`_next_lr` and, if they keep extra state, :meth:`_reset`.
    As in scikit-learn, every constructor parameter is stored, checked but unchanged (or in
    one canonical form that the constructor keeps as it is), in the attribute of the same
    name; :meth:`get_params` reads them back and :meth:`set_params` checks new values as the
    constructor does. Everything in ``__dict__`` is the scheduler's state (parameters
    included, as in torch).
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

        ``total_epochs`` is the run's epoch budget (the estimator passes ``max_iter``);
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
        # a JSON round trip turns tuples into lists: bring the parameters back to canonical form
        self._adopt_params(self.get_params(deep=False))

    def __repr__(self):
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params(deep=False).items())
        return f"{type(self).__name__}({params})"

    @classmethod
    def _get_param_names(cls):
        """The constructor's parameter names, in order (no ``*args``/``**kwargs``: as scikit-learn)."""
        parameters = inspect.signature(cls.__init__).parameters
        varargs = [p.name for p in parameters.values() if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if varargs:
            raise TypeError(f"{cls.__name__}.__init__ must name its parameters; it takes *{varargs[0]}.")
        return [name for name in parameters if name != "self"]

    def get_params(self, deep=True):
        """The constructor parameters, read back from the attributes of the same name.

        Parameters
        ----------
        deep : bool, default=True
            Also return the parameters of parameters that are themselves schedulers (or
            estimators), as ``name__param``.

        Returns
        -------
        dict
        """
        out = {}
        for name in self._get_param_names():
            try:
                value = getattr(self, name)
            except AttributeError:
                raise AttributeError(
                    f"{type(self).__name__} takes the parameter {name!r} but keeps no attribute of that name; "
                    f"store each constructor parameter as self.{name}."
                ) from None
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{key}", v) for key, v in value.get_params(deep=True).items())
            out[name] = value
        return out

    def set_params(self, **params):
        """Set parameters, checked as the constructor checks them (``after__gamma`` for nested ones).

        The run state (rate, counters, best loss) is kept; a change takes effect from the
        next ``reset`` or ``step``.

        Returns
        -------
        self : Scheduler
        """
        if not params:
            return self
        own = self.get_params(deep=False)
        nested = {}
        for key, value in params.items():
            name, nests, sub_key = key.partition("__")
            if name not in own:
                raise ValueError(
                    f"Invalid parameter {name!r} for {type(self).__name__}; "
                    f"valid parameters: {', '.join(own) or 'none'}."
                )
            if nests:
                nested.setdefault(name, {})[sub_key] = value
            else:
                own[name] = value
        for name, sub_params in nested.items():
            if not hasattr(own[name], "set_params"):
                raise ValueError(f"{type(self).__name__}: {name}={own[name]!r} has no parameters to set.")
            own[name].set_params(**sub_params)
        self._adopt_params(own)
        return self

    def _adopt_params(self, params):
        """Check ``params`` by building a fresh instance from them; keep its (canonical) values."""
        checked = type(self)(**params)
        for name in params:
            setattr(self, name, getattr(checked, name))

"""Schedulers by name: ``get("step", step_size=10)`` for the CLI and the estimator."""

import copy

from .base import Scheduler

_REGISTRY = {}


def register(name):
    """Class decorator that makes a :class:`Scheduler` subclass available under ``name``."""

    def decorator(cls):
        if not (isinstance(cls, type) and issubclass(cls, Scheduler)):
            raise TypeError(f"Only Scheduler subclasses can be registered, got {cls!r}.")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"A scheduler named {name!r} is already registered.")
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return decorator


def available():
    """Sorted names of the registered schedulers."""
    return sorted(_REGISTRY)


def get(name, **params):
    """A new scheduler of the kind registered as ``name``, built with ``params``."""
    try:
        cls = _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown scheduler {name!r}; known schedulers: {', '.join(available())}.") from None
    accepted = cls._get_param_names()
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"Scheduler {name!r} got unknown parameter(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) or 'no parameters'}."
        )
    return cls(**params)


def for_run(scheduler, params=None):
    """A scheduler for one run from the estimator's ``scheduler`` and ``scheduler_params``.

    A name is built with ``params``; an instance is deep-copied (a run never changes the
    instance it was given) and takes no ``params``.
    """
    if isinstance(scheduler, str):
        return get(scheduler, **(params or {}))
    if params:
        raise ValueError(
            "scheduler_params apply only to a scheduler given by name; "
            "configure the scheduler instance directly instead."
        )
    return copy.deepcopy(scheduler)

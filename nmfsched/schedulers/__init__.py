"""Learning-rate schedulers and their name registry.

``get(name, **params)`` builds one by name; ``available()`` lists the names;
``register(name)`` adds a :class:`Scheduler` subclass.
"""

from . import constant, step  # noqa: F401  (registers the built-in schedulers)
from .base import Observation, Scheduler
from .constant import ConstantScheduler
from .registry import available, get, register
from .step import StepScheduler

__all__ = [
    "Observation",
    "Scheduler",
    "ConstantScheduler",
    "StepScheduler",
    "available",
    "get",
    "register",
]

"""Learning-rate schedulers and their name registry.

``get(name, **params)`` builds one by name; ``available()`` lists the names;
``register(name)`` adds a :class:`Scheduler` subclass.
"""

from . import constant, decay, greedy, hypergradient, line_search, plateau, rl, step, warmup  # noqa: F401  (registers them)
from .base import BatchPolicy, BatchProposal, MinibatchSearch, Observation, Scheduler, SchedulerProtocol
from .constant import ConstantScheduler
from .decay import CosineScheduler, ExponentialScheduler, LinearScheduler, MultiStepScheduler
from .greedy import GreedyLR
from .hypergradient import HypergradientScheduler
from .line_search import LineSearchScheduler
from .plateau import PlateauScheduler
from .registry import available, get, register
from .rl import RLScheduler
from .step import StepScheduler
from .warmup import WarmupScheduler

__all__ = [
    "BatchPolicy",
    "BatchProposal",
    "MinibatchSearch",
    "Observation",
    "Scheduler",
    "SchedulerProtocol",
    "ConstantScheduler",
    "CosineScheduler",
    "ExponentialScheduler",
    "GreedyLR",
    "HypergradientScheduler",
    "LinearScheduler",
    "LineSearchScheduler",
    "MultiStepScheduler",
    "PlateauScheduler",
    "RLScheduler",
    "StepScheduler",
    "WarmupScheduler",
    "available",
    "get",
    "register",
]

"""Learned learning-rate schedules: features, policy, environment and trainer.

``nmfsched.rl.features`` and ``nmfsched.rl.policy`` are what the ``rl`` scheduler runs (NumPy
only); ``nmfsched.rl.env`` is the training environment (Gymnasium's API, with or without
gymnasium installed), ``nmfsched.rl.problems`` the distribution of NMF problems it draws
from, and ``nmfsched.rl.train`` the evolution-strategies trainer behind
``nmfsched train-policy``.
"""

from .features import FEATURE_NAMES, N_FEATURES, ScheduleFeatures
from .policy import DEFAULT_POLICY, Policy, PolicyError

__all__ = ["DEFAULT_POLICY", "FEATURE_NAMES", "N_FEATURES", "Policy", "PolicyError", "ScheduleFeatures"]

"""The training environment: one step is one epoch of the real solver, guard on.

:class:`ScheduleEnv` follows Gymnasium's API (``reset(seed=) -> obs, info``;
``step(action) -> obs, reward, terminated, truncated, info``; ``observation_space``,
``action_space``). With gymnasium installed it is a ``gymnasium.Env`` with ``Box`` spaces
(registered as ``"nmfsched/Schedule-v0"``); without it, the same class works with minimal
stand-ins for the spaces.

Each episode draws a problem (:mod:`nmfsched.rl.problems`), starts a run on it as the
estimator does (:class:`nmfsched.run.FitRun`: initialisation, probe, stability guard) and runs
the first epoch at the estimator's initial rate (half the bound), as every scheduler's run
does. Each step then takes the action, a fraction of the stability bound reported for the
next epoch, proposes that rate and runs one epoch of the run, the loop the estimator runs.
"""

import contextlib

import numpy as np

from ..kernels import get_backend
from ..run import FitRun, RunSettings, in_memory_solver, initial_factors, run_rng
from ..schedulers import ConstantScheduler
from .features import CLIP, N_FEATURES, ScheduleFeatures, log_ratio
from .problems import ProblemSpec, make_matrix, sample_problem

try:  # gymnasium is optional: the environment works without it
    import gymnasium
    from gymnasium import spaces
except ImportError:  # pragma: no cover - exercised in a subprocess by the tests
    gymnasium = None

ENV_ID = "nmfsched/Schedule-v0"


class _Box:
    """The part of ``gymnasium.spaces.Box`` used here, for when gymnasium is not installed."""

    def __init__(self, low, high, shape, dtype):
        self.low = np.full(shape, low, dtype=dtype)
        self.high = np.full(shape, high, dtype=dtype)
        self.shape, self.dtype = shape, np.dtype(dtype)
        self._rng = np.random.default_rng()

    def seed(self, seed=None):
        self._rng = np.random.default_rng(seed)

    def sample(self):
        return self._rng.uniform(self.low, self.high).astype(self.dtype)

    def contains(self, x):
        x = np.asarray(x)
        return x.shape == self.shape and bool(np.all((x >= self.low) & (x <= self.high)))


def _box(low, high, shape):
    if gymnasium is not None:
        return spaces.Box(low=low, high=high, shape=shape, dtype=np.float64)
    return _Box(low, high, shape, np.float64)


class _Proposal:
    """The scheduler the loop sees: it proposes the rate the agent chose and keeps the observation."""

    def __init__(self, lr):
        self.lr = lr
        self.observation = None

    def step(self, obs):
        self.observation = obs
        return self.lr


class ScheduleEnv(gymnasium.Env if gymnasium is not None else object):
    """Learning-rate scheduling of stochastic NMF as an episodic environment.

    Observation: the :data:`~nmfsched.rl.features.FEATURE_NAMES` of the run after the last
    epoch, each in ``[-5, 5]``. Action: shape ``(1,)`` in ``[0, 1]``, the next epoch's
    rate as a fraction of the stability bound the solver reports for it (the guard then
    caps at ``safety_factor`` times the bound, 0.9 by default, and clips). Reward:
    ``log(loss before / loss after)`` of the epoch, so returns compare across problems and
    scales, minus ``rejection_cost`` when the guard undid the epoch. An episode truncates
    after the problem's epoch budget and terminates when the estimator's own stopping rule
    (``tol``, or an exact fit) fires. While an episode runs, BLAS is held to one thread (the
    estimator's compute context); the limit is lifted when the episode ends or on ``close()``.

    Parameters
    ----------
    problems : callable or sequence of ProblemSpec, default=None
        ``problems(rng) -> ProblemSpec`` draws each episode's problem (default
        :func:`~nmfsched.rl.problems.sample_problem`); a sequence is drawn from uniformly.
        ``reset(options={"problem": spec})`` runs a given one.
    rejection_cost : float, default=0.01
        Subtracted from the reward of an epoch the guard undid.
    tol : float, default=0.0
        The estimator's ``tol`` stopping rule (0: run every episode to its budget).
    """

    metadata = {"render_modes": []}
    render_mode = None

    def __init__(self, problems=None, *, rejection_cost=0.01, tol=0.0):
        if problems is None:
            problems = sample_problem
        elif not callable(problems):
            problems = tuple(problems)
            if not problems or not all(isinstance(p, ProblemSpec) for p in problems):
                raise ValueError("problems must be a callable or a non-empty sequence of ProblemSpec.")
        self.problems = problems
        self.rejection_cost = float(rejection_cost)
        self.tol = float(tol)
        self.observation_space = _box(-CLIP, CLIP, (N_FEATURES,))
        self.action_space = _box(0.0, 1.0, (1,))
        self._rng = np.random.default_rng()
        self._run = None
        self._context = contextlib.ExitStack()  # the backend's compute context, held per episode

    # ------------------------------------------------------------------ Gymnasium API
    def reset(self, *, seed=None, options=None):
        """Draw a problem (or take ``options["problem"]``), start its run and run the first epoch."""
        if gymnasium is not None:
            super().reset(seed=seed)
            if seed is not None:
                self._rng = np.random.default_rng(seed)
        elif seed is not None:
            self._rng = np.random.default_rng(seed)
        spec = (options or {}).get("problem")
        if spec is None:
            spec = self._draw()
        self._start(spec)
        obs, _, _, info = self._epoch(self._run["run"].scheduler.lr)
        return obs, info

    def step(self, action):
        """Run one epoch at ``action[0]`` times the bound; see the class docstring."""
        if self._run is None:
            raise RuntimeError("ScheduleEnv.step() called before reset().")
        if self._run["done"]:
            raise RuntimeError("The episode has ended; call reset() to start another.")
        fraction = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
        if not (0.0 <= fraction <= 1.0):
            raise ValueError(f"action must be a fraction of the bound in [0, 1], got {fraction!r}.")
        bound = self._run["run"].guard.bound
        obs, reward, terminated, info = self._epoch(fraction * bound if bound > 0 else 0.0)
        truncated = not terminated and len(self._run["run"].history) >= self._run["spec"].epochs
        self._run["done"] = terminated or truncated
        if self._run["done"]:
            self._context.close()
        return obs, reward, terminated, truncated, info

    def close(self):
        self._context.close()
        self._run = None

    # ------------------------------------------------------------------ internals
    def _draw(self):
        if callable(self.problems):
            return self.problems(self._rng)
        return self.problems[int(self._rng.integers(len(self.problems)))]

    def _start(self, spec):
        self.close()
        X = make_matrix(spec)
        # the estimator's defaults, as StochasticNMF(scheduler="constant") runs them, one epoch a step
        settings = RunSettings(batch_size=spec.batch_size, grow_batch=spec.grow_batch, max_epochs=spec.epochs,
                               tol=self.tol, extrapolate=False)
        backend = get_backend("auto")
        self._context.enter_context(backend.compute_context())  # entered once: it costs milliseconds
        rng = run_rng(spec.seed)
        W0, H0 = initial_factors(X, spec.n_components, settings, rng)
        run = FitRun(in_memory_solver(X, W0, H0, rng, backend, settings), ConstantScheduler(), settings, rng)
        self._run = {"spec": spec, "run": run.start(), "features": ScheduleFeatures(), "done": False}
        self._run["features"].reset(spec.epochs)

    def _epoch(self, rate):
        state, run = self._run, self._run["run"]
        proposal = _Proposal(rate)
        run.scheduler = proposal  # the agent proposes each epoch's rate
        loss_before = run.loss
        reason = run.run_epochs(1)
        obs = proposal.observation
        reward = log_ratio(loss_before, obs.loss) - (self.rejection_cost if obs.rejected else 0.0)
        terminated = reason in ("tol", "exact")
        info = {
            "epoch": obs.epoch, "loss": obs.loss, "rel_error": obs.rel_error, "lr": obs.lr,
            "lr_bound": obs.lr_bound, "rejected": obs.rejected, "problem": state["spec"].name,
        }
        return state["features"].update(obs), reward, terminated, info


if gymnasium is not None and ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point=ScheduleEnv)

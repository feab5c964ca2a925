"""Training a schedule policy by evolution strategies on the environment's problem distribution.

OpenAI-style ES (Salimans et al., 2017): each generation perturbs the policy's weights in
``population / 2`` antithetic pairs ``theta +- sigma * eps``, runs every candidate on the same
freshly drawn problems (common random numbers), scores each candidate by its centred rank
among the candidates *per problem* (so a problem where every schedule gains a lot weighs no
more than one where all gain little), and moves ``theta`` with Adam along the rank-weighted
perturbations. Every ``eval_every`` generations the current weights run on a fixed set of
validation problems; the best of those is the result.

Episodes run in worker processes, each on one Numba thread and one BLAS thread, and are
combined in a fixed order: the weights depend on the seed only, not on ``jobs``.
"""

import json
import math
import multiprocessing
import os
import platform
import time
from dataclasses import dataclass

import numpy as np

from .policy import HIDDEN, Policy
from .problems import ProblemSpec, sample_problem


@dataclass(frozen=True)
class ESConfig:
    """Hyper-parameters of :func:`train_policy` (the defaults train the shipped policy)."""

    generations: int = 80
    population: int = 16  #: candidates per generation (antithetic pairs: even)
    problems_per_generation: int = 4
    sigma: float = 0.1  #: perturbation scale
    learning_rate: float = 0.05  #: Adam step
    weight_decay: float = 0.005
    validation_problems: int = 8
    eval_every: int = 5
    hidden: int = HIDDEN

    def __post_init__(self):
        if self.population < 2 or self.population % 2:
            raise ValueError(f"population must be an even number >= 2, got {self.population!r}.")
        for name in ("generations", "problems_per_generation", "validation_problems", "eval_every", "hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}.")


def episode_return(policy, spec):
    """The return of ``policy`` on problem ``spec``: the summed rewards of one episode."""
    from .env import ScheduleEnv

    env = ScheduleEnv()
    obs, _ = env.reset(options={"problem": spec})
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step([policy.fraction(obs)])
        total += reward
        done = terminated or truncated
    env.close()
    return total


def _init_worker():
    import numba
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(1)
    global _BLAS_LIMIT
    _BLAS_LIMIT = threadpool_limits(limits=1, user_api="blas")  # kept for the worker's life


def _run_task(task):
    theta, hidden, spec = task
    return episode_return(Policy.from_flat(theta, hidden), spec)


class _Evaluator:
    """Runs (weights, problem) episodes: in a process pool, or inline for ``jobs=1``."""

    def __init__(self, jobs):
        self.jobs = jobs
        self.pool = None
        if jobs > 1:
            self.pool = multiprocessing.get_context("spawn").Pool(jobs, initializer=_init_worker)

    def __call__(self, tasks):
        if self.pool is not None:
            return self.pool.map(_run_task, tasks, chunksize=1)
        import numba
        from threadpoolctl import threadpool_limits

        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            with threadpool_limits(limits=1, user_api="blas"):
                return [_run_task(task) for task in tasks]
        finally:
            numba.set_num_threads(threads)

    def close(self):
        if self.pool is not None:
            self.pool.close()
            self.pool.join()


def centred_ranks(values):
    """Ranks of ``values`` scaled to ``[-0.5, 0.5]`` (ties get their mean rank)."""
    values = np.asarray(values, dtype=np.float64)
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=np.float64)
    for v in np.unique(values):  # ties share their mean rank
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    return ranks / max(len(values) - 1, 1) - 0.5


class _Adam:
    def __init__(self, size, lr, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m, self.v, self.t = np.zeros(size), np.zeros(size), 0

    def step(self, gradient):
        """The update for an ascent direction ``gradient``."""
        self.t += 1
        self.m = self.beta1 * self.m + (1 - self.beta1) * gradient
        self.v = self.beta2 * self.v + (1 - self.beta2) * gradient**2
        m_hat = self.m / (1 - self.beta1**self.t)
        v_hat = self.v / (1 - self.beta2**self.t)
        return self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


def train_policy(seed=0, config=ESConfig(), *, jobs=None, minutes=None, progress=None):
    """Train a schedule policy from ``seed``.

    Parameters
    ----------
    seed : int
        Seeds the initial weights, the perturbations and every problem drawn.
    config : ESConfig
    jobs : int, default=None
        Worker processes (None: one per CPU core).
    minutes : float, default=None
        Stop after the generation during which this much time has passed. The result then
        depends on the machine's speed; without it, only on ``seed`` and ``config``.
    progress : callable, default=None
        Called after every generation with a dict (generation, seconds, train_return,
        validation_return or None).

    Returns
    -------
    policy : Policy
        The weights of the best validation return.
    card : dict
        JSON-safe: seed, configuration, versions, every training and validation problem,
        the training curve, the chosen generation, stop reason and the policy's SHA-256.
    """
    jobs = (os.cpu_count() or 1) if jobs is None else int(jobs)
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs!r}.")
    t_start = time.perf_counter()
    rng = np.random.default_rng(seed)
    init_rng, noise_rng, problem_rng, validation_rng = rng.spawn(4)
    theta = Policy.initial(init_rng, config.hidden).flat()
    adam = _Adam(theta.size, config.learning_rate)
    validation = [sample_problem(validation_rng) for _ in range(config.validation_problems)]
    curve, training_problems = [], []
    best = (-math.inf, theta.copy(), 0)
    stopped_by = "generations"
    evaluate = _Evaluator(jobs)

    def validate(row):
        """Score the current weights on the validation problems; keep them if the best so far."""
        nonlocal best
        row["validation_return"] = float(np.mean(evaluate([(theta, config.hidden, p) for p in validation])))
        if row["validation_return"] > best[0]:
            best = (row["validation_return"], theta.copy(), row["generation"])

    try:
        for generation in range(1, config.generations + 1):
            theta, returns, problems = _es_generation(theta, adam, config, evaluate, noise_rng, problem_rng)
            training_problems += problems
            row = {
                "generation": generation,
                "seconds": round(time.perf_counter() - t_start, 2),
                "train_return": float(returns.mean()),
                "validation_return": None,
            }
            last = generation == config.generations
            out_of_time = minutes is not None and time.perf_counter() - t_start >= 60 * minutes and not last
            if generation % config.eval_every == 0 or last or out_of_time:
                validate(row)
            curve.append(row)
            if progress is not None:
                progress(row)
            if out_of_time:
                stopped_by = "minutes"
                break
    finally:
        evaluate.close()
    policy = Policy.from_flat(best[1], config.hidden)
    card = {
        "policy_sha256": policy.sha256,
        "seed": seed,
        "algorithm": "evolution strategies (antithetic, per-problem centred ranks, Adam)",
        "config": config.__dict__.copy(),
        "jobs": jobs,
        "stopped_by": stopped_by,
        "minutes_limit": minutes,
        "best_generation": best[2],
        "best_validation_return": best[0],
        "seconds": round(time.perf_counter() - t_start, 1),
        **_CARD_TERMS,
        "training_problems": [p.as_dict() for p in training_problems],
        "validation_problems": [p.as_dict() for p in validation],
        "curve": curve,
    }
    return policy, card


#: What a card says of the problem the policy was trained on.
_CARD_TERMS = {
    "reward": "log(loss before / loss after) per epoch, minus 0.01 per rejected epoch",
    "action": "next epoch's rate as a fraction of its stability bound, in [0.01, 1] (the guard caps at 0.9)",
}


def _es_generation(theta, adam, config, evaluate, noise_rng, problem_rng):
    """One generation of antithetic evolution strategies from ``theta``.

    Draws ``population / 2`` perturbations and the generation's problems, scores every
    candidate on every problem, ranks them per problem and takes an Adam step (with weight
    decay) along the rank-weighted perturbations. Returns ``(new theta, returns, problems)``.
    """
    half = config.population // 2
    eps = noise_rng.standard_normal((half, theta.size))
    candidates = np.concatenate([theta + config.sigma * eps, theta - config.sigma * eps])
    problems = [sample_problem(problem_rng) for _ in range(config.problems_per_generation)]
    returns = np.asarray(
        evaluate([(c, config.hidden, p) for c in candidates for p in problems])
    ).reshape(len(candidates), len(problems))
    fitness = np.mean([centred_ranks(returns[:, j]) for j in range(len(problems))], axis=0)
    gradient = (fitness[:half] - fitness[half:]) @ eps / (config.population * config.sigma)
    theta = theta + adam.step(gradient) - config.learning_rate * config.weight_decay * theta
    return theta, returns, problems


def _versions():
    import numba
    import scipy
    import sklearn

    from .. import __version__

    return {"nmfsched": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "numba": numba.__version__, "scikit-learn": sklearn.__version__}


def write_card(card, path):
    """Write ``card`` as indented JSON, atomically."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(card, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def problems_of(card, key="training_problems"):
    """The :class:`ProblemSpec` list a card records."""
    return [ProblemSpec(**p) for p in card[key]]

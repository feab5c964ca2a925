"""The learned schedule: features, policy files, the environment's contract, the rl scheduler, training."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from nmfsched import StochasticNMF, schedulers
from nmfsched.rl import FEATURE_NAMES, N_FEATURES, Policy, PolicyError, ScheduleFeatures
from nmfsched.rl.env import ScheduleEnv
from nmfsched.rl.problems import ProblemSpec, make_matrix, sample_problem
from nmfsched.rl.train import ESConfig, centred_ranks, train_policy
from nmfsched.schedulers import Observation, RLScheduler

TINY_POLICY = str(Path(__file__).parent / "data" / "tiny_policy.npz")
SHIPPED = Path(__file__).resolve().parents[1] / "nmfsched" / "rl" / "policies"


def small_problem(**changes):
    spec = dict(kind="dense", n_samples=120, n_features=30, true_rank=4, noise=0.1, scale_decades=0.0,
                n_components=4, batch_size=32, grow_batch=False, epochs=6, seed=3)
    spec.update(changes)
    return ProblemSpec(**spec)


def observations(scale=1.0, n=8):
    """A plausible run: falling loss, a noisy bound, one rejected epoch."""
    for t in range(1, n + 1):
        yield Observation(epoch=t, loss=scale * (10.0 / t + 1.0), rel_error=0.1, lr=0.4 + 0.05 * t,
                          lr_bound=1.2 + 0.1 * t, grad_sq=scale * 2.0 / t, grad_cos=0.3, noise_sq=scale * 0.5,
                          rejected=(t == 4))


# ------------------------------------------------------------------ features
def test_features_are_scale_free_bounded_and_resumable():
    a, b = ScheduleFeatures(), ScheduleFeatures()
    a.reset(20)
    b.reset(20)
    rows_a = [a.update(o) for o in observations(1.0)]
    rows_b = [b.update(o) for o in observations(1e6)]
    np.testing.assert_allclose(rows_a, rows_b, atol=1e-12)
    assert all(r.shape == (N_FEATURES,) and np.all(np.abs(r) <= 5.0) for r in rows_a)
    assert rows_a[3][FEATURE_NAMES.index("rejected")] == 1.0
    assert rows_a[7][FEATURE_NAMES.index("budget_used")] == pytest.approx(8 / 20)
    # a JSON round trip of the state continues with the same features
    c = ScheduleFeatures()
    c.reset(20)
    obs = list(observations())
    for o in obs[:5]:
        c.update(o)
    d = ScheduleFeatures()
    d.load_state_dict(json.loads(json.dumps(c.state_dict())))
    np.testing.assert_array_equal(c.update(obs[5]), d.update(obs[5]))


def test_features_of_degenerate_observations_stay_finite():
    f = ScheduleFeatures()
    f.reset(None)
    for obs in (Observation(1, 0.0, 0.0, 0.0, lr_bound=0.0, grad_sq=0.0, noise_sq=0.0),
                Observation(2, math.inf, 1.0, 1.0), Observation(3, 1.0, 1.0, 1.0, lr_bound=math.nan)):
        row = f.update(obs)
        assert np.all(np.isfinite(row)) and np.all(np.abs(row) <= 5.0)


# ------------------------------------------------------------------ policy files
def test_policy_save_load_round_trip(tmp_path):
    policy = Policy.initial(np.random.default_rng(5))
    policy = Policy.from_flat(policy.flat() + np.random.default_rng(6).normal(size=policy.n_params))
    policy.save(tmp_path / "p.npz")
    loaded = Policy.load(tmp_path / "p.npz")
    assert loaded.sha256 == policy.sha256
    x = np.random.default_rng(7).uniform(-5, 5, N_FEATURES)
    assert loaded.fraction(x) == policy.fraction(x)
    np.testing.assert_array_equal(Policy.from_flat(policy.flat()).flat(), policy.flat())
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left nothing behind


def test_bad_policy_files_are_refused_by_name(tmp_path):
    with pytest.raises(PolicyError, match="does not exist"):
        Policy.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_text("not a policy")
    with pytest.raises(PolicyError, match="not a policy file"):
        Policy.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "old.npz", meta=np.array(json.dumps({"features_version": 0, "min_fraction": 0.01, "max_fraction": 1.0})),
             W1=np.zeros((16, N_FEATURES)), b1=np.zeros(16), w2=np.zeros(16), b2=np.zeros(()))
    with pytest.raises(PolicyError, match="features version 0"):
        Policy.load(tmp_path / "old.npz")
    with pytest.raises(ValueError, match="does not exist"):
        RLScheduler(policy=str(tmp_path / "missing.npz"))


@given(st.lists(st.floats(-50, 50), min_size=N_FEATURES, max_size=N_FEATURES), st.integers(0, 2**31))
@settings(max_examples=50, deadline=None)
def test_policy_fraction_is_always_in_its_range(values, seed):
    policy = Policy.from_flat(np.random.default_rng(seed).normal(0, 10, Policy.initial(np.random.default_rng(0)).n_params))
    fraction = policy.fraction(np.clip(values, -5, 5))
    assert 0.01 <= fraction <= 1.0


def test_the_shipped_policy_matches_its_card():
    card = json.loads((SHIPPED / "default.card.json").read_text())
    policy = Policy.load("default")
    assert card["policy_sha256"] == policy.sha256
    assert card["stopped_by"] == "generations"
    assert card["training_problems"] and card["curve"]


# ------------------------------------------------------------------ environment
def run_episode(env, actions, **reset):
    obs, info = env.reset(**reset)
    trace = [(obs.copy(), info["loss"])]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step([a])
        trace.append((obs.copy(), reward, terminated, truncated, info["loss"]))
        if terminated or truncated:
            break
    return trace


def test_env_follows_the_gymnasium_contract():
    gymnasium = pytest.importorskip("gymnasium")
    from gymnasium.utils.env_checker import check_env

    env = ScheduleEnv(problems=[small_problem(), small_problem(kind="sparse_counts", seed=4)])
    check_env(env, skip_render_check=True)
    assert isinstance(env, gymnasium.Env)
    made = gymnasium.make("nmfsched/Schedule-v0", problems=[small_problem()])
    obs, _ = made.reset(seed=0)
    assert made.observation_space.contains(obs)


def test_env_is_deterministic_from_its_seed():
    actions = [0.3, 0.9, 0.05, 0.5, 0.7]
    a = run_episode(ScheduleEnv(), actions, seed=11)
    b = run_episode(ScheduleEnv(), actions, seed=11)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x[0], y[0])
        assert x[1:] == y[1:]
    c = run_episode(ScheduleEnv(), actions, seed=12)
    assert c[0][1] != a[0][1]  # another seed, another problem


def test_env_truncates_at_the_budget_and_terminates_on_tol():
    env = ScheduleEnv(problems=[small_problem(epochs=4)])
    trace = run_episode(env, [0.5] * 10, seed=0)
    assert len(trace) == 4  # reset ran epoch 1, three steps ran epochs 2-4
    assert trace[-1][3] and not trace[-1][2]
    assert not any(t[3] for t in trace[1:-1])
    with pytest.raises(RuntimeError, match="reset"):
        env.step([0.5])
    stopping = ScheduleEnv(problems=[small_problem(epochs=200, batch_size="auto", grow_batch=True)], tol=0.5)
    trace = run_episode(stopping, [0.5] * 200, seed=0)
    assert trace[-1][2] and not trace[-1][3] and len(trace) < 200


def test_env_rewards_are_log_loss_decreases_and_refuses_bad_actions():
    env = ScheduleEnv(problems=[small_problem()])
    _, info = env.reset(seed=0)
    loss = info["loss"]
    _, reward, *_, info = env.step(np.array([0.5]))
    assert reward == pytest.approx(math.log(loss / info["loss"]) - (0.01 if info["rejected"] else 0.0))
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="fraction of the bound"):
            env.step([bad])


def test_env_runs_the_estimators_loop():
    """The env driven by a policy's actions is the estimator run with the rl scheduler, epoch for epoch."""
    spec = small_problem(epochs=8)
    policy = Policy.load(TINY_POLICY)
    env = ScheduleEnv(problems=[spec])
    obs, info = env.reset(seed=0)
    losses = [info["loss"]]
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step([policy.fraction(obs)])
        losses.append(info["loss"])
        done = terminated or truncated
    model = StochasticNMF(spec.n_components, scheduler=RLScheduler(TINY_POLICY), batch_size=spec.batch_size,
                          grow_batch=False, max_iter=spec.epochs, tol=0.0, random_state=spec.seed)
    model.fit(make_matrix(spec))
    np.testing.assert_array_equal(model.history_["loss"], losses)


def test_env_works_without_gymnasium():
    code = (
        "import sys; sys.modules['gymnasium'] = None\n"
        "from nmfsched.rl.env import ScheduleEnv, gymnasium\n"
        "assert gymnasium is None\n"
        "env = ScheduleEnv()\n"
        "obs, info = env.reset(seed=1)\n"
        "assert env.observation_space.contains(obs) and env.action_space.contains(env.action_space.sample())\n"
        "obs, r, term, trunc, info = env.step([0.5])\n"
        "print('ok', obs.shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_sampled_problems_are_reproducible_and_valid():
    a = [sample_problem(np.random.default_rng(9)) for _ in range(3)]
    b = [sample_problem(np.random.default_rng(9)) for _ in range(3)]
    assert a == b
    rng = np.random.default_rng(10)
    for _ in range(40):
        spec = sample_problem(rng)
        assert spec.n_samples * spec.n_features <= 1_200_000
        assert 2 <= spec.n_components <= min(spec.n_samples, spec.n_features) // 2
        json.dumps(spec.as_dict())


# ------------------------------------------------------------------ the rl scheduler
def test_rl_is_registered_and_its_state_is_json_safe_with_the_policy_identity():
    s = schedulers.get("rl", policy=TINY_POLICY)
    s.reset(0.5, total_epochs=10)
    for obs in observations():
        s.step(obs)
    state = json.loads(json.dumps(s.state_dict()))
    assert state["policy"] == TINY_POLICY and state["policy_sha256"] == Policy.load(TINY_POLICY).sha256
    assert not any(isinstance(v, list) and len(v) > 10 for v in state.values())  # no weights inside
    other = RLScheduler()  # the shipped policy: the state brings its own
    other.load_state_dict(state)
    assert other.policy == TINY_POLICY and other.policy_sha256 == state["policy_sha256"]
    with pytest.raises(ValueError, match="now has sha256"):
        other.load_state_dict(dict(state, policy_sha256="0" * 64))


def test_rl_resumes_a_partial_fit_run_exactly_after_a_json_round_trip():
    X = load_digits().data[:600]
    uninterrupted = StochasticNMF(8, scheduler=RLScheduler(TINY_POLICY), batch_size=128, random_state=0)
    for _ in range(6):
        uninterrupted.partial_fit(X)
    resumed = StochasticNMF(8, scheduler=RLScheduler(TINY_POLICY), batch_size=128, random_state=0)
    for _ in range(3):
        resumed.partial_fit(X)
    fresh = RLScheduler(TINY_POLICY)
    fresh.load_state_dict(json.loads(json.dumps(resumed.scheduler_.state_dict())))
    resumed.scheduler_ = fresh
    for _ in range(3):
        resumed.partial_fit(X)
    np.testing.assert_array_equal(resumed.history_["lr_proposed"], uninterrupted.history_["lr_proposed"])
    np.testing.assert_array_equal(resumed.components_, uninterrupted.components_)


def test_rl_instances_clone_and_grid_search():
    X = load_digits().data[:300]
    grid = GridSearchCV(
        StochasticNMF(6, max_iter=4, batch_size=64, random_state=0),
        {"scheduler": [RLScheduler(), RLScheduler(TINY_POLICY)]},
        cv=2, scoring=lambda est, X, y=None: -est.reconstruction_err_,
    )
    grid.fit(X)
    assert len(grid.cv_results_["params"]) == 2
    assert repr(clone(RLScheduler(TINY_POLICY))) == repr(RLScheduler(TINY_POLICY))
    s = RLScheduler()
    s.set_params(policy=TINY_POLICY)
    assert s.policy_sha256 == Policy.load(TINY_POLICY).sha256


def test_rl_by_name_from_the_estimator_and_the_cli(tmp_path):
    from nmfsched.cli import main

    X = load_digits().data[:200]
    model = StochasticNMF(5, scheduler="rl", max_iter=5, random_state=0).fit(X)
    assert model.scheduler_.name == "rl" and np.isfinite(model.reconstruction_err_)
    np.save(tmp_path / "x.npy", X)
    code = main(["factorize", str(tmp_path / "x.npy"), "--rank", "5", "--out", str(tmp_path / "out"),
                 "--scheduler", "rl", "--scheduler-param", f"policy={TINY_POLICY}", "--max-epochs", "3"])
    assert code == 0
    report = json.loads(next((tmp_path / "out").glob("*/report.json")).read_text())
    assert report["params"]["scheduler_params"] == {"policy": TINY_POLICY}


@given(
    n=st.integers(20, 150), m=st.integers(5, 60), k=st.integers(1, 6), seed=st.integers(0, 10_000),
    batch=st.sampled_from([8, 32, "auto"]), scale=st.sampled_from([1e-6, 1.0, 1e6]),
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_rl_never_exceeds_the_guards_cap_and_the_loss_stays_finite(n, m, k, seed, batch, scale):
    X = np.random.default_rng(seed).random((n, m)) * scale
    model = StochasticNMF(min(k, m), scheduler="rl", batch_size=batch, max_iter=8, tol=0, random_state=seed)
    model.fit(X)
    h = model.history_
    assert np.all(np.isfinite(h["loss"]))
    assert np.all(h["lr"] <= model.safety_factor * h["lr_bound"] * (1 + 1e-12))
    assert model.stability_certificate_["descent"]


# ------------------------------------------------------------------ training
def test_centred_ranks():
    np.testing.assert_allclose(centred_ranks([3.0, 1.0, 2.0]), [0.5, -0.5, 0.0])
    np.testing.assert_allclose(centred_ranks([1.0, 1.0, 0.0, 2.0]), [0.0, 0.0, -0.5, 0.5])


TINY = ESConfig(generations=2, population=4, problems_per_generation=1, validation_problems=1, eval_every=1)


def test_training_is_reproducible_and_independent_of_jobs():
    a, card_a = train_policy(3, TINY, jobs=1)
    b, _ = train_policy(3, TINY, jobs=1)
    c, _ = train_policy(3, TINY, jobs=2)
    assert a.sha256 == b.sha256 == c.sha256
    d, _ = train_policy(4, TINY, jobs=1)
    assert d.sha256 != a.sha256
    assert card_a["policy_sha256"] == a.sha256 and len(card_a["curve"]) == 2
    assert len(card_a["training_problems"]) == 2
    json.dumps(card_a)


def test_train_policy_cli_writes_weights_and_card_and_keeps_existing_files(tmp_path, capsys):
    from nmfsched.cli import main

    out = tmp_path / "p.npz"
    args = ["train-policy", "--seed", "1", "--out", str(out), "--generations", "1", "--population", "2",
            "--jobs", "1", "-q"]
    assert main(args) == 0
    card = json.loads((tmp_path / "p.card.json").read_text())
    assert card["seed"] == 1 and card["policy_sha256"] == Policy.load(out).sha256
    assert main(args) == 2  # both exist: refused
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert main(["train-policy", "--out", str(tmp_path / "q.npz"), "--population", "3", "-q"]) == 2


def test_summaries_count_wins_ties_and_all_tied_cases():
    from nmfsched.rl.evaluate import all_tied, summarize

    finals = [{"rl": 1.0, "b": 2.0}, {"rl": 1.0, "b": 1.0}, {"rl": 1.0005, "b": 1.0}, {"rl": 3.0, "b": 1.0}]
    s = summarize(finals, tie=1e-3)["b"]
    assert s["strictly_lower"] == 0.25 and s["within_tie"] == 0.75
    assert s["worst_ratio"] == 3.0 and s["best_ratio"] == 0.5 and s["median_ratio"] == pytest.approx(1.00025)
    assert all_tied(finals, tie=1e-3) == 0.5


def test_problem_specs_refuse_an_unknown_kind_and_a_one_epoch_budget():
    with pytest.raises(ValueError, match="kind"):
        small_problem(kind="images")
    with pytest.raises(ValueError, match="epochs must be >= 2"):
        small_problem(epochs=1)


def test_rl_keeps_its_rate_when_no_usable_bound_was_reported():
    s = RLScheduler(TINY_POLICY)
    s.reset(0.7, total_epochs=5)
    for bound in (math.nan, math.inf):
        assert s.step(Observation(epoch=s.last_epoch + 1, loss=1.0, rel_error=0.1, lr=0.7, lr_bound=bound)) == 0.7


def test_a_policys_card_sits_beside_its_weights():
    from nmfsched.rl.policy import card_path

    assert card_path("/x/p.npz") == Path("/x/p.card.json") and card_path("/x/p") == Path("/x/p.card.json")
    assert card_path("default") == SHIPPED / "default.card.json"

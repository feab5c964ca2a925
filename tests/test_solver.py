"""The solver against a plain-NumPy replay of the same algorithm, and the epoch loop around
it: its records, what the scheduler is told, and the stopping rules."""


import numpy as np
import pytest
import scipy.sparse as sp
from conftest import low_rank

from nmfsched.epochs import LOSS_FLOOR, History, StoppingRules, run_epochs
from nmfsched.kernels import cpu as cpu_kernels
from nmfsched.kernels import get_backend
from nmfsched.schedulers import ConstantScheduler, StepScheduler
from nmfsched.solver import ONE_BATCH_H_SWEEPS, ONE_BATCH_W_SWEEPS, StochasticSolver, resolve_w_sweeps, solve_w
from nmfsched.stability import StabilityGuard


def _cd_rows(Y, G, P, steps, sweeps):
    for _ in range(sweeps):
        for j in range(Y.shape[1]):
            if steps[j] > 0:
                Y[:, j] = np.maximum(Y[:, j] - steps[j] * (Y @ G[:, j] - P[:, j]), 0)


def oracle_epochs(X, W, H, lrs, batch_size, w_sweeps, seed):
    """NumPy version of the solver's epochs (``sgd_epoch`` then ``refresh_w``): same row
    order, same arithmetic, no kernels."""
    X = X.toarray() if sp.issparse(X) else X
    W, H = W.astype(np.float64).copy(), H.astype(np.float64).copy()
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    # a one-batch epoch sweeps each factor more than once against its product
    refresh_sweeps = max(w_sweeps, ONE_BATCH_W_SWEEPS) if batch_size >= n else w_sweeps
    h_sweeps = ONE_BATCH_H_SWEEPS if batch_size >= n else 1
    losses = []
    for epoch, lr in enumerate(lrs):
        order = rng.permutation(n)
        n_batches = -(-n // batch_size)
        for i in range(n_batches):  # sizes differ by at most one row
            rows = order[i * n // n_batches : (i + 1) * n // n_batches]
            HHt = H @ H.T
            Wb = W[rows]
            # one batch of all rows: after the first epoch the refresh below has already
            # swept W against this H, so the epoch is the H step alone
            if batch_size < n or epoch == 0:
                _cd_rows(Wb, HHt, X[rows] @ H.T, 1 / np.diag(HHt), refresh_sweeps)
            W[rows] = Wb
            A = W.T @ W
            grad_scale = n / len(rows)
            for _ in range(h_sweeps):
                for j in range(H.shape[0]):  # Gauss-Seidel over the rows of H
                    g = grad_scale * ((Wb.T @ Wb)[j] @ H - Wb[:, j] @ X[rows])
                    H[j] = np.maximum(H[j] - lr / A[j, j] * g, 0)
        HHt = H @ H.T
        _cd_rows(W, HHt, X @ H.T, 1 / np.diag(HHt), refresh_sweeps)
        losses.append(0.5 * ((X - W @ H) ** 2).sum())
    return W, H, losses


def unguarded():
    """A guard that records the bound but enforces nothing (these tests pin the loop itself)."""
    return StabilityGuard(enforce=False)


def make_solver(X, W, H, batch_size, w_sweeps, seed):
    return StochasticSolver(
        X, W, H, backend=get_backend("cpu"), batch_size=batch_size, w_sweeps=w_sweeps,
        rng=np.random.default_rng(seed),
    )


@pytest.mark.parametrize("sparse,fused", [(False, False), (False, True), (True, False)])
@pytest.mark.parametrize("batch_size", [7, 40, 1000])  # 1000 > n: full batch
def test_epochs_match_numpy_oracle(monkeypatch, sparse, fused, batch_size):
    """``fused``: every ``W`` half in one pass over its rows (the CPU backend's ``dense_w_pass``,
    on large dense minibatches only by default)."""
    monkeypatch.setattr(cpu_kernels, "W_PASS_MIN_BYTES", 0 if fused else 1 << 62)
    rng = np.random.default_rng(0)
    X = low_rank(40, 25, 4, noise=0.1)
    if sparse:
        X[X < 0.8 * X.mean()] = 0
        X = sp.csr_matrix(X)
    W0, H0 = rng.random((40, 4)), rng.random((4, 25))
    lrs = [1.0, 0.6, 0.3]
    W_ref, H_ref, loss_ref = oracle_epochs(X, W0, H0, lrs, batch_size, 2, seed=7)

    solver = make_solver(X, W0, H0, batch_size, 2, seed=7)
    losses = []
    for lr in lrs:
        solver.sgd_epoch(lr)
        losses.append(solver.refresh_w(solver.refresh_sweeps))
    np.testing.assert_allclose(solver.H, H_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(solver.W_host(), W_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(losses, loss_ref, rtol=1e-9)


def test_gram_identity_loss_matches_direct_residual_in_float32():
    X = low_rank(200, 60, 5, noise=0.2, dtype=np.float32)
    rng = np.random.default_rng(1)
    solver = make_solver(X, rng.random((200, 5)).astype(np.float32), rng.random((5, 60)).astype(np.float32), 64, 1, 0)
    loss = solver.refresh_w(1)
    W, H = solver.W_host().astype(np.float64), solver.H.astype(np.float64)
    direct = 0.5 * ((X.astype(np.float64) - W @ H) ** 2).sum()
    assert loss == pytest.approx(direct, rel=1e-4)


def test_full_batch_constant_rate_is_monotone_hals():
    """With one batch and lr=1 every update is an exact coordinate minimisation (HALS),
    so the loss can never rise."""
    X = low_rank(60, 30, 6, noise=0.3)
    rng = np.random.default_rng(3)
    solver = make_solver(X, rng.random((60, 6)), rng.random((6, 30)), 60, 1, 0)
    sched = ConstantScheduler()
    sched.reset(1.0)
    history = History()
    run_epochs(solver, sched, unguarded(), history, start_loss=np.inf, stopping=StoppingRules(30))
    losses = np.asarray(history.losses())
    assert (np.diff(losses) <= 1e-9 * losses[:-1]).all()


def test_run_epochs_records_history_and_scheduler_rates():
    X = low_rank(50, 20, 3, noise=0.1)
    rng = np.random.default_rng(0)
    solver = make_solver(X, rng.random((50, 3)), rng.random((3, 20)), 16, 2, 0)
    sched = StepScheduler(step_size=2, gamma=0.5)
    sched.reset(0.8)
    history = History()
    reason = run_epochs(solver, sched, unguarded(), history, start_loss=np.inf, stopping=StoppingRules(6))
    h = history.as_arrays()
    assert reason == "max_epochs"
    np.testing.assert_array_equal(h["epoch"], np.arange(1, 7))
    np.testing.assert_allclose(h["lr"], [0.8, 0.8, 0.4, 0.4, 0.2, 0.2])
    assert (np.diff(h["seconds"]) >= 0).all()
    assert np.isnan(h["lr_bound"][0])  # no probe was run: no bound for the first epoch
    assert ((h["lr_bound"][1:] >= 0) & (h["lr_bound"][1:] <= 2)).all()
    np.testing.assert_array_equal(h["lr"], h["lr_proposed"])  # nothing enforced
    assert (h["noise_sq"] >= 0).all() and (h["grad_sq"] >= 0).all()
    assert (h["h_step_min"] <= h["h_step_max"]).all()
    np.testing.assert_allclose(h["rel_error"], np.sqrt(2 * h["loss"] / (X**2).sum()))


def test_run_epochs_stops_on_exact_fit():
    W, H = np.random.default_rng(0).random((30, 2)), np.random.default_rng(1).random((2, 10))
    X = W @ H
    solver = make_solver(X, W, H, 30, 1, 0)
    sched = ConstantScheduler()
    sched.reset(1.0)
    assert run_epochs(solver, sched, unguarded(), History(), start_loss=np.inf, stopping=StoppingRules(10)) == "exact"


def test_run_epochs_max_time():
    X = low_rank(40, 10, 2)
    solver = make_solver(X, np.ones((40, 2)), np.ones((2, 10)), 8, 1, 0)
    sched = ConstantScheduler()
    sched.reset(1.0)
    history = History()
    assert run_epochs(solver, sched, unguarded(), history, start_loss=np.inf, stopping=StoppingRules(1000, max_time=1e-9)) == "max_time"
    assert len(history) == 1


def test_divergence_raises_a_clear_error():
    X = low_rank(60, 20, 3, noise=0.5)
    rng = np.random.default_rng(0)
    solver = make_solver(X, rng.random((60, 3)), rng.random((3, 20)), 5, 1, 0)
    sched = ConstantScheduler()
    # The exact W solve absorbs huge H steps (the loss stays finite up to ~1e30);
    # a rate that overflows float64 must end in one clear error, not NaN factors.
    sched.reset(1e300)
    with pytest.raises(FloatingPointError, match="diverged in epoch 1 at learning rate 1e\\+300.*set enforce_bound=True"):
        run_epochs(solver, sched, unguarded(), History(), start_loss=np.inf, stopping=StoppingRules(5))


def test_an_overflow_under_the_guard_names_its_cause_not_a_setting_already_in_force(monkeypatch):
    X = low_rank(60, 20, 3, noise=0.5).astype(np.float32)
    rng = np.random.default_rng(0)
    W, H = rng.random((60, 3), dtype=np.float32), rng.random((3, 20), dtype=np.float32)
    solver = make_solver(X, W, H, 20, 1, 0)
    guard = StabilityGuard(enforce=True)
    solver.probe()
    guard.bound = solver.lr_bound()
    sched = ConstantScheduler()
    sched.reset(1.0)
    monkeypatch.setattr(solver, "refresh_w", lambda sweeps: np.float32(np.inf))  # as a float32 overflow ends
    with pytest.raises(FloatingPointError) as error:
        run_epochs(solver, sched, guard, History(), start_loss=np.inf, stopping=StoppingRules(5))
    message = str(error.value)
    assert "within the stability bound" in message and "overflowed float32" in message
    assert "enforce_bound" not in message and "smaller learning_rate" not in message


@pytest.mark.parametrize(
    "losses,stalled",
    [
        ([10, 9, 8, 7, 6], False),  # still improving
        ([10, 5, 5, 5, 5], True),  # flat for the window
        ([10, 5, 6, 4.99999, 7], True),  # noise around the best: improvement below tol
        ([10, 5, 6, 4, 7], False),  # one genuinely better epoch in the window
        ([10, 9], False),  # too short to judge
    ],
)
def test_stall_test_uses_best_loss_not_last(losses, stalled):
    from types import SimpleNamespace

    rules = StoppingRules(max_epochs=100, tol=1e-3, n_iter_no_change=3)
    last = SimpleNamespace(loss=losses[-1], seconds=0.0)
    assert rules.reason(last, losses) == ("tol" if stalled else None)
    assert StoppingRules(max_epochs=100, tol=0.0, n_iter_no_change=3).reason(last, losses) is None


def test_the_stall_test_never_resolves_a_loss_finer_than_its_floor():
    """A nearly exact fit: the loss still falls by 2% a window, but by less than tol times the
    floor (a fraction of the zero fit's loss), so the run stops; without a floor it goes on."""
    from types import SimpleNamespace

    losses = [1e-5 * 0.98**t for t in range(8)]  # of a zero fit's loss 1.0
    last = SimpleNamespace(loss=losses[-1], seconds=0.0)
    assert StoppingRules(100, tol=1e-3, n_iter_no_change=3).reason(last, losses) is None
    assert StoppingRules(100, tol=1e-3, n_iter_no_change=3, floor=LOSS_FLOOR * 1.0).reason(last, losses) == "tol"
    assert StoppingRules(100, tol=1e-3, n_iter_no_change=3, floor=1e-9).reason(last, losses) is None


def test_a_nearly_exact_fit_stops_by_tol_before_max_iter():
    from nmfsched import StochasticNMF

    rng = np.random.default_rng(3)
    X = rng.random((300, 5)) @ rng.random((5, 60)) + 1e-3 * rng.random((300, 60))
    model = StochasticNMF(5, random_state=0, max_iter=600).fit(X)  # without the floor: 600 epochs, 2.2e-4
    assert model.stop_reason_ == "tol" and model.n_iter_ < 300
    assert model.history_["rel_error"][-1] < 0.005


def test_solve_w_is_row_independent_and_optimal(rng):
    X = low_rank(80, 30, 4, noise=0.05)
    H = rng.random((4, 30))
    W = solve_w(get_backend("cpu"), X, H, max_sweeps=2000, tol=1e-12)
    W_half = solve_w(get_backend("cpu"), X[::2], H, max_sweeps=2000, tol=1e-12)
    np.testing.assert_allclose(W[::2], W_half, rtol=1e-10, atol=1e-12)
    # KKT conditions of NNLS: gradient >= 0, and = 0 where W > 0
    grad = W @ (H @ H.T) - X @ H.T
    assert (grad > -1e-6).all()
    assert np.abs(grad[W > 1e-8]).max() < 1e-6


@pytest.mark.parametrize(
    "w_sweeps,k,m,expected",
    [("auto", 16, 64, 1), ("auto", 40, 4096, 2), ("auto", 49, 361, 1), ("auto", 10, 100, 2), (3, 16, 64, 3)],
)
def test_resolve_w_sweeps(w_sweeps, k, m, expected):
    assert resolve_w_sweeps(w_sweeps, k, m) == expected


# -- batch size: chosen from the shape, grown by the norm test ---------------------------
def even_split(n, size):
    """True when batches of ``size`` split ``n`` rows with a last batch short by less than
    one row per batch."""
    n_batches = -(-n // size)
    return n_batches * size - n < n_batches


def test_auto_batch_size_follows_the_cost_of_an_h_step():
    from nmfsched.solver import MIN_AUTO_BATCH, resolve_batch_size

    # dense images (cbcl-like): the products dominate, so a few hundred rows, split evenly
    size = resolve_batch_size("auto", 2429, 361, 49, 2429 * 361, 1)
    assert MIN_AUTO_BATCH <= size <= 2 * MIN_AUTO_BATCH and even_split(2429, size)
    # wide sparse text (tdt2-like): an H step costs more than a pass over X, so every row
    assert resolve_batch_size("auto", 9394, 36771, 30, 1_224_135, 2) == 9394
    # a bigger rank makes the per-batch H step dearer: never a smaller batch
    sizes = [resolve_batch_size("auto", 50_000, 2000, k, 50_000 * 2000 // 20, 1) for k in (20, 80, 200)]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]
    # an explicit size is kept as given (capped at the rows)
    assert resolve_batch_size(100, 10000, 50, 4, 500_000, 2) == 100
    assert resolve_batch_size(100, 30, 50, 4, 1500, 2) == 30
    assert resolve_batch_size(100, 10000, 50, 4, 500_000, 2, max_batches=8) == 100


def test_a_growing_batch_starts_with_few_minibatches():
    from nmfsched import StochasticNMF
    from nmfsched.solver import MAX_FIRST_EPOCH_BATCHES, MIN_AUTO_BATCH, resolve_batch_size

    tall = (60000, 300, 40, 60000 * 300, 2)
    assert resolve_batch_size("auto", *tall) == MIN_AUTO_BATCH  # the cost alone: 235 batches
    assert resolve_batch_size("auto", *tall, max_batches=8) == 7500
    # where the cost asks for more rows, the cost decides
    assert resolve_batch_size("auto", 1797, 64, 16, 1797 * 64, 1, max_batches=8) == resolve_batch_size(
        "auto", 1797, 64, 16, 1797 * 64, 1
    )
    X = np.random.default_rng(0).random((4000, 300))
    growing = StochasticNMF(20, max_iter=1, random_state=0).fit(X)
    assert growing.history_["batch_size"][0] == 4000 // MAX_FIRST_EPOCH_BATCHES
    fixed = StochasticNMF(20, max_iter=1, random_state=0, grow_batch=False).fit(X)
    assert fixed.history_["batch_size"][0] == resolve_batch_size("auto", 4000, 300, 20, 4000 * 300, 2) < 500


def test_on_many_rows_the_first_batches_are_capped_and_precise_batches_grow_by_noise_alone(monkeypatch):
    import nmfsched.solver
    from nmfsched.solver import FIRST_EPOCH_MAX_ROWS, MIN_BATCH_GROWTH, resolve_batch_size
    from nmfsched.theory import batch_size_for_noise

    million = (1_000_000, 300, 20, 1_000_000 * 300, 2)
    size = resolve_batch_size("auto", *million, max_batches=8)
    assert FIRST_EPOCH_MAX_ROWS * 0.98 <= size <= FIRST_EPOCH_MAX_ROWS  # not 125 000: 62 batches
    assert resolve_batch_size("auto", 120_000, 300, 20, 120_000 * 300, 2, max_batches=8) == 15000  # fewer rows: an eighth
    precise = 512  # PRECISE_BATCH_ROWS made small, so the test needs no million rows
    monkeypatch.setattr(nmfsched.solver, "PRECISE_BATCH_ROWS", precise)
    n, L = 128 * precise, np.ones(4)  # 128 batches: far more than a one-batch epoch is worth
    X = low_rank(n, 12, 4, noise=0.5)
    rng = np.random.default_rng(0)
    solver = make_solver(X, rng.random((n, 4)), rng.random((4, 12)), precise, 1, seed=0)
    b = solver.batch_size
    assert b == precise
    solver.grow_batch(np.ones(4), 1e-6 * np.ones(4), L)  # quiet: no twofold floor at this size
    assert solver.batch_size == b
    solver.grow_batch(np.ones(4), 5 * np.ones(4), L)  # noise 5x the gradient: grows, to 4x allowed
    expected = batch_size_for_noise(np.ones(4), 5 * np.ones(4), L, b, n, noise_ratio=4.0)
    assert b < solver.batch_size < MIN_BATCH_GROWTH * b and solver.batch_size >= expected
    solver.grow_batch(np.ones(4), 1e4 * np.ones(4), L)  # noise far above the signal: one batch pays
    assert solver.batch_size == n and solver.full_batch
    small = make_solver(X[:1000], rng.random((1000, 4)), rng.random((4, 12)), 64, 1, seed=0)
    small.grow_batch(np.ones(4), 1e-6 * np.ones(4), L)  # below that size the floor stays
    assert small.batch_size >= MIN_BATCH_GROWTH * 63


def test_the_switch_to_one_batch_weighs_the_epochs_per_pass(monkeypatch):
    """A minibatch epoch reads X three times and a one-batch epoch twice: statistics where one
    batch does not pay per epoch but pays per pass switch to one batch."""
    import nmfsched.solver
    from nmfsched.solver import ONE_BATCH_GAIN
    from nmfsched.theory import one_batch_pays

    precise = 512
    monkeypatch.setattr(nmfsched.solver, "PRECISE_BATCH_ROWS", precise)
    n, L = 64 * precise, np.ones(4)
    grad_sq, noise_sq = np.ones(4), 5 * np.ones(4)
    assert not one_batch_pays(grad_sq, noise_sq, L, precise, n, gain=ONE_BATCH_GAIN)
    rng = np.random.default_rng(0)
    solver = make_solver(low_rank(n, 12, 4, noise=0.5), rng.random((n, 4)), rng.random((4, 12)), precise, 1, seed=0)
    solver.grow_batch(grad_sq, noise_sq, L)
    assert solver.batch_size == n and solver.full_batch


def test_snapshots_share_the_rows_until_w_changes(monkeypatch):
    """A one-batch epoch's H step leaves W as it was: the guard's snapshot before the epoch and
    the extrapolation's after the step share one copy of the rows; any change of W (a
    minibatch's W half, a refresh, a restore) makes the next snapshot copy them afresh, and
    every restore brings back the W of its own snapshot."""
    X = low_rank(60, 15, 3, noise=0.1)
    rng = np.random.default_rng(0)
    solver = make_solver(X, rng.random((60, 3)), rng.random((3, 15)), 20, 1, seed=0)
    copies = []
    real = type(solver.rows).snapshot
    monkeypatch.setattr(type(solver.rows), "snapshot", lambda self, spare=None: copies.append(1) or real(self, spare))
    first = solver.snapshot()
    assert solver.snapshot()[0] is first[0] and len(copies) == 1
    solver.sgd_epoch(0.5)  # minibatches: W changes
    W_after_epoch = solver.W.copy()
    second = solver.snapshot()
    assert second[0] is not first[0] and len(copies) == 2
    solver.restore(first)
    np.testing.assert_array_equal(solver.W, first[0].rows[0])
    third = solver.snapshot()
    assert third[0] is not first[0] and len(copies) == 3  # a restore counts as a change
    solver.restore(second)
    np.testing.assert_array_equal(solver.W, W_after_epoch)
    solver.refresh_w(1)
    fourth = solver.snapshot()
    assert fourth[0] is not third[0] and len(copies) == 4
    solver.drop_snapshot()  # the copy kept for sharing is let go: the next snapshot copies afresh
    assert solver.snapshot()[0] is not fourth[0] and len(copies) == 5


def test_a_guarded_extrapolated_one_batch_epoch_copies_w_once(monkeypatch):
    from nmfsched import StochasticNMF
    from nmfsched.row_stores import InMemoryRows

    X = low_rank(80, 12, 3, noise=0.1)
    copies = []
    real = InMemoryRows.snapshot
    monkeypatch.setattr(InMemoryRows, "snapshot", lambda self, spare=None: copies.append(1) or real(self, spare))
    model = StochasticNMF(3, batch_size=80, max_iter=6, tol=0, random_state=0).fit(X)
    assert model.n_iter_ == 6 and len(copies) <= model.n_iter_ + 1  # was two per epoch


def test_a_snapshot_overwrites_the_last_copy_only_once_no_snapshot_holds_it():
    """The rows' last copy is reused for the next snapshot after every snapshot holding it is
    gone, and never while one is held: each restore still brings back its own W."""
    X = low_rank(60, 15, 3, noise=0.1)
    rng = np.random.default_rng(0)
    solver = make_solver(X, rng.random((60, 3)), rng.random((3, 15)), 60, 1, seed=0)
    first = solver.snapshot()
    W_first = first[0].rows[0].copy()
    solver.refresh_w(2)
    second = solver.snapshot()  # the first is still held: a new copy
    assert second[0].rows[0] is not first[0].rows[0]
    W_second = solver.W.copy()
    solver.restore(first)
    np.testing.assert_array_equal(solver.W, W_first)
    np.testing.assert_array_equal(second[0].rows[0], W_second)
    kept = second[0].rows[0]
    del first, second  # no snapshot holds the last copy any more
    solver.refresh_w(2)
    W_third = solver.W.copy()
    third = solver.snapshot()
    assert third[0].rows[0] is kept  # overwritten, not allocated
    np.testing.assert_array_equal(kept, W_third)
    solver.refresh_w(2)
    solver.restore(third)
    np.testing.assert_array_equal(solver.W, W_third)


def count_calls(monkeypatch, cls, name):
    """A list that gets an entry for every call of ``cls.name`` (which still runs)."""
    calls, real = [], getattr(cls, name)
    monkeypatch.setattr(cls, name, lambda self, *a: calls.append(1) or real(self, *a))
    return calls


def test_one_batch_epochs_reuse_the_refresh_product(monkeypatch):
    """After a refresh, a one-batch epoch takes no X H^T of its own (the refresh's is the
    same product); after a restore it must compute one. The values are pinned by
    test_epochs_match_numpy_oracle with a batch of all rows."""
    X = low_rank(50, 20, 3, noise=0.1)
    rng = np.random.default_rng(3)
    solver = make_solver(X, rng.random((50, 3)), rng.random((3, 20)), 50, 2, seed=0)
    calls = count_calls(monkeypatch, type(solver.backend), "xb_ht")
    for lr in (1.0, 0.7, 1.3):
        solver.sgd_epoch(lr)
        solver.refresh_w(2)
        np.testing.assert_allclose(solver.rows._p_full, X @ solver.Ht, rtol=1e-12)
    assert len(calls) == 1 + 3  # the first epoch's own product, then only the refreshes
    snap = solver.snapshot()
    solver.sgd_epoch(1.0)
    solver.restore(snap)
    calls.clear()
    solver.sgd_epoch(1.0)
    assert len(calls) == 1


def test_a_fused_refresh_gives_the_next_one_batch_epoch_its_x_t_w_until_w_changes(monkeypatch):
    """Where the W half runs in one pass (large dense data; forced here), the refresh of a
    one-batch epoch also forms X^T W for the next epoch's H step, which then takes no product
    of its own and steps as the separate products would; a restore of W makes the store
    compute X^T W afresh, and a minibatch epoch's refresh does not form it."""
    monkeypatch.setattr(cpu_kernels, "W_PASS_MIN_BYTES", 0)
    X = low_rank(50, 20, 3, noise=0.1)
    rng = np.random.default_rng(3)
    W0, H0 = rng.random((50, 3)), rng.random((3, 20))
    solver = make_solver(X, W0.copy(), H0, 50, 2, seed=0)  # the store sweeps the W it is given
    calls = count_calls(monkeypatch, type(solver.backend), "xbt_wb")
    for lr in (1.0, 0.7, 1.3):
        solver.sgd_epoch(lr)
        solver.refresh_w(2)
        np.testing.assert_allclose(solver.rows.all_rows_h_block().P, X.T @ solver.W, rtol=1e-12)
    assert not calls
    monkeypatch.setattr(cpu_kernels, "W_PASS_MIN_BYTES", 1 << 62)
    plain = make_solver(X, W0.copy(), H0, 50, 2, seed=0)
    for lr in (1.0, 0.7, 1.3):
        plain.sgd_epoch(lr)
        plain.refresh_w(2)
    np.testing.assert_allclose(solver.H, plain.H, rtol=1e-12)
    monkeypatch.setattr(cpu_kernels, "W_PASS_MIN_BYTES", 0)

    snap = solver.snapshot()
    solver.sgd_epoch(1.0)
    solver.refresh_w(2)
    solver.restore(snap)
    np.testing.assert_allclose(solver.rows.all_rows_h_block().P, X.T @ snap[0].rows[0], rtol=1e-12)

    minibatches = make_solver(X, W0.copy(), H0, 10, 2, seed=0)
    minibatches.sgd_epoch(1.0)
    calls.clear()
    minibatches.refresh_w(2)
    minibatches.rows.all_rows_h_block()
    assert len(calls) == 1


def test_grow_batch_only_grows_to_even_batches_and_predicts_the_noise():
    from nmfsched.solver import MIN_BATCH_GROWTH
    from nmfsched.theory import noise_at_batch_size

    X = low_rank(1000, 30, 4, noise=0.5)
    rng = np.random.default_rng(0)
    solver = make_solver(X, rng.random((1000, 4)), rng.random((4, 30)), 64, 1, seed=0)
    b0 = solver.batch_size
    assert b0 == 63 and even_split(1000, b0)  # 16 batches of at most 64 rows, evened out
    L = np.ones(4)
    noise = solver.grow_batch(np.ones(4), 9 * np.ones(4), L)  # noise 9x the gradient
    b = solver.batch_size
    assert b > b0 and even_split(1000, b)
    np.testing.assert_allclose(noise, noise_at_batch_size(9 * np.ones(4), b0, b, 1000))
    assert np.sum(noise) <= 4 * (1 + 1e-9)  # predicted not to exceed the gradient
    assert all(rows.shape[0] in (b, b - 1) or rows.shape[0] >= b - -(-1000 // b) for rows in solver.minibatches())
    # a quiet epoch still grows it geometrically (MIN_BATCH_GROWTH), and predicts its noise
    quiet = solver.grow_batch(np.ones(4), 1e-6 * np.ones(4), L)
    b2 = solver.batch_size
    assert b2 >= MIN_BATCH_GROWTH * b and even_split(1000, b2)
    np.testing.assert_allclose(quiet, noise_at_batch_size(1e-6 * np.ones(4), b, b2, 1000))
    # all noise: every row, and from then on the epochs are one batch
    solver.grow_batch(np.zeros(4), np.ones(4), L)
    assert solver.batch_size == 1000 and solver.full_batch
    assert list(solver.minibatches()) == [None]


@pytest.mark.parametrize("n, asked, size, sizes", [
    (34, 33, 17, {17}),  # not 33 + 1: a one-row batch would step with weight 34
    (1797, 256, 225, {225, 224}),  # 8 batches
    (10, 3, 3, {3, 2}),  # 3 + 3 + 2 + 2, not 3 + 3 + 3 + 1
    (10, 10, 10, {10}),
    (10, 50, 10, {10}),
])
def test_explicit_batch_sizes_split_the_rows_nearly_evenly(n, asked, size, sizes):
    X = low_rank(n, 6, 2)
    solver = make_solver(X, np.ones((n, 2)), np.ones((2, 6)), asked, 1, 0)
    assert solver.batch_size == size
    batches = list(solver.minibatches())
    if size == n:
        assert batches == [None]
    else:
        assert {len(rows) for rows in batches} == sizes and sum(map(len, batches)) == n
        assert max(map(len, batches)) - min(map(len, batches)) <= 1


def test_one_record_feeds_both_the_history_row_and_the_scheduler():
    """The scheduler sees the next epoch's bound; history_ keeps the bound in force."""

    class Recorder(ConstantScheduler):
        def _next_lr(self, obs):
            self.seen.append(obs)
            return self.lr0

    X = low_rank(120, 20, 3, noise=0.2)
    rng = np.random.default_rng(0)
    solver = make_solver(X, rng.random((120, 3)), rng.random((3, 20)), 30, 1, 0)
    guard = StabilityGuard()
    guard.initial_loss, guard.bound = solver.probe(), solver.lr_bound()
    sched = Recorder()
    sched.seen = []
    sched.reset(0.5)
    history = History()
    run_epochs(solver, sched, guard, history, start_loss=guard.initial_loss, stopping=StoppingRules(4), grow_batch=True)
    h = history.as_arrays()
    assert [o.epoch for o in sched.seen] == list(h["epoch"])
    for key in ("loss", "rel_error", "lr", "grad_sq", "noise_sq", "seconds"):
        np.testing.assert_array_equal([getattr(o, key) for o in sched.seen], h[key], err_msg=key)
    # the bound an observation reports is the one the next epoch runs under
    np.testing.assert_array_equal([o.lr_bound for o in sched.seen[:-1]], h["lr_bound"][1:])
    assert sched.seen[-1].lr_bound == guard.bound
    assert all(np.isfinite(o.grad_cos) for o in sched.seen)  # the probe was the first pass to compare with


@pytest.mark.parametrize("n_batches", [1, 3])
def test_one_minibatch_has_no_noise_and_the_deterministic_bound(n_batches):
    """A pass of one minibatch gives noise exactly 0 and the bound exactly 2 (not 2 less an
    ulp from the rounding of two equal sums); several minibatches give positive noise."""
    rng = np.random.default_rng(0)
    X = low_rank(90, 12, 3, noise=0.2)
    W, H = rng.random((90, 3)), rng.random((3, 12))
    solver = make_solver(X, W, H, batch_size=90 // n_batches, w_sweeps=1, seed=0)
    for _ in range(2):
        solver.probe() if n_batches == 1 else solver.sgd_epoch(0.5)
        grad_sq, noise_sq, _ = solver.gradient_statistics()
        assert (grad_sq > 0).all()
        if n_batches == 1:
            assert (noise_sq == 0).all() and solver.lr_bound() == 2.0
        else:
            assert (noise_sq > 0).all() and solver.lr_bound() < 2.0


def test_one_minibatch_noise_is_zero_whatever_the_rounding_of_its_sums():
    """The weighted and mean squared norms of a one-minibatch pass are the same sum in two
    orders; an ulp between them must not read as noise (it lowered the bound below 2)."""
    from nmfsched.gradient_statistics import GradientStatistics

    G = np.random.default_rng(0).normal(size=(12, 3))
    Ht = np.ones((12, 3))  # every entry free: grad_sq is the full column norm
    for n_batches, expected_noise in ((1, 0.0), (2, 1e-12)):
        stats = GradientStatistics(get_backend("cpu"), 10, G.shape, np.float64)
        stats.start_pass()
        for _ in range(n_batches):
            mean_gradient, weight, weighted_sq = stats.accumulator(10 // n_batches)
        mean_gradient[...] = G
        weighted_sq[...] = (G**2).sum(axis=0) * (1 + 1e-12)  # one rounding apart, and more
        grad_sq, noise_sq = stats.per_component(Ht)
        np.testing.assert_allclose(grad_sq, (G**2).sum(axis=0), rtol=1e-13)
        np.testing.assert_allclose(noise_sq, expected_noise * (G**2).sum(axis=0), rtol=1e-3)


@pytest.mark.parametrize("batch_size", [40, 200])  # minibatch epochs; one batch of every row
def test_the_final_solve_reuses_the_last_refresh_and_ends_where_a_fresh_one_does(monkeypatch, batch_size):
    """After an epoch, ``H`` has not moved since the ``W`` refresh computed ``X H^T``: the
    final solve takes those products (no pass over ``X``) and returns what a solve that
    computes them afresh returns, bit for bit. After a rejected epoch it computes them."""
    from nmfsched import StochasticNMF, objective, run

    X = low_rank(200, 30, 4, seed=2, noise=0.1)
    calls, finishes = [], []
    real_w_block, real_finish = objective.w_block, run.FitRun.finish
    monkeypatch.setattr(objective, "w_block", lambda *a: calls.append(1) or real_w_block(*a))

    def finish(self, X):
        reused = self.solver.refreshed_w_block()
        calls.clear()
        W, error = real_finish(self, X)
        n_products = len(calls)
        fresh = solve_w(self.solver.backend, self.solver.X, self.solver.H, W=self.solver.W,
                        max_sweeps=self.settings.transform_max_sweeps, tol=self.settings.transform_tol)
        finishes.append((reused is not None, n_products, W, fresh))
        return W, error

    monkeypatch.setattr(run.FitRun, "finish", finish)
    StochasticNMF(4, batch_size=batch_size, max_iter=5, tol=0, random_state=0).fit(X)
    reused, n_products, W, fresh = finishes[0]
    assert reused and n_products == 0
    np.testing.assert_array_equal(W, fresh)

    solver = StochasticSolver(X, *[np.asarray(a) for a in (np.full((200, 4), 0.5), np.full((4, 30), 0.5))],
                              backend=get_backend("cpu"), batch_size=batch_size, w_sweeps=2,
                              rng=np.random.default_rng(0))
    solver.refresh_w(2)
    assert solver.refreshed_w_block() is not None
    solver.restore(solver.snapshot())  # what a rejected epoch does
    assert solver.refreshed_w_block() is None
    solver.refresh_w(2)
    solver.mark_refreshed()  # a continued run: W taken as refreshed, X H^T not computed
    assert solver.refreshed_w_block() is None

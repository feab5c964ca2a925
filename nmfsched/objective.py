"""The objective's one home: ``f(W, H) = 1/2 ||X - W H||_F^2`` (plus penalties) and its block problems.

Fixing one factor leaves a non-negative least-squares problem in the other, a *block
problem* ``min_{Y >= 0} 1/2 <Y G, Y> - <Y, P>`` given by its Gram ``G`` (``k x k``) and
cross product ``P``:

- the ``W`` half on rows ``B``: ``G = H H^T`` and ``P = X_B H^T`` (:func:`w_block`);
- the ``H`` half (``H`` stored transposed, rows are features): ``G = W_B^T W_B`` and
  ``P = X_B^T W_B`` (:func:`h_block`), the minibatch gradient being ``H^T G - P``.

Every path that moves a factor (the in-memory and Dask epochs, the final and ``transform``
solves, the searched step, the diagnostics) forms its blocks here and sweeps them with the
per-component steps ``1 / G_jj`` of :func:`unit_steps`. The loss comes from the same Grams,
without forming ``W H`` (:func:`loss_from_grams`); the bound's statistics use the component
constants ``diag(W^T W)`` of :func:`h_lipschitz` and the clip of :func:`h_clip_limits`.

Penalties (:class:`Penalty`, scikit-learn's elastic net on the factors) keep every block
problem a block problem: an L2 weight ``l2`` adds to the Gram's diagonal (each component's
curvature), an L1 weight ``l1`` subtracts from the cross product (shifts the gradient inside
the projected step). The ``H`` half's minibatch takes the share ``|B| / n`` of ``H``'s
penalties, so the minibatch gradient stays an unbiased estimate of the full one.
"""

import math
from typing import Any, NamedTuple

import numpy as np
from scipy import linalg

from .theory import component_lipschitz, coordinate_steps, entry_clip_limits
from .theory.namespace import array_namespace


class Penalty(NamedTuple):
    """Elastic-net penalties on the factors: ``f + l1_W |W|_1 + l2_W/2 ||W||^2 + l1_H |H|_1 + l2_H/2 ||H||^2``.

    :meth:`from_params` scales scikit-learn's ``alpha_W``, ``alpha_H`` and ``l1_ratio`` by the
    data's shape as scikit-learn 1.x does (``W``'s by ``n_features``, ``H``'s by
    ``n_samples``), so the same parameters mean the same objective in both libraries.
    """

    l1_W: float = 0.0
    l2_W: float = 0.0
    l1_H: float = 0.0
    l2_H: float = 0.0

    @classmethod
    def from_params(cls, alpha_W, alpha_H, l1_ratio, n_samples, n_features):
        """The penalties of ``alpha_W``, ``alpha_H`` ("same": ``alpha_W``) and ``l1_ratio`` on an
        ``n_samples x n_features`` matrix."""
        alpha_H = alpha_W if alpha_H == "same" else alpha_H
        return cls(
            l1_W=float(n_features * alpha_W * l1_ratio), l2_W=float(n_features * alpha_W * (1.0 - l1_ratio)),
            l1_H=float(n_samples * alpha_H * l1_ratio), l2_H=float(n_samples * alpha_H * (1.0 - l1_ratio)),
        )

    @property
    def active(self):
        """Whether any weight is non-zero."""
        return any(self)

    def value(self, sum_W, sq_W, sum_H, sq_H):
        """The penalties' part of the objective, from ``sum(W)``, ``||W||^2``, ``sum(H)``, ``||H||^2``."""
        return self.l1_W * sum_W + 0.5 * self.l2_W * sq_W + self.l1_H * sum_H + 0.5 * self.l2_H * sq_H


NO_PENALTY = Penalty()


class BlockProblem(NamedTuple):
    """``min_{Y >= 0} 1/2 <Y G, Y> - <Y, P>``: one factor's problem with the other fixed."""

    G: Any  #: the ``k x k`` Gram of the fixed factor (rows of ``Y`` interact through it)
    P: Any  #: the cross product of the data with the fixed factor, shaped like ``Y``


def w_block(backend, X_rows, Ht, out):
    """The ``W`` rows' block problem for data rows ``X_rows``: ``(H H^T, X_rows H^T)``.

    ``Ht`` is ``H`` transposed (as the solvers store it); ``P`` is written into ``out``.
    """
    return BlockProblem(backend.gram(Ht), backend.xb_ht(X_rows, Ht, out))


def h_block(backend, X_rows, W_rows, out):
    """The ``H`` half's block problem of a minibatch: ``(W_B^T W_B, X_B^T W_B)``.

    ``P`` (``n_features x k``, written into ``out``) is ``H``-transposed shaped; the
    minibatch gradient of ``f_B`` with respect to ``H^T`` is ``H^T G - P``.
    """
    return BlockProblem(backend.gram(W_rows), backend.xbt_wb(X_rows, W_rows, out))


def penalized(block, l1=0.0, l2=0.0):
    """``block`` with an L1 weight ``l1`` and an L2 weight ``l2`` on its unknowns: ``(G + l2 I, P - l1)``.

    New arrays (the caller's ``G`` and ``P`` are kept for the loss); ``block`` itself when
    both weights are 0.
    """
    if not (l1 or l2):
        return block
    G, P = block
    return BlockProblem(add_to_diagonal(G, l2) if l2 else G, P - l1 if l1 else P)


def add_to_diagonal(G, value):
    """``G + value I`` (a new array, in ``G``'s namespace): an L2 weight on a block's unknowns."""
    xp = array_namespace(G)
    return G + value * xp.eye(G.shape[0], dtype=G.dtype)


def unit_steps(G, l1=0.0):
    """Per-component coordinate steps ``1 / G_jj`` of a block with Gram ``G`` (0 where ``G_jj`` is 0).

    With an L1 weight ``l1 > 0`` a component whose ``G_jj`` is exactly 0 (the other factor's
    component is exactly 0, so the data do not depend on this one) gets an infinite step: its
    gradient is then exactly ``l1 > 0``, and the projected step sets it to its minimiser, 0.
    Without it the component would keep its penalty forever.
    """
    curvature = component_lipschitz(G)
    steps = coordinate_steps(curvature)
    if l1:
        xp = array_namespace(steps)
        steps = xp.where(curvature == 0, xp.inf, steps)
    return steps


def sweep(backend, Y, block, max_sweeps, tol=0.0, l1=0.0, l2=0.0):
    """Projected coordinate sweeps on ``Y`` (in place) for ``block`` (penalised by ``l1``, ``l2``) at
    its exact steps :func:`unit_steps`."""
    G, P = penalized(block, l1, l2)
    backend.projected_cd(Y, G, P, unit_steps(G, l1), max_sweeps=max_sweeps, tol=tol)


def solve(backend, Y, block, max_sweeps, tol=0.0, l1=0.0, l2=0.0, cold=False):
    """``Y`` (in place) solved for ``block`` to ``tol``: exact non-negative least squares per row
    from the row's current support where the backend solves it (``backend.nnls_rows``), then
    coordinate sweeps to ``tol`` (at most ``max_sweeps``) for every row.

    A row solved exactly stops after one sweep; the others are swept as :func:`sweep` would.
    Coordinate descent alone needs tens of sweeps where components are correlated (the final
    and ``transform`` solves' tolerance); the exact solve costs about as much as a few.
    ``cold``: ``Y`` is zero and has no support to start from; it starts from the unconstrained
    solution clipped at 0 (:func:`_unconstrained_start`), or from every component.
    """
    G, P = penalized(block, l1, l2)
    start_free = cold and not _unconstrained_start(backend, Y, G, P)
    backend.nnls_rows(Y, G, P, zero_dead=bool(l1), start_free=start_free)
    backend.projected_cd(Y, G, P, unit_steps(G, l1), max_sweeps=max_sweeps, tol=tol)


def _unconstrained_start(backend, Y, G, P):
    """``Y = max(P G^-1, 0)`` over the components with ``G_jj > 0`` (the others 0): a cold exact
    solve's start, whose supports many rows share (half the pivoting of a start from every
    component, measured on a dense 200 000 x 300 r20 block). False, ``Y`` untouched, when
    that part of ``G`` is not positive definite."""
    G64 = np.asarray(backend.to_host(G), dtype=np.float64)
    live = np.flatnonzero(np.diag(G64) > 0)
    inverse = np.zeros_like(G64)
    try:
        factor = linalg.cho_factor(G64[np.ix_(live, live)])
    except (linalg.LinAlgError, ValueError):  # not positive definite, or not finite
        return False
    inverse[np.ix_(live, live)] = linalg.cho_solve(factor, np.eye(live.size))
    backend.small_matmul(P, inverse, out=Y)
    Y[Y < 0] = 0
    return True


def stochastic_h_steps(WtW, n_samples, batch_rows, l2_H=0.0, l1_H=0.0):
    """The ``H`` steps at rate 1 for a minibatch of ``batch_rows`` of ``n_samples`` rows.

    Component ``j`` moves by ``(n / |B|) / L_j`` times the minibatch gradient, ``L_j`` the
    full problem's constant ``(W^T W)_jj + l2_H``; the minibatch weight makes the step unbiased.
    """
    G = add_to_diagonal(WtW, l2_H) if l2_H else WtW
    return (n_samples / batch_rows) * unit_steps(G, l1_H)


def h_lipschitz(WtW, l2_H=0.0):
    """The ``H`` components' Lipschitz constants ``diag(W^T W) + l2_H``, from which the bound is computed."""
    return component_lipschitz(WtW) + l2_H if l2_H else component_lipschitz(WtW)


def minibatch_h_block(block, penalty, batch_rows, n_samples):
    """A minibatch's ``H`` block with its share ``|B| / n`` of ``H``'s penalties."""
    if not (penalty.l1_H or penalty.l2_H):
        return block
    share = batch_rows / n_samples
    return penalized(block, share * penalty.l1_H, share * penalty.l2_H)


def h_clip_limits(HHt, n_features, curvature_tolerance, WtW=None, l1_H=0.0):
    """Per-entry limits on one ``H`` update (see :func:`nmfsched.theory.entry_clip_limits`).

    With an L1 weight ``l1_H > 0`` a component whose column of ``W`` is exactly 0 (``WtW``'s
    diagonal) is not limited: it shapes no ``W`` curvature, and :func:`unit_steps` takes it
    to 0 in one step.
    """
    relative, absolute = entry_clip_limits(component_lipschitz(HHt), n_features, curvature_tolerance)
    if l1_H:
        xp = array_namespace(absolute)
        absolute = xp.where(component_lipschitz(WtW) == 0, xp.inf, absolute)
    return relative, absolute


def step_range(lr, lipschitz):
    """``(smallest, largest)`` absolute ``H`` step ``lr / L_j`` over the live components (0, 0 if none)."""
    steps = lr * coordinate_steps(lipschitz)
    live = steps[steps > 0]
    if not live.size:
        return 0.0, 0.0
    return float(live.min()), float(live.max())


def loss_from_grams(sq_norm_X, cross, WtW, HHt):
    """``1/2 ||X - W H||^2 = 1/2 (||X||^2 - 2 <W, X H^T> + <W^T W, H H^T>)``.

    ``cross`` is ``<W, X H^T>`` (equally ``<X^T W, H^T>``). Not clamped: the identity cancels
    large terms, so rounding can make a near-zero loss slightly negative.
    """
    return 0.5 * (sq_norm_X - 2.0 * cross + float((WtW * HHt).sum()))


#: With float32 factors the loss from Gram identities (its cross term from float32 products)
#: resolves losses down to about this many float32 epsilons of ``||X||^2``: below it, the
#: cancellation leaves rounding (a full-rank fit's loss of 1.3e-6 ||X||^2 came out as exactly 0
#: and stopped as "exact").
GRAM_LOSS_RESOLUTION = 100.0


def below_gram_resolution(loss, sq_norm_X, dtype):
    """Whether a loss from :func:`loss_from_grams` is too small next to ``||X||^2`` to be trusted with
    ``dtype`` factors (the caller then computes it from the residual in float64)."""
    return loss < GRAM_LOSS_RESOLUTION * float(np.finfo(dtype).eps) * sq_norm_X


def exact_to_precision(loss, sq_norm_X, dtype, k):
    """Whether a loss computed from the residual is within the rounding of ``k``-term products in
    ``dtype``: ``||X - W H|| <= 2 (k + 2) eps ||X||`` (an exact fit, as far as the factors can tell)."""
    return loss <= 0.5 * (2.0 * (k + 2) * float(np.finfo(dtype).eps)) ** 2 * sq_norm_X


def relative_error(loss, sq_norm_X):
    """``||X - W H|| / ||X||`` from the loss (0 for an all-zero ``X``; a loss that rounding left
    below 0 counts as 0)."""
    if sq_norm_X == 0:
        return 0.0
    return math.sqrt(max(2.0 * loss, 0.0) / sq_norm_X)

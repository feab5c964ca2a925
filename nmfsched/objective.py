"""The objective's one home: ``f(W, H) = 1/2 ||X - W H||_F^2`` and the block problems it splits into.

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
"""

import math
from typing import Any, NamedTuple

from .theory import component_lipschitz, coordinate_steps, entry_clip_limits


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


def unit_steps(G):
    """Per-component coordinate steps ``1 / G_jj`` of a block with Gram ``G`` (0 where ``G_jj`` is 0)."""
    return coordinate_steps(component_lipschitz(G))


def sweep(backend, Y, block, max_sweeps, tol=0.0):
    """Projected coordinate sweeps on ``Y`` (in place) for ``block`` at its exact steps :func:`unit_steps`."""
    backend.projected_cd(Y, block.G, block.P, unit_steps(block.G), max_sweeps=max_sweeps, tol=tol)


def stochastic_h_steps(WtW, n_samples, batch_rows):
    """The ``H`` steps at rate 1 for a minibatch of ``batch_rows`` of ``n_samples`` rows.

    Component ``j`` moves by ``(n / |B|) / L_j`` times the minibatch gradient, ``L_j`` the
    full problem's constant ``(W^T W)_jj``; the minibatch weight makes the step unbiased.
    """
    return (n_samples / batch_rows) * unit_steps(WtW)


def h_lipschitz(WtW):
    """The ``H`` components' Lipschitz constants ``diag(W^T W)``, from which the bound is computed."""
    return component_lipschitz(WtW)


def h_clip_limits(HHt, n_features, curvature_tolerance):
    """Per-entry limits on one ``H`` update (see :func:`nmfsched.theory.entry_clip_limits`)."""
    return entry_clip_limits(component_lipschitz(HHt), n_features, curvature_tolerance)


def loss_from_grams(sq_norm_X, cross, WtW, HHt):
    """``1/2 ||X - W H||^2 = 1/2 (||X||^2 - 2 <W, X H^T> + <W^T W, H H^T>)``.

    ``cross`` is ``<W, X H^T>`` (equally ``<X^T W, H^T>``). Not clamped: the identity cancels
    large terms, so rounding can make a near-zero loss slightly negative.
    """
    return 0.5 * (sq_norm_X - 2.0 * cross + float((WtW * HHt).sum()))


def relative_error(loss, sq_norm_X):
    """``||X - W H|| / ||X||`` from the loss (0 for an all-zero ``X``)."""
    if sq_norm_X == 0:
        return 0.0
    return math.sqrt(2.0 * loss / sq_norm_X)

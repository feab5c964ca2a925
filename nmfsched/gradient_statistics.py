"""What the learning-rate bound needs to know of the minibatch gradients of ``H``, per pass."""

import math

import numpy as np

from .theory import minibatch_gradient_noise


class GradientStatistics:
    """Per-pass sums of the minibatch gradients of ``H``, kept on the backend.

    The ``H`` kernel adds each minibatch's gradient into them as it steps (no extra pass
    over the data; see :meth:`accumulator`). With ``p_B = |B|/n`` and the unbiased minibatch
    gradient ``g_B = (n/|B|) (W_B^T W_B H - W_B^T X_B)``, a pass leaves

    - :attr:`mean_gradient`: ``sum_B p_B g_B``, the epoch-mean gradient (``m x k``, stored
      transposed as the solver stores ``H``), and
    - per component ``j``, ``sum_B p_B ||g_B,j||^2``,

    from which :meth:`per_component` gives the gradient and noise terms of
    :func:`nmfsched.theory.lr_upper_bound`. The previous pass's mean gradient is kept
    (by swapping two buffers, no copy) for :meth:`cosine`.

    Parameters
    ----------
    backend : backend object
    n_samples : int
        Rows of ``X`` (``n``).
    shape : tuple of int
        ``(n_features, n_components)``, the shape of ``H`` transposed.
    dtype : numpy dtype
    """

    def __init__(self, backend, n_samples, shape, dtype):
        self.backend = backend
        self.n_samples = n_samples
        self.mean_gradient = backend.empty(shape, dtype)
        self._previous_mean = backend.empty(shape, dtype)
        self._weighted_sq = backend.zeros(shape[1], np.float64)
        self.passes = 0
        self._minibatches = 0  # accumulators handed out this pass

    def start_pass(self):
        """Zero the sums for a new pass, keeping the last pass's mean gradient."""
        if self.passes:
            self.mean_gradient, self._previous_mean = self._previous_mean, self.mean_gradient
        self.passes += 1
        self.mean_gradient[...] = 0
        self._weighted_sq[...] = 0.0
        self._minibatches = 0

    def accumulator(self, n_rows):
        """The ``statistics`` argument of the backend's ``projected_cd`` for a minibatch of
        ``n_rows`` rows: ``(mean_gradient, n / n_rows, weighted squares)``."""
        self._minibatches += 1
        return self.mean_gradient, self.n_samples / n_rows, self._weighted_sq

    def per_component(self, Ht):
        """``(grad_sq, noise_sq)`` per component for the iterate ``H`` (given transposed).

        ``grad_sq`` is the squared norm of the projected epoch-mean gradient (the gradient
        mapping: entries at 0 whose gradient pushes them below 0 do not count);
        ``noise_sq`` the minibatch variance around the mean: exactly 0 after a pass of one
        minibatch (its two sums would differ only by rounding, which would move the
        deterministic bound of 2 by an ulp either way). Both are host (NumPy) vectors,
        brought over from the backend in one copy of ``3 k`` numbers.
        """
        be = self.backend
        sums = be.xp.stack(
            [
                be.projected_column_sq_norms(self.mean_gradient, Ht),
                self._weighted_sq,
                be.column_sq_norms(self.mean_gradient),
            ]
        )
        grad_sq, weighted_sq, mean_sq = be.to_host(sums)
        if self._minibatches == 1:
            return grad_sq, np.zeros_like(grad_sq)
        return grad_sq, minibatch_gradient_noise(weighted_sq, mean_sq)

    def cosine(self):
        """Cosine between the mean gradients of the last two passes (NaN before two, or at 0)."""
        if self.passes < 2:
            return math.nan
        be = self.backend
        norms = math.sqrt(be.squared_norm(self.mean_gradient) * be.squared_norm(self._previous_mean))
        return be.inner(self.mean_gradient, self._previous_mean) / norms if norms > 0 else math.nan

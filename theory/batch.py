"""How the minibatch gradient noise scales with the batch size, and the batch that tames it.

Rows are drawn without replacement, so the variance of the unbiased minibatch gradient
``g_B = (n/b) sum_{i in B} x_i`` is ``n^2 s^2 (n - b) / (n b)`` for a per-row variance
``s^2``: it falls as ``(n - b) / b`` and is exactly 0 for one batch of all rows.
"""

import math

import numpy as np


def _noise_factor(batch_size, n_samples):
    return (n_samples - batch_size) / batch_size


def noise_at_batch_size(noise_sq, batch_size, new_batch_size, n_samples):
    """The minibatch gradient variance ``noise_sq`` (measured at ``batch_size``) predicted
    at ``new_batch_size``; both sizes in ``[1, n_samples]``."""
    if not 1 <= batch_size <= n_samples or not 1 <= new_batch_size <= n_samples:
        raise ValueError(
            f"batch sizes must be in [1, n_samples={n_samples}], got {batch_size} and {new_batch_size}"
        )
    noise = np.asarray(noise_sq, dtype=np.float64)
    if batch_size == n_samples:
        return np.zeros_like(noise)
    return noise * (_noise_factor(new_batch_size, n_samples) / _noise_factor(batch_size, n_samples))


def batch_size_for_noise(grad_sq_norms, noise_sq, lipschitz, batch_size, n_samples, noise_ratio=1.0):
    """The smallest batch size at which the gradient noise is predicted not to exceed
    ``noise_ratio`` times the gradient's own size, ``S_sigma(b) <= noise_ratio S_g`` in the
    units of :func:`~nmfsched.theory.lr_upper_bound` (at 1, the bound there is at least 1;
    at ``r``, at least ``2 / (1 + r)``).

    This is the norm test of dynamic sample-size methods (Byrd, Chin, Nocedal & Wu, 2012)
    with ``theta^2 = noise_ratio``: past that point a larger batch buys more descent per row
    than a smaller rate does. ``S_sigma(b) = A (n - b) / b`` with ``A`` fitted to the noise
    measured at ``batch_size``, so the answer is ``ceil(A n / (r S_g + A))``, in
    ``[1, n_samples]``.
    """
    if not 1 <= batch_size <= n_samples:
        raise ValueError(f"batch_size must be in [1, n_samples={n_samples}], got {batch_size}")
    L = np.asarray(lipschitz, dtype=np.float64)
    live = L > 0
    if batch_size == n_samples or not live.any():
        return int(batch_size)
    s_g = float(np.sum(np.asarray(grad_sq_norms, dtype=np.float64)[live] / L[live]))
    s_sigma = float(np.sum(np.asarray(noise_sq, dtype=np.float64)[live] / L[live]))
    if not (math.isfinite(s_g) and math.isfinite(s_sigma)):
        return int(batch_size)
    a = s_sigma / _noise_factor(batch_size, n_samples)
    if a <= 0.0:
        return 1
    return int(min(n_samples, max(1, math.ceil(a * n_samples / (noise_ratio * s_g + a)))))


def one_batch_pays(grad_sq_norms, noise_sq, lipschitz, batch_size, n_samples, gain=1.0):
    """Whether an epoch of one batch of all rows is predicted to lower the loss more than an
    epoch of minibatches of ``batch_size`` rows.

    At the rate that maximises a step's expected decrease under noise (half the bound of
    :func:`~nmfsched.theory.lr_upper_bound`), a step decreases the loss by about
    ``S_g^2 / (2 (S_g + S_sigma(b)))``; an epoch takes ``n / b`` of them, with
    ``S_sigma(b) = A (n - b) / b`` as in :func:`batch_size_for_noise`. The epoch's decrease is
    then ``n S_g^2 / (2 (b S_g + A (n - b)))``, against ``gain`` times ``S_g / 2`` for one
    batch (``gain``: what a one-batch epoch takes beyond one such step). One batch pays once
    ``gain (b S_g + A (n - b)) >= n S_g``.
    """
    if not 1 <= batch_size <= n_samples:
        raise ValueError(f"batch_size must be in [1, n_samples={n_samples}], got {batch_size}")
    L = np.asarray(lipschitz, dtype=np.float64)
    live = L > 0
    if batch_size == n_samples or not live.any():
        return True
    s_g = float(np.sum(np.asarray(grad_sq_norms, dtype=np.float64)[live] / L[live]))
    s_sigma = float(np.sum(np.asarray(noise_sq, dtype=np.float64)[live] / L[live]))
    if not (math.isfinite(s_g) and math.isfinite(s_sigma)):
        return False
    a = s_sigma / _noise_factor(batch_size, n_samples)
    return gain * (batch_size * s_g + a * (n_samples - batch_size)) >= n_samples * s_g

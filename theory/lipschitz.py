"""Lipschitz constants of the gradient of ``f(W, H) = 1/2 ||X - W H||_F^2``.

For fixed ``W`` the gradient in ``H`` is ``W.T W H - W.T X``, which is Lipschitz in ``H`` with
constant ``||W.T W||_2`` (the block constant ``L_H``). Restricted to row ``j`` of ``H``
(component ``j``) the constant is ``(W.T W)_jj = ||W[:, j]||^2``. The same holds for ``W``
with the Gram ``H H.T``. The solver's steps are ``lr / L`` with these constants, so a
learning rate of 1 is the exact minimiser along a component (the HALS step).
"""

import numpy as np

from .namespace import array_namespace


def block_lipschitz(gram):
    """Lipschitz constant of the block gradient: the spectral norm of the Gram matrix.

    Parameters
    ----------
    gram : ndarray of shape (k, k)
        ``W.T @ W`` (for the ``H`` block) or ``H @ H.T`` (for the ``W`` block).

    Returns
    -------
    float
        ``||gram||_2``, the largest eigenvalue of the symmetric PSD ``gram``.
    """
    gram = np.asarray(gram, dtype=np.float64)
    if gram.size == 0:
        return 0.0
    return float(np.linalg.eigvalsh(gram)[-1])


def component_lipschitz(gram):
    """Lipschitz constants of the gradient restricted to each component (the diagonal).

    Parameters
    ----------
    gram : ndarray of shape (k, k)
        A NumPy or CuPy array (the result lives where the Gram does).

    Returns
    -------
    ndarray of shape (k,)
        ``diag(gram)`` in float64; component ``j``'s constant. Never larger than
        :func:`block_lipschitz` and never smaller than ``block_lipschitz / k``.
    """
    xp = array_namespace(gram)
    return xp.diag(xp.asarray(gram, dtype=xp.float64)).copy()


def minibatch_lipschitz(batch_gram, n_samples, batch_size):
    """Lipschitz constant of the unbiased minibatch gradient in ``H``.

    The estimate ``(n/b) (W_B^T W_B H - W_B^T X_B)`` is Lipschitz in ``H`` with constant
    ``(n/b) ||W_B^T W_B||_2``; its expectation over batches is ``||W^T W||_2``'s matrix.
    """
    return (n_samples / batch_size) * block_lipschitz(batch_gram)


_TINY = np.finfo(np.float64).tiny


def coordinate_steps(lipschitz):
    """The coordinate steps ``1 / L_j``, with 0 for a component whose constant is not
    meaningfully positive (that component is frozen: its column of the factor is 0).

    Parameters
    ----------
    lipschitz : array-like of shape (k,)
        Component constants, as from :func:`component_lipschitz` (NumPy or CuPy).

    Returns
    -------
    ndarray of shape (k,)
        ``1 / L_j`` where ``L_j > max(L) * 1e-12`` (and above the smallest normal
        double), else 0. Computed without a device-to-host copy.
    """
    xp = array_namespace(lipschitz)
    values = xp.asarray(lipschitz, dtype=xp.float64)
    if values.size == 0:
        return values.copy()
    floor = xp.maximum(values.max() * 1e-12, _TINY)
    live = values > floor
    return xp.where(live, 1.0 / xp.where(live, values, 1.0), 0.0)

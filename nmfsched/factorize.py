"""The plain-function face of the estimator."""

from .estimator import StochasticNMF


def factorize(X, n_components="auto", *, W=None, H=None, **params):
    """Factorize ``X ~ W H`` with ``W, H >= 0``; a thin wrapper over :class:`StochasticNMF`.

    Parameters
    ----------
    X : {array-like, sparse matrix} of shape (n_samples, n_features)
    n_components : int or "auto", default="auto"
    W, H : array-like, default=None
        Initial factors (with ``init="custom"``).
    **params
        Any other :class:`StochasticNMF` parameter.

    Returns
    -------
    W : ndarray of shape (n_samples, n_components)
    H : ndarray of shape (n_components, n_features)
    history : dict of ndarray
        The per-epoch record (see ``StochasticNMF.history_``).
    """
    model = StochasticNMF(n_components, **params)
    W = model.fit_transform(X, W=W, H=H)
    return W, model.components_, model.history_

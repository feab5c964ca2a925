"""A minibatch's ``H`` step at the rate a per-minibatch search accepts, from exact trial steps."""

import math

import numpy as np


class SearchedHStep:
    """Trial ``H`` steps for a :class:`~nmfsched.schedulers.MinibatchSearch`, with their exact effect.

    The minibatch loss ``f_B(H) = 1/2 ||X_B - W_B H||^2`` is quadratic in ``H``, so a trial
    step ``D = H_t - H`` changes it by exactly ``<g_B, D> + 1/2 <D W_B^T W_B, D>``, with
    ``g_B = H W_B^T W_B - C`` (``H`` transposed, as the solver stores it; ``C = X_B^T W_B``):
    no pass over ``X_B`` per trial. Four ``H``-sized buffers are kept between minibatches.

    Parameters
    ----------
    backend : backend object
    shape : tuple of int
        The shape of ``H`` transposed.
    dtype : numpy dtype
    """

    def __init__(self, backend, shape, dtype):
        self.backend = backend
        self._trial_H, self._step, self._grad, self._curvature = [backend.empty(shape, dtype) for _ in range(4)]

    def __call__(self, Ht, search, cap, n_batches, WbtWb, Ct, unit_steps, clips, statistics, sweeps):
        """Take the step ``search`` accepts from ``Ht``.

        ``search.search_step(trial, cap, n_batches)`` picks the rate, where ``trial(t)``
        takes the step at rate ``t`` (``sweeps`` projected sweeps with steps
        ``t * unit_steps``, clipped to ``clips``) on a copy and returns ``(change, slope)``:
        the exact change of ``f_B`` and ``<grad_H f_B, H_t - H>``. The first trial (or a
        zero step when none is tried) adds the minibatch's gradient to ``statistics``.

        Returns
        -------
        Ht : backend array
            The new ``H`` (transposed): ``Ht`` itself when the rate is 0, else a buffer of
            this object's, swapped for ``Ht`` (no copy).
        rate : float
            In ``[0, cap]``.
        n_clipped, n_trials : int
        """
        be = self.backend
        be.small_matmul(Ht, WbtWb, self._grad)
        self._grad -= Ct
        last = {"lr": None, "clipped": 0, "trials": 0}

        def trial(t):
            t = float(t)
            self._trial_H[...] = Ht
            # the statistics are of the gradient at the start, the same for every trial
            stats = statistics if last["trials"] == 0 else None
            last["clipped"] = be.projected_cd(
                self._trial_H, WbtWb, Ct, t * unit_steps, clips=clips, statistics=stats, max_sweeps=sweeps
            )
            last["lr"] = t
            last["trials"] += 1
            self._step[...] = self._trial_H
            self._step[...] -= Ht
            slope = be.inner(self._grad, self._step)
            return slope + 0.5 * be.inner(be.small_matmul(self._step, WbtWb, self._curvature), self._step), slope

        rate = float(search.search_step(trial, cap=cap, n_batches=n_batches))
        if not (math.isfinite(rate) and 0.0 <= rate <= cap):
            raise ValueError(f"{type(search).__name__} accepted the rate {rate!r}, outside [0, {cap!r}].")
        if last["trials"] == 0:  # nothing tried: still gather this batch's gradient statistics
            be.projected_cd(Ht, WbtWb, Ct, be.zeros(Ht.shape[1], np.float64), statistics=statistics)
        if rate == 0.0:
            return Ht, 0.0, 0, last["trials"]
        if rate != last["lr"]:
            trial(rate)
        accepted, self._trial_H = self._trial_H, Ht
        return accepted, rate, last["clipped"], last["trials"]

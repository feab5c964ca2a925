"""Extrapolation with restarts for the deterministic (one-batch) epochs, after Ang and Gillis.

Once one batch holds every row an epoch is an alternating HALS iteration, whose tail creeps
(A. M. S. Ang and N. Gillis, "Accelerating nonnegative matrix factorization algorithms
using extrapolation", Neural Computation 31(2), 2019). Between the ``H`` step and the ``W``
refresh of such an epoch, :meth:`Extrapolation.extrapolate` moves ``H`` on along its last
displacement::

    H_hat = max(0, H_new + beta (H_new - H_prev))

where ``H_prev`` is the previous epoch's ``H`` after its own step (before its
extrapolation). The refresh then sweeps ``W`` against ``H_hat``, so the epoch ends at a
feasible iterate whose loss is computed exactly, as always. ``beta`` grows by ``growth``
after every epoch that lowered the loss, up to a ceiling. When the extrapolated epoch ended
above the previous loss, :meth:`Extrapolation.settle` restarts (the paper's rule): the
epoch falls back to the plain step (``W`` and the stepped ``H`` are restored and ``W`` is
refreshed again, one more pass over ``X``), ``beta`` is divided by ``shrink`` and its
ceiling lowered to the ``beta`` that failed. So a one-batch epoch never ends above the
previous epoch's loss: an extrapolated one is kept only below it, and the plain one at a
rate below 2 never rises (Proposition 3 of theory/README.md keeps holding). A rejected epoch (undone by the guard) or a minibatch epoch
forgets the displacement.
"""

import math

from .theory.namespace import array_namespace


class Extrapolation:
    """The extrapolation state of one fit (see the module docstring).

    Parameters
    ----------
    beta : float, default=0.2
        The starting weight of the displacement: the paper's 0.5 cost epochs on the peers'
        suite where 0.2 saved them (docs/user-guide/how-it-works.md has the measurements).
    growth : float, default=1.05
        Factor on ``beta`` (and on its ceiling) after an epoch that lowered the loss.
    shrink : float, default=2.0
        Divisor of ``beta`` after an epoch that raised it.
    """

    def __init__(self, beta=0.2, growth=1.05, shrink=2.0):
        self.beta = float(beta)
        self.beta_max = 1.0
        self.growth = float(growth)
        self.shrink = float(shrink)
        self.prev_loss = math.inf
        self._h_prev = None  # the last one-batch epoch's H after its step (a backend array)
        self._extrapolated = False
        self._plain = None  # the solver's snapshot of the plain epoch (before extrapolating)

    def extrapolate(self, solver):
        """Move ``solver.Ht`` on along its last displacement, in a one-batch epoch after its
        ``H`` step (before the ``W`` refresh); a minibatch epoch only forgets the last ``H``."""
        self._extrapolated, self._plain = False, None
        if not solver.full_batch:
            self._h_prev = None
            return
        Ht = solver.Ht
        stepped = Ht.copy()
        if self._h_prev is not None and self._h_prev.shape == stepped.shape:
            self._plain = solver.snapshot()
            Ht -= self._h_prev  # in place, in four passes: H_hat = max(0, H + beta (H - H_prev))
            Ht *= self.beta
            Ht += stepped
            array_namespace(Ht).maximum(Ht, 0, out=Ht)  # keeps NaN: a diverged H stays visible
            self._extrapolated = True
        self._h_prev = stepped

    def settle(self, solver, loss):
        """After the ``W`` refresh: the epoch's loss, from the plain epoch instead (a restart)
        when the extrapolated one ended above the previous loss."""
        plain, self._plain = self._plain, None
        if not self._extrapolated or not loss > self.prev_loss:
            return loss
        self._extrapolated = False
        self.beta_max = self.beta
        self.beta /= self.shrink
        solver.restore(plain)
        return solver.refresh_w(solver.refresh_sweeps)

    def observe(self, loss, rejected):
        """Adapt ``beta`` to the epoch's outcome (``loss``: at the iterate it ended at)."""
        if rejected:
            self._h_prev = None
            self.beta /= self.shrink
            return
        if self._extrapolated:  # and not restarted: it lowered the loss
            self.beta = min(self.beta_max, self.growth * self.beta)
            self.beta_max = min(1.0, self.growth * self.beta_max)
        self.prev_loss = loss

    def state_dict(self, backend):
        """``(scalars, H_prev on the host or None)``: what a checkpoint keeps for an exact
        continuation (``backend`` holds ``H_prev``)."""
        scalars = {"beta": self.beta, "beta_max": self.beta_max, "prev_loss": self.prev_loss}
        return scalars, None if self._h_prev is None else backend.to_host(self._h_prev)

    def load_state_dict(self, scalars, h_prev, backend):
        self.beta, self.beta_max = float(scalars["beta"]), float(scalars["beta_max"])
        self.prev_loss = float(scalars["prev_loss"])
        self._h_prev = None if h_prev is None else backend.asarray(h_prev)

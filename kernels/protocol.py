"""The backend protocol: the few array primitives the solver loop calls, and where data lives.

The loop (:mod:`nmfsched.solver`) is written once against :class:`Backend`. A backend owns a
*device*: the memory its arrays live in (host memory for the CPU backend, GPU memory for the
CuPy one). What lives where:

- **On the device, for the whole fit**: ``X`` (dense, or CSR), ``W``, ``H`` (stored transposed,
  ``n_features x k``), the per-minibatch buffers, the gradient sums of
  :class:`~nmfsched.gradient_statistics.GradientStatistics`, and the small per-minibatch
  algebra: the ``k x k`` Grams (float64), the per-component steps and clipping limits
  (float64 ``k``-vectors, computed by :mod:`nmfsched.theory` where the Gram lives), and the
  clipped-step counts.
- **Host to device**: the minibatch order, once per epoch (drawn by the fit's NumPy
  generator, so every backend visits the rows in the same order), and the learning rate.
- **Device to host**: per epoch, a handful of scalars (the loss terms, a finiteness flag, the
  clipped-step count) and the bound's per-component statistics (three ``k``-vectors and
  the diagonal of ``W^T W``), never an array the size of the data. Nothing is copied back
  per minibatch, except by a per-minibatch step search (whose trials are decided on the host).

Every method that returns a Python ``float``/``bool``/``int`` synchronises; the solver calls
them once per epoch. Methods returning arrays return device arrays.
"""

from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

#: Every backend's coordinate sweep forms a row's gradient ``Y[r] @ G - P[r]`` at its first
#: sweep and then keeps it current with one rank-one update per moved component (fast HALS),
#: which halves a sweep's work. It forms it afresh every this many sweeps, so a long solve
#: (``transform``: up to hundreds of sweeps) carries no more than this many sweeps' rounding.
GRADIENT_REFRESH_SWEEPS = 16
#: An exact row solve (``nnls_rows``) counts a bound component's gradient as negative, the row
#: not optimal, only below this fraction of the magnitudes that formed it: float64 rounding
#: is not a KKT violation.
KKT_RTOL = 1e-9


@runtime_checkable
class Backend(Protocol):
    """What a compute backend provides (see the module docstring for where data lives)."""

    #: Registry name ("cpu", "gpu").
    name: str
    #: The array namespace of the device arrays (``numpy`` or ``cupy``).
    xp: Any
    #: The fixed cost of one minibatch (dispatch, launches) in flops at the device's rate;
    #: ``batch_size="auto"`` weighs it against the batch's work.
    batch_overhead_flops: float

    # -- data movement --------------------------------------------------------------------
    def to_device(self, a) -> Any:
        """``X`` on the device: a C-contiguous dense array or a CSR matrix (index dtypes matched)."""

    def to_host(self, a) -> Any:
        """A NumPy copy (or the array itself when it already is one)."""

    def compute_context(self) -> AbstractContextManager:
        """Entered around a fit (thread limits, the device to run on)."""

    def empty(self, shape, dtype) -> Any:
        """An uninitialised device array."""

    def zeros(self, shape, dtype) -> Any:
        """A zeroed device array."""

    def asarray(self, a, dtype=None) -> Any:
        """A C-contiguous device array from host or device data."""

    # -- minibatches ------------------------------------------------------------------------
    def take_rows(self, X, rows, buffer=None) -> Any:
        """The minibatch ``X[rows]`` (dense: gathered into ``buffer``; CSR: the backend's
        row selection), for ``rows`` a device integer array."""

    def all_rows(self, X) -> Any:
        """The whole of ``X`` as a minibatch."""

    # -- products ---------------------------------------------------------------------------
    def xb_ht(self, Xb, Ht, out) -> Any:
        """``out = X_B @ H.T`` (``|B| x k``), ``Ht`` being ``H.T``."""

    def xbt_wb(self, Xb, Wb, out) -> Any:
        """``out = X_B.T @ W_B`` (``n_features x k``), without transposing a CSR ``X_B``."""

    def gram(self, A) -> Any:
        """``A.T @ A`` as a float64 device array (``k x k``)."""

    def small_matmul(self, A, G, out) -> Any:
        """``out = A @ G`` for a device array ``A`` and a ``k x k`` ``G``."""

    # -- reductions (each returns a host scalar: a synchronisation) --------------------------
    def inner(self, A, B) -> float:
        """``sum(A * B)`` accumulated in float64."""

    def squared_norm(self, X) -> float:
        """``||X||_F^2`` in float64 (dense or CSR)."""

    def all_finite(self, A) -> bool:
        """Whether every entry of ``A`` is finite."""

    def column_sq_norms(self, A, mask=None) -> Any:
        """``sum(A**2, axis=0)`` as a float64 device vector, optionally over ``mask`` only."""

    def projected_column_sq_norms(self, G, Y) -> Any:
        """Per column, ``||G||^2`` over the entries a projected step can move (``Y > 0`` or
        ``G < 0``), as a float64 device vector."""

    # -- the fused update -------------------------------------------------------------------
    def projected_cd(self, Y, G, P, steps, *, max_sweeps=1, tol=0.0, clips=None, statistics=None) -> Any:
        """Projected, clipped coordinate sweeps on the rows of ``Y`` in place (the algorithm
        of :func:`nmfsched.kernels.cpu.projected_cd`); returns the clipped-step count (a
        Python int or a device integer scalar: ``int()`` of it synchronises)."""

    def nnls_rows(self, Y, G, P, *, zero_dead=False, start_free=False) -> int:
        """Solve each row's block problem ``min_{y >= 0} 1/2 y G y - y . P[r]`` exactly where the
        backend can, in place, starting from the row's current support (``start_free``: from
        every component, for a cold start); rows it does not solve are left as they were.
        ``zero_dead``: components with ``G_jj = 0`` are set to 0 (else kept). Returns the number
        of rows left (see :func:`nmfsched.kernels.cpu.nnls_rows`)."""

    # -- sweeps over observed entries (missing entries; see nmfsched.observed) ------------------
    def observed_residual(self, X, entry_rows, W, Ht, out) -> Any:
        """``out = W H - X`` at the stored entries of the CSR ``X`` (``entry_rows``: each entry's row)."""

    def observed_w_cd(self, R, entry_rows, W, Ht, steps, *, max_sweeps=1, tol=0.0, l1=0.0, l2=0.0) -> None:
        """Projected coordinate sweeps on the rows of ``W`` in place over their observed entries,
        the residual CSR ``R`` kept exact (the algorithm of
        :func:`nmfsched.kernels.namespace.observed_w_cd`)."""

    def observed_h_cd(self, R, entry_rows, W, Ht, steps, *, max_sweeps=1, l1=0.0, l2=0.0, clips=None) -> Any:
        """Projected, clipped sweeps on ``H`` (transposed) in place from a minibatch's observed
        entries (:func:`nmfsched.kernels.namespace.observed_h_cd`); returns the clipped-step count."""

"""Step-size theory for projected (stochastic) gradient NMF under the Frobenius loss.

Plain NumPy on small ``k x k`` matrices, ``k``-vectors and scalars; nothing here touches
the data. Statements, assumptions and proofs are in theory/README.md.
"""

from .batch import batch_size_for_noise, noise_at_batch_size, one_batch_pays
from .bounds import (
    MAX_LR_BOUND,
    curvature_after_update,
    entry_clip_limits,
    expected_sweep_change,
    lr_upper_bound,
    minibatch_gradient_noise,
    update_norm_limits,
)
from .lipschitz import block_lipschitz, component_lipschitz, coordinate_steps, minibatch_lipschitz

__all__ = [
    "MAX_LR_BOUND",
    "block_lipschitz",
    "component_lipschitz",
    "coordinate_steps",
    "minibatch_lipschitz",
    "minibatch_gradient_noise",
    "noise_at_batch_size",
    "batch_size_for_noise",
    "one_batch_pays",
    "lr_upper_bound",
    "expected_sweep_change",
    "update_norm_limits",
    "entry_clip_limits",
    "curvature_after_update",
]

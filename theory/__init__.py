"""Step-size theory for projected (stochastic) gradient NMF under the Frobenius loss.

Plain NumPy on small ``k x k`` matrices and scalars; nothing here touches the data.
"""

from .lipschitz import block_lipschitz, component_lipschitz

__all__ = ["block_lipschitz", "component_lipschitz"]

"""nmfsched: stochastic NMF with scheduled, provably safe learning rates."""

from importlib.metadata import PackageNotFoundError, version

from .estimator import StochasticNMF
from .factorize import factorize

try:
    __version__ = version("nmfsched")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["StochasticNMF", "factorize", "__version__"]

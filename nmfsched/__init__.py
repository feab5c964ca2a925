"""nmfsched: stochastic NMF with scheduled, provably safe learning rates."""

from importlib.metadata import PackageNotFoundError, version

from .estimator import StochasticNMF
from .factorize import factorize
from .rank_selection import RankSelection, held_out_scorer, select_rank

try:
    __version__ = version("nmfsched")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["StochasticNMF", "factorize", "select_rank", "held_out_scorer", "RankSelection", "__version__"]

"""blindfast: fast compiled kernels and methods for blind inverse problems in imaging."""

from blindfast import data, metrics, ops, physics
from blindfast._version import __version__

__all__ = ["data", "metrics", "ops", "physics", "__version__"]

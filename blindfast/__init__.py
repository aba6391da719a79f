"""blindfast: fast compiled kernels and methods for blind inverse problems in imaging."""

from blindfast import ops
from blindfast._version import __version__

__all__ = ["ops", "__version__"]

"""avbench: one contract, one clip index, the same protocols and metrics for every detector."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("avbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

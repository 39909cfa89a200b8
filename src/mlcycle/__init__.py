"""mlcycle: files -> validated warehouse -> tracked training -> served model."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mlcycle")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]

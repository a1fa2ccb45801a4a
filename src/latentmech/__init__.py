"""latentmech: latent representations of materials fields and property prediction."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("latentmech")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

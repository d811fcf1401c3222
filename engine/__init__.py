"""segengine: streaming customer segmentation (Kafka -> Redis state -> tier rules -> segment changes)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("segengine")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

# The compiled core when there is a usable build of these sources (segengine.native): before
# any of the package's modules is imported, so that they are found first.
from .native import extend as _extend
from .native import select as _select

NATIVE = _select()
_extend(__path__, __name__, NATIVE)

"""segengine: streaming customer segmentation (Kafka -> Redis state -> tier rules -> segment changes)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("segengine")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

"""The exceptions stac2cube raises.

Every message names the parameter, catalog, item or asset at fault, so the CLI can print it as
the one line a user reads.
"""

from __future__ import annotations


class Stac2CubeError(Exception):
    """Base class of every error stac2cube raises on purpose."""


class InvalidRequestError(Stac2CubeError, ValueError):
    """A request parameter is invalid (bbox, dates, mission, bands, resolution, CRS, ...)."""


class CatalogError(Stac2CubeError):
    """The STAC catalog could not be reached or answered with an error."""


class EmptySearchError(Stac2CubeError):
    """The search matched no scenes."""


class GridMismatchError(Stac2CubeError):
    """A request does not match the grid, bands or mission of an existing cube."""


class ReadError(Stac2CubeError):
    """An asset could not be read (missing, corrupt, unreachable)."""


class AssetReadError(ReadError):
    """A read failure traced to one asset: ``item`` id, ``asset`` key and the reader's
    ``reason`` (see ``errors_as_nodata``)."""

    def __init__(self, message: str, item: str, asset: str, reason: str = "") -> None:
        super().__init__(message)
        self.item, self.asset, self.reason = item, asset, reason

    def __reduce__(self):
        return type(self), (str(self), self.item, self.asset, self.reason)


class StoreError(Stac2CubeError):
    """The cube store is missing, not a stac2cube cube, or busy."""


class BuildError(Stac2CubeError):
    """A build failed after validation (a write, or the files beside a committed cube)."""

"""A logger that goes to Prefect's run logger inside a flow or task, to ``logging`` elsewhere."""

from __future__ import annotations

import logging


def get_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger when called inside a run, else the ``stac2cube`` logger."""
    try:
        from prefect import get_run_logger
        from prefect.exceptions import MissingContextError

        try:
            return get_run_logger()
        except MissingContextError:
            pass
    except ImportError:  # pragma: no cover - prefect is a dependency
        pass
    return logging.getLogger("stac2cube")

"""A logger that goes to Prefect's run logger inside a flow or task, to ``logging`` elsewhere."""

from __future__ import annotations

import logging
import sys


def get_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger when called inside a run, else the ``stac2cube`` logger.

    Outside Prefect (Prefect not imported, so no run can be active) Prefect is left unimported.
    """
    if "prefect" in sys.modules:
        from prefect import get_run_logger
        from prefect.exceptions import MissingContextError

        try:
            return get_run_logger()
        except MissingContextError:
            pass
    return logging.getLogger("stac2cube")

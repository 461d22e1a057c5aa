"""``python -m monitoring``: run the monitor once, or on a schedule with ``--every``."""

import typer

from fraudops.cli.common import configure_logging
from fraudops.cli.monitor import monitor

if __name__ == "__main__":
    configure_logging(verbose=False)
    typer.run(monitor)

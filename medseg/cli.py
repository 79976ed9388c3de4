"""Common entry point of the stage scripts: logging, one-line errors, non-zero exit."""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from medseg.errors import MedsegError

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

log = logging.getLogger("medseg")


def run_stage(main: Callable[[], None]) -> None:
    """Run `main`; a MedsegError becomes one `error:` line on stderr and exit status 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        main()
    except MedsegError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)

"""What the top-level scripts share: bad input ends in one line on stderr, not a traceback."""

from __future__ import annotations

import sys
from typing import Callable

from kss.errors import KssError


def run_task(task: Callable, *args, **kwargs):
    try:
        return task(*args, **kwargs)
    except KssError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)

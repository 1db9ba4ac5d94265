"""Test-only crash points: `CATALOG_SYNC_TEST_CRASH_AT=<step>` SIGKILLs the process at <step>.

The reliability tests (tests/test_crash_steps.py) prove that a worker killed at any step
loses nothing and applies nothing twice. A kill at an exact step needs the process to
kill itself there, so the task bodies call `crash_point(step)` at each one. Unset (every
real deployment), the variable does nothing; set, it must name one of `STEPS` exactly, and
a value that names none of them is refused instead of being ignored (a typo in a test
would otherwise pass without crashing). Never set it outside a test.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Iterator
from typing import TypeVar

from catalog_sync.errors import ConfigurationError

ENV_CRASH_AT = "CATALOG_SYNC_TEST_CRASH_AT"
STEPS = frozenset({"after_extract", "mid_push", "after_push", "mid_upload", "after_finalize"})

T = TypeVar("T")


def crash_point(step: str) -> None:
    """SIGKILL this process if the test-only variable names `step` (no cleanup can run)."""
    wanted = os.environ.get(ENV_CRASH_AT)
    if not wanted:
        return
    if wanted not in STEPS:
        raise ConfigurationError(
            f"{ENV_CRASH_AT}={wanted!r} names no crash point (test-only; one of "
            f"{', '.join(sorted(STEPS))}); unset it"
        )
    if wanted == step:
        os.kill(os.getpid(), signal.SIGKILL)


def crash_after_first(items: Iterable[T], step: str) -> Iterator[T]:
    """`items`, with `crash_point(step)` before the second one (after the first was used)."""
    for index, item in enumerate(items):
        if index:
            crash_point(step)
        yield item

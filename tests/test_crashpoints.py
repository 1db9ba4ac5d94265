"""The test-only crash points do nothing unless asked, and refuse a value they do not know."""

from __future__ import annotations

import pytest

from catalog_sync.crashpoints import ENV_CRASH_AT, crash_after_first, crash_point
from catalog_sync.errors import ConfigurationError


def test_unset_crash_point_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_CRASH_AT, raising=False)
    crash_point("after_push")
    assert list(crash_after_first([1, 2, 3], "mid_push")) == [1, 2, 3]


def test_a_crash_point_set_for_another_step_does_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_CRASH_AT, "after_finalize")
    crash_point("after_push")
    assert list(crash_after_first([1, 2], "mid_push")) == [1, 2]


def test_an_unknown_crash_point_is_refused_not_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_CRASH_AT, "after_pusj")
    with pytest.raises(ConfigurationError, match="CATALOG_SYNC_TEST_CRASH_AT='after_pusj' names"):
        crash_point("after_push")

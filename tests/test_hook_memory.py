"""The snapshot upload streams: resident memory does not grow with the file size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from receiver_harness import Receiver

BENCH = Path(__file__).resolve().parent.parent / "bench" / "upload_memory.py"


@pytest.mark.slow
def test_uploading_150_mib_grows_rss_by_less_than_50_mb(
    receiver: Receiver, airflow_env: dict[str, str]
) -> None:
    """Runs bench/upload_memory.py in its own process, so the RSS is the upload's alone."""
    done = subprocess.run(
        [sys.executable, str(BENCH), "--size-mib", "150",
         "--base-url", receiver.base_url, "--code", receiver.issue_code()],
        env=airflow_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    [put] = [r for r in receiver.requests() if r["method"] == "PUT"]
    assert put["status"] == 200
    assert put["content_length"] == result["bytes"] > 150 * 1024 * 1024
    assert result["rss_growth_mb"] < 50, result

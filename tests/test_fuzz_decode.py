"""The decoder under mutated files of every format it reads: no crash, no hang, a reason for every refusal.
2000 cases here (about 5 s; DUPWATCH_FUZZ_CASES); `python -m tests.fuzzing --cases 50000` is the long run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_mutated_images_never_crash_or_hang_the_decoder() -> None:
    cases = os.environ.get("DUPWATCH_FUZZ_CASES", "2000")
    r = subprocess.run(
        [sys.executable, "-m", "tests.fuzzing", "--cases", cases, "--seed", "3"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,  # a hang inside C code, which no alarm can interrupt, ends here
    )
    summary = json.loads(r.stdout)
    assert summary["crashes"] == [], summary["crashes"]
    assert r.returncode == 0
    assert summary["decoded"] + summary["rejected"] == int(cases)
    assert summary["rejected"] > 0 and all(summary["reasons"])  # every refusal has a reason
    assert set(summary["formats"]) >= {"JPEG", "PNG", "WEBP", "GIF", "TIFF"}

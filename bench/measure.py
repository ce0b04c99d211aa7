"""Peak memory of a child process, the figure the memory targets are stated in."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss(argv: list[str], *, quiet: bool = True) -> tuple[float, int, float, float]:
    """Peak RSS (MB), exit code, wall seconds and CPU seconds of ``python ARGV`` run from the project root.

    The child's own ``ru_maxrss`` (from ``wait4``): this process's memory is not counted.  The CPU
    seconds (user + system) estimate the wall time of an idle machine when other jobs inflate it.
    """
    t = time.perf_counter()
    out = subprocess.DEVNULL if quiet else None
    proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=out, stderr=out)
    _, status, usage = os.wait4(proc.pid, 0)
    return (usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status), time.perf_counter() - t,
            usage.ru_utime + usage.ru_stime)

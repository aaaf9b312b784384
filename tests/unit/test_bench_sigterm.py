"""The bench stops what it started when it is killed (SIGTERM from ``kill`` or ``timeout``), as on Ctrl-C."""

import os
import signal
import subprocess
import sys

# A child that does what the bench's context managers do: starts a process and stops it in `finally`.
CHILD = """
import subprocess, sys, time
from bench.load import exit_on_sigterm
exit_on_sigterm()
proc = subprocess.Popen(["sleep", "600"])
try:
    print(proc.pid, flush=True)
    time.sleep(60)
finally:
    proc.kill()
    proc.wait()
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_unwinds_through_finally_and_exits_143() -> None:
    bench = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    assert bench.stdout is not None
    started = int(bench.stdout.readline())
    assert alive(started)
    bench.send_signal(signal.SIGTERM)
    assert bench.wait(timeout=30) == 128 + signal.SIGTERM
    assert not alive(started), "the process the bench started outlived it"

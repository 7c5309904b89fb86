"""A watchdog process that kills process groups left behind when their owner dies.

:class:`opsync.tooling.harness.Children` starts the Connect server and the
operator (for the demo, the benchmark and the tests) in process groups of their
own. Should the owner die without stopping them (even by SIGKILL), the watchdog,
which reads from a pipe only the owner holds, sees the pipe close and kills
every group it was told to watch and not told to forget.
"""

from __future__ import annotations

import subprocess
import sys

_SCRIPT = """
import os, signal, sys
groups = set()
for line in sys.stdin:
    line = line.strip()
    if line.startswith("-"):
        groups.discard(int(line[1:]))
    elif line:
        groups.add(int(line))
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
"""


class GroupWatchdog:
    """Started on first use; ``watch`` a group's id, ``forget`` it once stopped, ``close`` at the end."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None

    def _send(self, line: str) -> None:
        if self._process is None:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _SCRIPT], stdin=subprocess.PIPE, text=True, start_new_session=True
            )
        if self._process.stdin is not None:
            self._process.stdin.write(line + "\n")
            self._process.stdin.flush()

    def watch(self, group: int) -> None:
        self._send(str(group))

    def forget(self, group: int) -> None:
        if self._process is not None:
            self._send(f"-{group}")

    def close(self) -> None:
        """Stop the watchdog; it kills the groups still watched (none after a clean stop)."""
        if self._process is not None:
            if self._process.stdin is not None:
                self._process.stdin.close()
            self._process.wait(15)
            self._process = None

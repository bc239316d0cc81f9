"""Processes by session, read from /proc: how tests and benchmarks stop real Ray.

`ray start` runs in a session of its own (started with start_new_session), and the
gcs_server, raylet, agents and workers it starts inherit that session. Killing every
member of the session stops exactly that Ray node, never anyone else's (`ray stop` would
stop every Ray process of the user). Only our own (same uid), live (not zombie)
processes are listed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: [state, ppid, pgrp, session, ...];
    empty if the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    fields = stat_fields(pid)
    return bool(fields) and fields[0] != "Z"


def session_members(sid: int) -> list[int]:
    """Our live processes in session `sid`."""
    me, pids = os.getuid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = stat_fields(int(entry.name))
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(fields[3]) == sid and fields[0] != "Z" and entry.stat().st_uid == me:
                pids.append(int(entry.name))
    return pids


def kill_sessions(sids: list[int], rounds: int = 10, pause_s: float = 0.3) -> None:
    """SIGKILL every process of the sessions `sids`, until none is left (a dying raylet
    may still start a worker, hence the rounds)."""
    for _ in range(rounds):
        pids = [pid for sid in sids for pid in session_members(sid)]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(pause_s)


def cmdline(pid: int) -> list[str]:
    """A process's argv ([] if it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def exe_name(pid: int) -> str:
    """The base name of a process's executable (argv[0]), "" if it is gone."""
    argv = cmdline(pid)
    return Path(argv[0]).name if argv and argv[0] else ""

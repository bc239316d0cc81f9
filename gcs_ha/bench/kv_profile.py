"""`gcs-ha` under cProfile in every Python thread, for `gcs-ha bench kv` profiling runs.

    python -m gcs_ha.bench.kv_profile OUT start --node-id r0 ...

Writes `OUT.<n>-<thread>.prof` per thread and `OUT.txt` at exit. A measuring aid only:
see DESIGN.md ("`bench kv`").
"""

from __future__ import annotations

import cProfile
import io
import pstats
import runpy
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

TOP = 25

_profiles: list[tuple[str, cProfile.Profile]] = []  # ("<name> tid <native id>", profile)
_lock = threading.Lock()


def _start_in_thread(_frame: FrameType, _event: str, _arg: Any) -> None:
    """The first profile event of a new thread: replace this hook by a cProfile of its own."""
    profile = cProfile.Profile()
    with _lock:
        _profiles.append((_label(), profile))
    profile.enable()


def _label() -> str:
    """The current thread's name and Linux thread id (as in /proc/PID/task/TID)."""
    return f"{threading.current_thread().name} tid {threading.get_native_id()}"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def dump(out: Path) -> None:
    """Write each thread's profile and the text summary next to `out`."""
    summary = io.StringIO()
    with _lock:
        profiles = list(_profiles)
    for index, (name, profile) in enumerate(profiles):
        profile.disable()
        profile.dump_stats(f"{out}.{index}-{_safe(name)}.prof")
        stats = pstats.Stats(profile, stream=summary)
        total = sum(entry[2] for entry in stats.stats.values())  # type: ignore[attr-defined]
        summary.write(f"\n==== thread {name}: {total:.2f} s own time in Python functions\n")
        stats.sort_stats("tottime").print_stats(TOP)
        stats.sort_stats("cumulative").print_stats(TOP)
    Path(f"{out}.txt").write_text(summary.getvalue())


def main(argv: list[str]) -> int:
    if len(argv) < 1:
        print("usage: python -m gcs_ha.bench.kv_profile OUT [gcs-ha arguments...]", file=sys.stderr)
        return 2
    out = Path(argv[0])
    sys.argv = ["gcs-ha", *argv[1:]]
    threading.setprofile(_start_in_thread)
    main_profile = cProfile.Profile()
    _profiles.append((_label(), main_profile))
    code = 0
    main_profile.enable()
    try:  # the CLI run as a program (`python -m gcs_ha.cli`), imported after the hook
        runpy.run_module("gcs_ha.cli", run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        main_profile.disable()
        threading.setprofile(None)
        dump(out)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

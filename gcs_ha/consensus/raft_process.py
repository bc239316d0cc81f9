"""Entry point of a replica's consensus process:

    python -m gcs_ha.consensus.raft_process --fd N --parent PID

Started by the front end (raft_link.py) with one end of a socketpair as descriptor N; it
dies with its parent and ignores SIGINT/SIGTERM (DESIGN.md, "Two processes per replica").

Exit codes: 0 after a clean stop, 1 when it could not start (the reason went to the front
end in a START_FAILED frame), 2 for bad arguments, 70 for a fatal error (raft_host.fatal).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import socket
import sys

from gcs_ha.consensus.raft_host import RaftHost

PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> bool:
    """SIGKILL this process when `parent` dies; False when it is already gone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: EOF on the stream still stops this process
    return os.getppid() == parent


def configure_logging(node_id: str, level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s %(levelname)s {node_id} consensus %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a gcs-ha replica's consensus process")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args(argv)
    if not _die_with_parent(args.parent):
        return 1
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=args.fd)
    code = RaftHost(sock).run(configure_logging)
    logging.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())

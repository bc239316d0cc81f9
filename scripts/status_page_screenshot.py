"""Make docs/status-page.png: a local 3-replica cluster (16 MiB maps, a few MiB written)
through two leader kills, one replica left down, the status page of the replica that
saw it all shot by headless Chromium (Debian's `chromium`). About a minute and a half.

    python scripts/status_page_screenshot.py [--out docs/status-page.png] [--base-port 14200]

Ports: gRPC base..base+2, Raft base+10.., HTTP base+20.. on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from gcs_ha.testing import kv_calls
from gcs_ha.testing.browser import browse
from gcs_ha.testing.cluster import ProcessCluster


def writes(cluster: ProcessCluster, leader: int, n: int, first: int) -> None:
    for k in range(first, first + n):
        kv_calls.put(cluster.gcs_address(leader), b"demo", b"k%d" % k, b"v" * 4000, retry_s=10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("docs/status-page.png"))
    parser.add_argument("--base-port", type=int, default=14200)
    args = parser.parse_args()
    base = args.base_port
    with (
        tempfile.TemporaryDirectory() as tmp,
        ProcessCluster(
            3, Path(tmp), base, base + 10, http_port=base + 20, extra_args=["--map-size=16MiB"]
        ) as cluster,
    ):
        cluster.start()
        leader = cluster.wait_for_leader(30)
        for i in range(3):  # registered everywhere before anyone is killed
            cluster.wait_for_members(3, i)
        writes(cluster, leader, 600, 0)
        time.sleep(20)
        cluster.kill(leader)  # the first failover
        new = cluster.wait_for_leader(30, exclude=[leader])
        writes(cluster, new, 300, 600)
        time.sleep(15)
        cluster.start(leader)  # back, as a follower
        time.sleep(15)
        cluster.kill(new)  # the second failover; this one stays down
        last = cluster.wait_for_leader(30, exclude=[new])
        writes(cluster, last, 300, 900)
        time.sleep(20)
        witness = next(i for i in range(3) if i not in (leader, new))  # never restarted
        url = f"http://{cluster.http_address(witness)}/"
        browse(url, Path(tmp), f"--screenshot={args.out.absolute()}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

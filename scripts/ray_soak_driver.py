"""The Ray driver of `scripts/ray_soak.py`: a user's steady workload, each step timed.

    python scripts/ray_soak_driver.py --address HOST:PORT

Loops until it reads "stop" on stdin: 50 tasks, an actor created, called and killed, a
placement group created, ready and removed, an internal-KV put and get. Prints one JSON
event per line: {"event": "step", "step": NAME, "start": T, "seconds": S} for each step
that worked (T on CLOCK_MONOTONIC, which every process of the machine shares), {"event":
"error", "step": NAME, "start": T, "error": TEXT} for one that raised, and {"event":
"done", "iterations": N} at the end. Only Ray and the standard library are imported.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable

import ray
from ray.experimental import internal_kv
from ray.util.placement_group import placement_group, remove_placement_group


@ray.remote(num_cpus=0)
def noop(i: int) -> int:
    return i


@ray.remote(num_cpus=0)
class Pinger:
    def ping(self) -> str:
        return "pong"


def tasks() -> None:
    assert ray.get([noop.remote(i) for i in range(50)], timeout=120) == list(range(50))


def actor() -> None:
    start = time.monotonic()
    pinger = Pinger.remote()  # type: ignore[attr-defined]  # RegisterActor: synchronous
    registered = time.monotonic()
    assert ray.get(pinger.ping.remote(), timeout=120) == "pong"
    ready = time.monotonic()
    ray.kill(pinger)
    emit(
        {
            "event": "detail",
            "step": "actor",
            "start": start,
            "register_s": registered - start,
            "create_and_call_s": ready - registered,
        }
    )


def group() -> None:
    pg = placement_group([{"CPU": 1}])
    ray.get(pg.ready(), timeout=120)
    remove_placement_group(pg)


def kv(n: int) -> None:
    key = b"soak/%d" % (n % 100)
    internal_kv._internal_kv_put(key, b"v%d" % n, namespace=b"soak")
    assert internal_kv._internal_kv_get(key, namespace=b"soak") == b"v%d" % n


def emit(event: dict[str, object]) -> None:
    print(json.dumps(event), flush=True)


def timed(name: str, step: Callable[[], None]) -> None:
    start = time.monotonic()
    try:
        step()
    except Exception as exc:  # reported, and the loop goes on
        text = f"{type(exc).__name__}: {exc}"[:2000]
        emit({"event": "error", "step": name, "start": start, "error": text})
        return
    emit({"event": "step", "step": name, "start": start, "seconds": time.monotonic() - start})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    args = parser.parse_args()
    ray.init(address=args.address, log_to_driver=False)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    emit({"event": "ready"})
    n = 0
    while not stop.is_set():
        n += 1
        timed("tasks", tasks)
        timed("actor", actor)
        timed("placement_group", group)
        timed("kv", lambda n=n: kv(n))  # type: ignore[misc]
    emit({"event": "done", "iterations": n})


if __name__ == "__main__":
    main()

"""What the benchmarks share: addresses, the run directory, the child processes."""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from gcs_ha.errors import ConfigError, GcsHaError
from gcs_ha.processes import Process, terminate_all

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
CLUSTER_NAME = "gcs-ha-bench"
GCS_PORT_OFFSET = 50  # replica i: Raft port base+i, gRPC port base+GCS_PORT_OFFSET+i


class ProcessSet:
    """Every child process a benchmark started; `close()` stops them all by PID."""

    def __init__(self) -> None:
        self.procs: list[Process] = []

    def add(self, proc: Process) -> Process:
        self.procs.append(proc)
        return proc

    def close(self, timeout: float = 5.0) -> None:
        """SIGTERM the ones still running, SIGKILL after `timeout`. Idempotent."""
        terminate_all([p for p in self.procs if p.poll() is None], timeout)


@contextlib.contextmanager
def run_dir(parent: Path | None, keep: bool) -> Iterator[Path]:
    """A fresh directory for one run, under `parent` (the disk being measured; default
    the temp dir). Removed afterwards unless `keep`, or the run failed with an error
    (then its path, with the replicas' logs, is logged). Ctrl-C removes it too."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="gcs-ha-bench-", dir=parent))
    failed = False
    try:
        yield base
    except Exception:
        failed = True
        raise
    finally:
        if failed or keep:
            log.warning("benchmark data and logs kept in %s", base)
        else:
            shutil.rmtree(base, ignore_errors=True)


F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")


def run_repeated(run: Callable[[], R], repeat: int) -> list[R]:
    """`repeat` runs of a benchmark, for a click command. SIGTERM unwinds like Ctrl-C
    (every started process is stopped, the run directory handled as on an error); a
    ConfigError becomes click.UsageError, another GcsHaError click.ClickException."""

    def interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        return [run() for _ in range(repeat)]
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except GcsHaError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def measurement_options(func: F) -> F:
    """The options every load benchmark takes: --json, --duration, --warmup,
    --value-bytes, --repeat."""
    options = [
        click.option("--json", "as_json", is_flag=True, help="Print a JSON list of rows."),
        click.option(
            "--duration",
            type=click.FloatRange(min=0.1),
            default=5.0,
            show_default=True,
            help="Seconds measured per point (after the warm-up).",
        ),
        click.option(
            "--warmup",
            type=click.FloatRange(min=0.0),
            default=1.0,
            show_default=True,
            help="Seconds of load before each measurement.",
        ),
        click.option("--value-bytes", type=click.IntRange(min=1), default=200, show_default=True),
        click.option(
            "--repeat",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Run everything N times and report the median of each field.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def run_dir_options(kept: str) -> Callable[[F], F]:
    """--data-dir and --keep (help: "Keep `kept`."), which every benchmark takes."""

    def decorate(func: F) -> F:
        func = click.option("--keep", is_flag=True, help=f"Keep {kept}.")(func)
        return click.option(
            "--data-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="Where to put the data (a fresh subdirectory; default: the temp dir).",
        )(func)

    return decorate


def csv_names(value: str, known: Iterable[str]) -> tuple[str, ...]:
    """An option's comma-separated names, each one of `known`, without repeats, in order
    (click.BadParameter naming the choices otherwise)."""
    known = tuple(known)
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if not names or any(n not in known for n in names):
        raise click.BadParameter(f"{value!r}: choose from {', '.join(known)}")
    return names

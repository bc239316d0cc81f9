"""Drills against a running deployment, reached by the address of any replica.

The members come from the replica's admin Status; the load, checks and report are those of
a local drill; the faults are the operator's own commands, given as templates such as
`--kill-cmd 'ssh {host} sudo systemctl kill -s KILL gcs-ha'`. `RemoteCluster` offers the
part of ProcessCluster that the nemesis uses. See DESIGN.md ("Running clusters").
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from gcs_ha.admin_client import AdminClient
from gcs_ha.cluster_ops import discover
from gcs_ha.drill.faults import FaultKind
from gcs_ha.errors import AdminAuthError, ConfigError, GcsHaError, UnavailableError
from gcs_ha.proto import admin_pb2
from gcs_ha.testing.polling import wait_until

COMMAND_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class FaultCommands:
    kill: str | None = None
    start: str | None = None
    pause: str | None = None
    resume: str | None = None

    def kinds(self) -> tuple[FaultKind, ...]:
        """The fault kinds these commands can carry out."""
        kinds: list[FaultKind] = []
        if self.kill and self.start:
            kinds += ["kill-leader", "kill-random"]
        if self.pause and self.resume:
            kinds.append("pause")
        return tuple(kinds)

    def validate(self) -> None:
        if bool(self.kill) != bool(self.start):
            raise ConfigError("--kill-cmd and --start-cmd go together")
        if bool(self.pause) != bool(self.resume):
            raise ConfigError("--pause-cmd and --resume-cmd go together")


@dataclass(frozen=True)
class RemoteMember:
    node_id: str
    gcs_address: str
    raft_address: str


def fill_template(template: str, member: RemoteMember) -> str:
    """The operator's command for `member`: each field shell-quoted, so a node id or an
    address the cluster reports can never be more than one word of the command."""
    fields = {
        "node_id": member.node_id,
        "gcs_address": member.gcs_address,
        "raft_address": member.raft_address,
        "host": member.gcs_address.rpartition(":")[0],
    }
    try:
        return template.format(**{name: shlex.quote(value) for name, value in fields.items()})
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"bad command template {template!r}: {exc}; fields: {', '.join(fields)}"
        ) from None


class RemoteCluster:
    """The members of a running cluster, indexed 0..n-1 in node id order."""

    def __init__(self, address: str, commands: FaultCommands, key: bytes | None) -> None:
        """`key`: the cluster's admin key (gcs_ha.admin_auth), for the digests."""
        status = discover(address)
        found = [m for m in status.members if m.gcs_address]
        if len(found) < len(status.members):
            raise UnavailableError("not every member has registered its gRPC address yet")
        self._members = [
            RemoteMember(m.node_id, m.gcs_address, m.raft_address)
            for m in sorted(found, key=lambda m: m.node_id)
        ]
        self.members: set[int] = set(range(len(self._members)))
        self.commands = commands
        self.admin_key = key
        self._down: set[int] = set()
        self._check_key()

    def _check_key(self) -> None:
        """ConfigError before any fault when the drill could not check the digests at the
        end: the cluster asks for the secret and none (or the wrong one) was given."""
        try:
            with AdminClient(self.gcs_address(0), 5.0, self.admin_key) as client:
                client.digest()
        except AdminAuthError as exc:
            raise ConfigError(
                f"the drill compares the replicas' digests, an admin call: {exc}"
            ) from None
        except GcsHaError:
            pass  # unreachable now: the drill's own checks report it

    def node_id(self, i: int) -> str:
        return self._members[i].node_id

    def gcs_address(self, i: int) -> str:
        return self._members[i].gcs_address

    def status(self, i: int, timeout: float = 3.0) -> admin_pb2.ReplicaStatus:
        with AdminClient(self.gcs_address(i), timeout) as client:
            return client.status()

    def is_running(self, i: int) -> bool:
        return i not in self._down

    def serving_leader(self) -> int | None:
        serving = []
        for i in sorted(self.members - self._down):
            try:
                status = self.status(i, timeout=1.0)
            except GcsHaError:
                continue
            if status.serving:
                serving.append((status.term, i))
        return max(serving)[1] if serving else None

    def wait_for_leader(self, timeout: float = 30.0, exclude: Sequence[int] = ()) -> int:
        return wait_until(self.serving_leader, timeout, "no replica serves as leader")

    # -- faults: the operator's commands ---------------------------------------------------

    def kill(self, i: int) -> int:
        self._run(self.commands.kill, i)
        self._down.add(i)
        return 0

    def restart(self, i: int, timeout: float = 10.0) -> None:
        self._run(self.commands.start, i)
        self._down.discard(i)
        wait_until(lambda: self._answers(i), COMMAND_TIMEOUT_S, f"{self.node_id(i)} is not back")

    def pause(self, i: int) -> None:
        self._run(self.commands.pause, i)

    def resume(self, i: int) -> None:
        self._run(self.commands.resume, i)

    def _answers(self, i: int) -> bool | None:
        try:
            self.status(i, timeout=1.0)
        except GcsHaError:
            time.sleep(0.1)
            return None
        return True

    def _run(self, template: str | None, i: int) -> None:
        if not template:
            raise ConfigError("no command given for this fault")
        member = self._members[i]
        command = fill_template(template, member)
        try:
            done = subprocess.run(
                command, shell=True, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise UnavailableError(
                f"{command!r} did not finish in {COMMAND_TIMEOUT_S:.0f} s"
            ) from None
        if done.returncode != 0:
            why = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise UnavailableError(f"{command!r} exited {done.returncode}: {why[0]}")

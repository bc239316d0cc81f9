"""The drill's fault commands for a remote cluster: fields from the cluster are quoted."""

from __future__ import annotations

import shlex

import pytest

from gcs_ha.drill.remote import RemoteMember, fill_template
from gcs_ha.errors import ConfigError


def test_every_field_is_one_shell_word_whatever_the_cluster_reports() -> None:
    hostile = RemoteMember("r1; rm -rf /", "$(reboot):6379", "10.0.0.1:7000 && halt")
    command = fill_template("ssh {host} systemctl kill gcs-ha@{node_id} # {raft_address}", hostile)
    words = shlex.split(command, comments=True)
    assert words == ["ssh", "$(reboot)", "systemctl", "kill", "gcs-ha@r1; rm -rf /"]
    assert shlex.split(fill_template("echo {gcs_address}", hostile)) == ["echo", "$(reboot):6379"]


def test_a_plain_member_fills_in_as_written() -> None:
    member = RemoteMember("r2", "127.0.0.2:6379", "127.0.0.2:7002")
    assert fill_template("kill {node_id} at {host}", member) == "kill r2 at 127.0.0.2"


@pytest.mark.parametrize("template", ["kill {nodeid}", "kill {0}", "kill {node_id"])
def test_a_bad_template_names_the_fields(template: str) -> None:
    with pytest.raises(ConfigError, match="fields: node_id, gcs_address, raft_address, host"):
        fill_template(template, RemoteMember("r1", "h:1", "h:2"))

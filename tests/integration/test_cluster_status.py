"""The status page's cluster view (server/cluster_status.py) and /status's choice between
JSON and HTML (http_endpoint.wants_html).

Members that do not answer are real sockets on 127.0.0.1 (ports 14290-14291): one
closed port, one that accepts connections and never speaks.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gcs_ha.consensus.api import MemberInfo, ReplicaStatusInfo
from gcs_ha.server import cluster_status
from gcs_ha.server.cluster_status import CACHE_S, ClusterStatus
from gcs_ha.server.http_endpoint import wants_html

CLOSED = "127.0.0.1:14290"
SILENT = "127.0.0.1:14291"


@pytest.fixture
def silent_port() -> Iterator[None]:
    """A port that accepts TCP connections and never answers."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 14291))
        sock.listen(8)
        yield


def own_status() -> ReplicaStatusInfo:
    return ReplicaStatusInfo(
        node_id="a",
        role="leader",
        term=4,
        commit_index=20,
        applied_index=20,
        leader_node_id="a",
        leader_raft_address="r:a",
        raft_address="r:a",
        gcs_address="g:a",
        serving=True,
        log_length=3,
        last_log_index=20,
        has_quorum=True,
        cluster_name="c",
        members=(
            MemberInfo("c", "r:c", SILENT),
            MemberInfo("a", "r:a", "g:a"),
            MemberInfo("b", "r:b", CLOSED),
            MemberInfo("", "r:new"),  # joined Raft, not registered yet: nothing to ask
        ),
    )


def test_members_that_do_not_answer_are_unreachable_and_views_are_shared(
    silent_port: None,
) -> None:
    now = [0.0]
    status = ClusterStatus(own_status, None, clock=lambda: now[0])

    async def storm() -> None:
        views = await asyncio.gather(*(status.view() for _ in range(50)))
        assert status.gathered == 1  # one round for all of them
        assert all(v is views[0] for v in views)
        view = views[0]
        assert view.leader == "a"
        assert [(m.id, m.reachable) for m in view.members] == [
            ("a", True), ("b", False), ("c", False), ("", False),
        ]  # fmt: skip
        assert view.members[0].term == 4 and view.members[0].lag == 0
        assert view.members[3].raft_address == "r:new"

        now[0] = CACHE_S / 2
        assert await status.view() is view
        now[0] = CACHE_S * 1.5
        assert await status.view() is not view
        assert status.gathered == 2

    asyncio.run(storm())


def test_a_request_that_goes_away_does_not_cancel_the_round(silent_port: None) -> None:
    status = ClusterStatus(own_status, None)

    async def go() -> None:
        first = asyncio.create_task(status.view())
        await asyncio.sleep(0.05)  # the round is under way, waiting for the silent member
        second = asyncio.create_task(status.view())
        await asyncio.sleep(0)
        first.cancel()
        view = await second
        assert status.gathered == 1
        assert [m.reachable for m in view.members] == [True, False, False, False]

    asyncio.run(go())
    assert cluster_status.ASK_TIMEOUT_S < CACHE_S


@pytest.mark.parametrize(
    ("accept", "query", "html"),
    [
        ("", "", False),
        ("*/*", "", False),
        ("application/json", "", False),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "", True),
        ("application/json, text/html;q=0.5", "", False),
        ("text/html;q=0.5, application/json", "", False),
        ("text/html, application/json", "", True),  # a tie goes to the first named
        ("text/html;q=0", "", False),
        ("text/html;q=oops", "", False),
        ("text/html", "?format=json", False),
        ("application/json", "?format=html", True),
    ],
)
def test_status_answers_html_to_browsers_and_json_to_the_rest(
    accept: str, query: str, html: bool
) -> None:
    headers = {"Accept": accept} if accept else {}
    assert wants_html(make_mocked_request("GET", f"/status{query}", headers=headers)) is html


def test_an_unknown_format_is_a_bad_request() -> None:
    with pytest.raises(web.HTTPBadRequest) as raised:
        wants_html(make_mocked_request("GET", "/status?format=xml"))
    assert "format must be html or json" in raised.value.text

"""The status page in a real browser: three live replicas, the leader killed, the page
loaded by headless Chromium from a survivor. The killed member shows unreachable, the
new leader and the other follower show with their roles, the timeline pictures both
leaders, and a screenshot of the same page is taken (GCS_HA_STATUS_SCREENSHOT=path keeps
it; the one in docs/ comes from scripts/status_page_screenshot.py, a longer run). Also
/status as JSON, with the cluster view.
Ports: gRPC 127.0.0.1:14200-14202, Raft 14210-14212, HTTP 14220-14222.

Chromium comes from Debian's `chromium` package (`./dev test` installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from gcs_ha.errors import UnavailableError
from gcs_ha.testing.browser import browse
from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.polling import wait_until

pytestmark = pytest.mark.slow

class Page(HTMLParser):
    """The members' rows, the timeline's segments and the page's text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.rows: dict[str, str] = {}
        self.segments = 0
        self.text: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and a.get("data-node") is not None:
            self.rows[a["data-node"] or ""] = a.get("data-state") or ""
        if tag == "rect" and a.get("class") == "segment":
            self.segments += 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def status_json(cluster: ProcessCluster, i: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{cluster.http_address(i)}/status", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("application/json")
        doc: dict[str, Any] = json.load(r)
        return doc


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    return width, height


def test_status_page_shows_a_killed_member_unreachable(tmp_path: Path) -> None:
    with ProcessCluster(3, tmp_path, 14200, 14210, http_port=14220) as cluster:
        cluster.start()
        first = cluster.wait_for_leader(30)
        for i in range(3):  # each names itself; registered in the others' tables too
            cluster.wait_for_members(3, i)
        cluster.kill(first)
        leader = cluster.wait_for_leader(30, exclude=[first])
        follower = next(i for i in range(3) if i not in (first, leader))
        names = {i: cluster.node_id(i) for i in range(3)}

        last: list[Any] = []

        def settled(i: int) -> dict[str, Any] | None:
            doc = status_json(cluster, i)
            last[:] = [doc["cluster"], doc["leader"]]
            reachable = {m["id"]: m["reachable"] for m in doc["cluster"]["members"]}
            expected = {names[first]: False, names[leader]: True, names[follower]: True}
            leaders = {doc["cluster"]["leader"], doc["leader"]["leader"]}  # all, its own
            return doc if leaders == {names[leader]} and reachable == expected else None

        try:
            doc = wait_until(lambda: settled(follower), 20, "the follower's view did not settle")
        except UnavailableError as exc:
            raise AssertionError(f"{exc}; it says {last}") from None
        assert {"replica", "leader", "serving", "ready", "leader_changes", "store"} <= set(doc)

        # The page from the follower, reached as a person would: the listener's root.
        shot = tmp_path / "status-page.png"
        url = f"http://{cluster.http_address(follower)}/"
        dom = browse(url, tmp_path, "--dump-dom", f"--screenshot={shot}")
        page = Page(dom.decode())
        assert page.rows == {
            names[first]: "unreachable",
            names[leader]: "leader",
            names[follower]: "follower",
        }
        text = " ".join(page.text)
        assert "degraded" in text
        assert page.segments >= 2  # the first leader, then the new one
        legend = text[text.index("Leader changes seen by") :]
        assert names[first] in legend and names[leader] in legend
        assert "Map use" in text
        assert png_size(shot) == (1280, 1000)
        if keep := os.environ.get("GCS_HA_STATUS_SCREENSHOT"):
            shutil.copyfile(shot, keep)

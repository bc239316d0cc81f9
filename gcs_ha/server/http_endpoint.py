"""A replica's HTTP listener (`--http-address`): metrics, probes, leader and status.

Paths: `/metrics`, `/livez`, `/readyz`, `/leader`, `/status` (JSON, or the HTML status
page), and `/` (a redirect to `/status`); what each answers: DESIGN.md, "The HTTP
listener", and docs/monitoring.md. Readable by anyone who reaches the port, changing
nothing (docs/security.md). Served by aiohttp on the replica's event loop.

Errors: ConfigError at start for a port that cannot be bound.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gcs_ha.addresses import split_address
from gcs_ha.cluster_view import ClusterView
from gcs_ha.consensus.api import ROLE_LEADER, Replica, ReplicaStatusInfo, StoreUse
from gcs_ha.errors import ConfigError, GcsHaError
from gcs_ha.server.cluster_status import ClusterStatus
from gcs_ha.server.gcs_server import GcsServer
from gcs_ha.server.metrics import ReplicaMetrics
from gcs_ha.server.status_page import StatusPage, render

log = logging.getLogger(__name__)

STALE_AFTER_S = 30.0  # a consensus process silent this long is wedged: not live
# The status page runs no script and loads nothing: forbid both, in case an escape is missed.
PAGE_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Vary": "Accept",
}


class HttpEndpoint:
    """The listener; `start(address)` binds it, `stop()` closes it."""

    def __init__(self, replica: Replica, gcs: GcsServer, metrics: ReplicaMetrics) -> None:
        self._replica = replica
        self._gcs = gcs
        self._metrics = metrics
        self._cluster = ClusterStatus(replica.status, gcs.ray_tls)
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.add_routes(
            [
                web.get("/metrics", self._get_metrics),
                web.get("/livez", self._get_livez),
                web.get("/readyz", self._get_readyz),
                web.get("/leader", self._get_leader),
                web.get("/status", self._get_status),
                web.get("/", self._get_root),
            ]
        )
        self.app = app

    async def start(self, address: str) -> None:
        """Serve on `address` (HOST:PORT); ConfigError when it cannot be bound."""
        host, port = split_address(address)
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, reuse_address=True).start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"cannot listen on {address} (--http-address): {exc}") from exc
        self._runner = runner
        log.info("HTTP listener (metrics, probes, status) on %s", address)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- handlers ------------------------------------------------------------------------

    async def _get_metrics(self, _request: web.Request) -> web.Response:
        body = await self._metrics.text()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _get_livez(self, _request: web.Request) -> web.Response:
        age = self._status().status_age_s
        if age > STALE_AFTER_S:
            return _text(503, f"the consensus process has not reported for {age:.0f} s\n")
        return _text(200, "ok\n")

    async def _get_readyz(self, _request: web.Request) -> web.Response:
        if self._gcs.can_answer():
            return _text(200, "ok\n")
        return _text(503, "no GCS leader is known here yet\n")

    async def _get_leader(self, _request: web.Request) -> web.Response:
        doc = leader_doc(self._status())
        return web.json_response(doc, status=200 if doc["leader"] else 503)

    async def _get_status(self, request: web.Request) -> web.Response:
        html = wants_html(request)
        view = await self._cluster.view()
        if html:
            page = render(self.status_page(view))
            return web.Response(text=page, content_type="text/html", headers=PAGE_HEADERS)
        doc = self.status_doc()
        doc["cluster"] = view.to_json()
        return web.json_response(doc, headers={"Vary": "Accept"})

    async def _get_root(self, _request: web.Request) -> web.Response:
        raise web.HTTPFound("/status")

    # -- documents -----------------------------------------------------------------------

    def status_doc(self) -> dict[str, Any]:
        """What /status answers (JSON)."""
        status = self._status()
        changes = self._gcs.routing.leader_history.recent()
        doc: dict[str, Any] = {
            "replica": status_dict(status),
            "leader": leader_doc(status),
            "serving": self._gcs.is_serving(),
            "ready": self._gcs.can_answer(),
            "leader_changes": [dataclasses.asdict(c) for c in changes],
            "time": time.time(),
        }
        use, error = self._store_use()
        doc["store"] = dataclasses.asdict(use) if use else {"error": error}
        return doc

    def status_page(self, view: ClusterView) -> StatusPage:
        """What the HTML view of /status shows, with `view` from the members."""
        status = self._status()
        use, error = self._store_use()
        return StatusPage(
            node_id=status.node_id,
            cluster_name=status.cluster_name,
            view=view,
            changes=self._gcs.routing.leader_history.recent(),
            store=use,
            store_error=error,
            ready=self._gcs.can_answer(),
            now=time.time(),
        )

    def _store_use(self) -> tuple[StoreUse | None, str]:
        try:
            return self._replica.store_use(), ""
        except (GcsHaError, OSError) as exc:  # not started yet, or the dir is gone
            return None, str(exc)

    def _status(self) -> ReplicaStatusInfo:
        return self._replica.status()


def status_dict(status: ReplicaStatusInfo) -> dict[str, Any]:
    """A replica's status as plain JSON types."""
    doc = dataclasses.asdict(status)
    doc["members"] = [dataclasses.asdict(m) for m in status.members]
    return doc


def leader_doc(status: ReplicaStatusInfo) -> dict[str, Any]:
    """The leader as this replica knows it (its status, not the routing's poll): none
    while it does not hear from a majority (it may name a leader long dead)."""
    is_self = status.role == ROLE_LEADER
    leader = status.node_id if is_self else status.leader_node_id
    leader = leader if status.has_quorum else None
    address = next((m.gcs_address for m in status.members if m.node_id == leader), None)
    return {
        "leader": leader,
        "gcs_address": address or None,
        "term": status.term,
        "is_self": is_self,
    }


def wants_html(request: web.Request) -> bool:
    """Whether /status answers HTML: `?format=html|json` decides; else the Accept header,
    HTML when it ranks text/html above application/json (a browser's does), JSON for
    everything else (none, */*, application/json). HTTPBadRequest for another format."""
    fmt = request.query.get("format")
    if fmt is not None:
        if fmt not in ("html", "json"):
            raise web.HTTPBadRequest(text=f"format must be html or json, not {fmt!r}\n")
        return fmt == "html"
    ranks: dict[str, tuple[float, int]] = {}
    for position, part in enumerate(request.headers.get("Accept", "").split(",")):
        kind, *params = (p.strip() for p in part.split(";"))
        q = next((_quality(p[2:]) for p in params if p.startswith("q=")), 1.0)
        ranks.setdefault(kind.lower(), (q, -position))
    html, json_ = ranks.get("text/html"), ranks.get("application/json")
    return html is not None and html[0] > 0 and (json_ is None or html > json_)


def _quality(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def _text(status: int, body: str) -> web.Response:
    return web.Response(status=status, text=body)

"""The monitoring files in deploy/: Prometheus alert rules and a Grafana dashboard.

- The rules pass `promtool check rules` and their unit tests (`promtool test rules`: each
  alert fires on the series that should fire it, and not on a healthy cluster).
- The dashboard is well formed, and every metric it or the rules name is one that
  docs/monitoring.md lists (tests/e2e/test_http_listener.py checks that list against a
  live replica).
- A real Prometheus scrapes a live 3-replica cluster: every rule and panel expression
  evaluates, one replica leads, and GcsHaNoLeader's expression holds once two replicas
  are killed. Ports: gRPC 127.0.0.1:14330-14332, Raft 14340-14342, HTTP 14350-14352,
  Prometheus 14390.

promtool and prometheus come from Debian's `prometheus` package (`./dev test` installs it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from gcs_ha.testing.cluster import ProcessCluster
from gcs_ha.testing.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "gcs-ha-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "gcs-ha-alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "gcs-ha-dashboard.json"
DOCS = ROOT / "docs" / "monitoring.md"
PROMETHEUS_PORT = 14390


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: install Debian's prometheus package (./dev test does)"
    return path


def rule_exprs() -> dict[str, str]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r["expr"] for g in doc["groups"] for r in g["rules"]}


def panel_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def documented() -> tuple[set[str], tuple[str, ...]]:
    """(metric names, name prefixes) of docs/monitoring.md's metrics table."""
    text = DOCS.read_text()
    section = text[text.index("\n## Metrics") + 1 :]
    section = section.split("\n## ", 1)[0]
    names = set(re.findall(r"`(gcs_ha_[a-z_]+)", section))
    return {n for n in names if not n.endswith("_")}, tuple(n for n in names if n.endswith("_"))


def metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b(gcs_ha_[a-z_]+)", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def test_alert_rules_pass_promtool() -> None:
    promtool = tool("promtool")
    for args in (["check", "rules", str(RULES)], ["test", "rules", str(RULE_TESTS)]):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert any(v["name"] == "datasource" for v in dashboard["templating"]["list"])
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}  # fmt: skip
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] != "row":
            assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"])


def test_rules_and_dashboard_use_documented_metrics() -> None:
    names, prefixes = documented()
    used = set().union(*(metric_names(e) for e in [*rule_exprs().values(), *panel_exprs()]))
    unknown = sorted(n for n in used if n not in names and not n.startswith(prefixes))
    assert not unknown, f"not in docs/monitoring.md's metrics table: {unknown}"


def query(expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/query?" + urllib.parse.urlencode(
        {"query": expr}
    )
    with urllib.request.urlopen(url, timeout=10) as reply:
        doc = json.loads(reply.read())
    assert doc["status"] == "success", (expr, doc)
    result: list[dict[str, Any]] = doc["data"]["result"]
    return result


def start_prometheus(tmp_path: Path, targets: list[str]) -> subprocess.Popen[bytes]:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "gcs-ha", "static_configs": [{"targets": targets}]}],
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    log = (tmp_path / "prometheus.log").open("wb")
    cmd = [
        tool("prometheus"),
        f"--config.file={path}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}",
    ]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def scraped(count: int) -> bool | None:
    try:
        up = query('up{job="gcs-ha"} == 1')
    except OSError:
        return None
    return len(up) == count or None


@pytest.mark.slow
def test_prometheus_scrapes_a_live_cluster(tmp_path: Path) -> None:
    with ProcessCluster(3, tmp_path / "c", 14330, 14340, http_port=14350) as cluster:
        cluster.start()
        leader = cluster.wait_for_leader(30)
        prometheus = start_prometheus(tmp_path, [cluster.http_address(i) for i in range(3)])
        try:
            wait_until(lambda: scraped(3), 60, "Prometheus did not scrape three replicas")
            time.sleep(2)  # a few more scrapes: rates need two samples
            for expr in [*rule_exprs().values(), *panel_exprs()]:
                query(expr)  # parses and evaluates
            leaders = query('sum(gcs_ha_server_is_leader{job="gcs-ha"})')
            assert float(leaders[0]["value"][1]) == 1
            assert query(rule_exprs()["GcsHaNoLeader"]) == []

            for i in range(3):
                if i != leader:
                    cluster.kill(i)
                    break
            cluster.kill(leader)
            no_leader = rule_exprs()["GcsHaNoLeader"]
            wait_until(lambda: query(no_leader) or None, 30, "GcsHaNoLeader's expr never held")
        finally:
            prometheus.terminate()
            prometheus.wait(10)

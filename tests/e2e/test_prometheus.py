"""A real Prometheus scrapes the agent while test pods exchange traffic; then every dashboard panel query,
every dashboard variable and every recording rule runs through the Prometheus HTTP API and must return
data. A typo in a metric or label name, or a query that only works on paper, fails here.

Grafana's variables are replaced as Grafana would: "All" = ".*", $__rate_interval and $__range by a
window that covers the traffic. Rules with `offset` are evaluated at now + that offset, so the window
they look back at is the one this test filled.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.prom import RULES, Prometheus
from tests.e2e.world import CLUSTER_IP, exchange
from tests.k8s.apiserver import ApiServer
from tests.k8s.objects import wait_until
from tests.pods.agent import ROOT, AgentProc
from tests.pods.net import Pods

GRAFANA = ROOT / "deploy" / "grafana"
WINDOW = "1m"  # $__rate_interval and $__range: the whole traffic phase fits in it
DURATIONS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@pytest.fixture(scope="module")
def scraped(api: ApiServer, pods: Pods, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Agent + Prometheus, after a traffic phase that Prometheus has scraped and the rules have seen."""
    tmp: Path = tmp_path_factory.mktemp("prom")
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text(api.kubeconfig())
    agent = AgentProc(tmp, {"poll_interval": 0.5, "kubeconfig": str(kubeconfig), "node_name": "node-a",
                            "k8s_backoff_max": 2}).start()
    prom = Prometheus(tmp, f"127.0.0.1:{agent.port}").start()
    try:
        wait_until(lambda: "kubernetes: synced" in agent.get("/readyz"), 15, "agent synced with the API")
        wait_until(lambda: prom.scrapes() >= 2, 20, "prometheus scraped the agent")
        for _ in range(4):  # a few seconds of traffic, so rates over WINDOW are > 0 at query time
            exchange(pods, "10.99.0.3", 8080, server="pay")          # web -> pay pod, az-a -> az-b
            exchange(pods, CLUSTER_IP, 80, server="pay", listen=("10.99.0.3", 8081))  # via the Service
            exchange(pods, "10.99.0.5", 9002, server="stranger")    # web -> external
            pods["web"].run("client-tcp", "10.99.0.5", "9003", "--count", "2", "--request", "10",
                            "--response", "0")                       # refused: nobody listens
            time.sleep(1)
        agent.settle(polls=2)
        seen = prom.scrapes()
        wait_until(lambda: prom.scrapes() >= seen + 3, 20, "prometheus scraped the final counts")
        wait_until(lambda: bool(prom.query("flowlens:edge_bytes:rate5m > 0")), 20, "recording rules evaluated")
        yield prom
    finally:
        prom.stop()
        assert agent.stop() == 0, agent.log.read_text()


def grafana_expr(expr: str) -> str:
    expr = expr.replace("$__rate_interval", WINDOW).replace("$__range", WINDOW)
    return re.sub(r"\$\{?(\w+)\}?", ".*", expr)  # every template variable at "All"


def panel_queries() -> list[tuple[str, str, str]]:
    out = []
    for f in sorted(GRAFANA.glob("*.json")):
        d = json.loads(f.read_text())
        for p in d["panels"]:
            for t in p["targets"]:
                out.append((f"{f.stem}: {p['title']} [{t['refId']}]", t["expr"], t["format"]))
    return out


def variable_queries() -> list[tuple[str, str]]:
    out = []
    for f in sorted(GRAFANA.glob("*.json")):
        for v in json.loads(f.read_text())["templating"]["list"]:
            if v["type"] == "query":
                out.append((f"{f.stem}: ${v['name']}", v["query"]["query"]))
    return out


def recording_rules() -> list[tuple[str, str]]:
    return [(r["record"], r["expr"]) for f in sorted(RULES.glob("*.rules.yaml"))
            for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"] if "record" in r]


def offset_seconds(expr: str) -> int:
    offsets = [int(n) * DURATIONS[u] for n, u in re.findall(r"offset\s+(\d+)([smhdw])", expr)]
    return max(offsets, default=0)


def values(result: list[Any]) -> list[float]:
    return [float(r["value"][1]) for r in result]


@pytest.mark.parametrize("where, expr, fmt", panel_queries(), ids=[q[0] for q in panel_queries()])
def test_every_panel_query_returns_data(scraped: Prometheus, where: str, expr: str, fmt: str) -> None:
    result = scraped.query(grafana_expr(expr))
    assert result, f"{where}: no data for\n{grafana_expr(expr)}"


@pytest.mark.parametrize("where, query", variable_queries(), ids=[q[0] for q in variable_queries()])
def test_every_dashboard_variable_has_values(scraped: Prometheus, where: str, query: str) -> None:
    m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
    assert m, f"{where}: only label_values(metric, label) variables are used: {query}"
    got = scraped.label_values(m.group(2), grafana_expr(m.group(1)))
    assert [v for v in got if v], f"{where}: no values for {query}"


@pytest.mark.parametrize("record, expr", recording_rules(), ids=[r[0] for r in recording_rules()])
def test_every_recording_rule_returns_data(scraped: Prometheus, record: str, expr: str) -> None:
    shift = offset_seconds(expr)
    if shift:
        # what the rule will answer once its offset has passed: evaluated at now + offset
        result = scraped.query(expr, at=time.time() + shift)
    else:
        result = scraped.query(record)  # recorded by Prometheus itself from the rule file
    assert result, f"{record}: no data"


def test_numbers_agree_with_the_traffic(scraped: Prometheus) -> None:
    """Not only present: the service map's edges and the zone cost are the traffic the pods sent."""
    edges = {(r["metric"]["src_workload"], r["metric"]["dst_workload"])
             for r in scraped.query("flowlens:edge_bytes:rate5m > 0")}
    assert {("web", "pay"), ("web", "external")} <= edges
    errors = scraped.query('flowlens:edge_connect_error_ratio:rate5m{src_workload="web", dst_workload="external"}')
    assert values(errors) and 0 < values(errors)[0] < 1  # 2 refused of every 5 connects there
    pay = scraped.query('flowlens:edge_connect_error_ratio:rate5m{src_workload="web", dst_workload="pay"}')
    assert values(pay) == [0.0]
    zones = scraped.query('sum by (src_zone, dst_zone) (flowlens_zone_bytes_total{src_zone="az-a", dst_zone="az-b"})')
    assert values(zones) and values(zones)[0] >= 4 * 2 * 3 * 1_000  # 4 rounds, pod + Service, 3 x 1,000 B

"""Building blocks of the flowlens dashboards (definitions in make.py).

Dashboards query the raw flowlens_* metrics, so they work without the recording rules. Conventions:
  * the Prometheus datasource is the variable ${datasource}; no datasource uid or id is written down;
  * an edge is (src_namespace, src_workload, dst_namespace, dst_workload); bytes, connects and connect
    time come from the client's view, plus the server's view for clients outside the cluster (as in
    deploy/prometheus/recording.rules.yaml), so an edge watched from both ends counts once;
  * rates use $__rate_interval; "All" of a variable is the regex ".*".
tests/e2e/test_prometheus.py runs every query here against a real Prometheus scraping a real agent.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]
DS: Obj = {"type": "prometheus", "uid": "${datasource}"}
E = "src_namespace, src_workload, dst_namespace, dst_workload"
NS = '{side}_namespace=~"$namespace"'


# -- PromQL helpers ---------------------------------------------------------------------------------
def edge_rate(metric: str, by: str = E, extra: str = "", both_ends: bool = False) -> str:
    """sum by (`by`) of the rate of `metric` on edges with either end in $namespace: the client's view plus
    the server's view of outside clients, or with `both_ends` what each end reported (retransmits: each
    end counts its own)."""
    views = ([""] if both_ends else
             ['reporter="client", ', 'reporter="server", src_workload_kind=~"external|cidr", '])
    terms = [f"rate({metric}{{{view}{NS.format(side=side)}{extra}}}[$__rate_interval])"
             for side in ("src", "dst") for view in views]
    return f"sum by ({by}) ({' or '.join(terms)})"


def edge_bytes() -> str:
    return f'{edge_rate("flowlens_edge_sent_bytes_total")} + {edge_rate("flowlens_edge_received_bytes_total")}'


def edge_connects() -> str:
    return edge_rate("flowlens_edge_connections_total")


def edge_errors() -> str:
    failed = edge_rate("flowlens_edge_connections_total", extra=', result!="success"')
    return f"({failed} or {edge_connects()} * 0) / ({edge_connects()} > 0)"


def quantile(q: float, metric: str, by: str, sel: str) -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{sel}}}[$__rate_interval])))"


def edge_rtt_p95() -> str:
    src, dst = (quantile(0.95, "flowlens_edge_rtt_seconds", E, NS.format(side=side)) for side in ("src", "dst"))
    return f"{src} or {dst}"


def as_edge(expr: str) -> str:
    """Node Graph edge fields: source and target node ids ("namespace/workload") and id."""
    src = f'label_join(({expr}), "source", "/", "src_namespace", "src_workload")'
    tgt = f'label_join({src}, "target", "/", "dst_namespace", "dst_workload")'
    return f'label_join({tgt}, "id", " -> ", "source", "target")'


def as_nodes(expr: str) -> str:
    """Node Graph node ids: every end of the edges in `expr`; the value is bytes/s served."""
    dst = f'sum by (id) (label_join(sum by (dst_namespace, dst_workload) ({expr}), "id", "/", ' \
          '"dst_namespace", "dst_workload"))'
    src = f'sum by (id) (label_join(sum by (src_namespace, src_workload) ({expr}), "id", "/", ' \
          '"src_namespace", "src_workload"))'
    return f"{dst} or {src} * 0"


# -- Grafana JSON helpers --------------------------------------------------------------------------
def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False, fmt: str = "time_series") -> Obj:
    t: Obj = {"refId": ref, "datasource": DS, "expr": expr, "legendFormat": legend or "__auto",
              "range": not instant, "instant": instant, "format": fmt}
    return t


def panel(kind: str, title: str, targets: list[Obj], unit: str = "short", w: int = 12, h: int = 8,
          desc: str = "", **extra: Any) -> Obj:
    p: Obj = {"type": kind, "title": title, "description": desc, "datasource": DS, "targets": targets,
              "gridPos": {"w": w, "h": h},
              "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "options": {}}
    p.update(extra)
    return p


def ts(title: str, expr: str, legend: str, unit: str, desc: str = "", w: int = 12, stack: bool = False) -> Obj:
    p = panel("timeseries", title, [target(expr, legend)], unit, w=w, desc=desc)
    p["fieldConfig"]["defaults"]["custom"] = {"fillOpacity": 10, "stacking": {"mode": "normal" if stack else "none"}}
    p["options"] = {"legend": {"displayMode": "table", "placement": "right", "calcs": ["mean", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}}
    return p


def thresholds(*steps: tuple[float | None, str]) -> Obj:
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in steps]}


def table(title: str, cols: list[tuple[str, str, str]], desc: str = "", w: int = 24, h: int = 10) -> Obj:
    """Instant queries joined on their labels; cols = (header, expr, unit). Coloured cells by threshold."""
    refs = [chr(ord("A") + i) for i in range(len(cols))]
    p = panel("table", title, [target(e, ref=r, instant=True, fmt="table") for r, (_, e, _) in zip(refs, cols)],
              w=w, h=h, desc=desc)
    rename = {f"Value #{r}": name for r, (name, _, _) in zip(refs, cols)}
    p["transformations"] = [{"id": "merge", "options": {}},
                            {"id": "organize", "options": {"excludeByName": {"Time": True},
                                                           "renameByName": rename}}]
    p["fieldConfig"]["overrides"] = [
        {"matcher": {"id": "byName", "options": name},
         "properties": [{"id": "unit", "value": unit}] + (
             [{"id": "custom.cellOptions", "value": {"type": "color-text"}},
              {"id": "thresholds", "value": RED_AT[name]}] if name in RED_AT else [])}
        for name, _, unit in cols]
    p["options"] = {"showHeader": True, "sortBy": [{"displayName": cols[0][0], "desc": True}]}
    return p


RED_AT = {"error ratio": thresholds((None, "green"), (0.01, "orange"), (0.05, "red")),
          "p95 RTT": thresholds((None, "green"), (0.05, "orange"), (0.2, "red")),
          "retransmit ratio": thresholds((None, "green"), (0.005, "orange"), (0.02, "red"))}


def var_datasource() -> Obj:
    return {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "refresh": 1, "options": [], "regex": ""}


def var_query(name: str, query: str, label: str = "") -> Obj:
    return {"name": name, "label": label or name, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": f"{name}-var"}, "definition": query, "includeAll": True,
            "multi": True, "allValue": ".*", "current": {}, "refresh": 2, "sort": 1, "hide": 0, "regex": "",
            "options": []}


def dashboard(uid: str, title: str, desc: str, panels: list[Obj], variables: list[Obj]) -> Obj:
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["id"] = i
        p["gridPos"].update({"x": x, "y": y})
        x, row_h = x + w, max(row_h, h)
    return {"uid": uid, "title": title, "description": desc, "tags": ["flowlens"], "timezone": "browser",
            "editable": True, "graphTooltip": 1, "schemaVersion": 39, "version": 1, "refresh": "30s",
            "time": {"from": "now-1h", "to": "now"}, "annotations": {"list": []},
            "links": [{"type": "dashboards", "tags": ["flowlens"], "asDropdown": True, "title": "flowlens"}],
            "templating": {"list": [var_datasource(), *variables]}, "panels": panels}


NAMESPACE = var_query("namespace", "label_values(flowlens_edge_sent_bytes_total, src_namespace)")

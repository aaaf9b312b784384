"""Write the five flowlens dashboards (deploy/grafana/*.json) from the definitions below.

    python deploy/grafana/make.py          (make dashboards; tests fail when the JSON is stale)

Conventions and PromQL helpers: lib.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lib import (
    NAMESPACE,
    Obj,
    as_edge,
    as_nodes,
    dashboard,
    edge_bytes,
    edge_connects,
    edge_errors,
    edge_rate,
    edge_rtt_p95,
    panel,
    quantile,
    table,
    target,
    thresholds,
    ts,
    var_query,
)

EDGE = "{{src_workload}} -> {{dst_workload}}"


def service_map() -> Obj:
    graph = panel("nodeGraph", "Service map", [
        target(as_nodes(edge_bytes()), ref="nodes", instant=True, fmt="table"),
        target(as_edge(edge_bytes()), ref="bytes", instant=True, fmt="table"),
        target(as_edge(edge_connects()), ref="connects", instant=True, fmt="table"),
        target(as_edge(edge_errors()), ref="errors", instant=True, fmt="table"),
        target(as_edge(edge_rtt_p95()), ref="rtt", instant=True, fmt="table"),
    ], w=24, h=16, desc="Nodes are workloads, edges go client -> server. Edge: bytes/s (main), p95 RTT "
                        "(second), connects/s and error ratio (details); colour = connect error ratio.")
    keep = "^(id|source|target|Value #.*)$"
    graph["transformations"] = [
        {"id": "filterFieldsByName", "options": {"include": {"pattern": keep}}},
        {"id": "merge", "options": {}, "filter": {"id": "byRefId", "options": "/^(bytes|connects|errors|rtt)$/"}},
        {"id": "organize", "options": {"renameByName": {
            "Value #nodes": "mainstat", "Value #bytes": "mainstat", "Value #rtt": "secondarystat",
            "Value #connects": "detail__connects_per_s", "Value #errors": "color"}}},
    ]
    graph["fieldConfig"]["overrides"] = [
        {"matcher": {"id": "byName", "options": "mainstat"}, "properties": [{"id": "unit", "value": "Bps"}]},
        {"matcher": {"id": "byName", "options": "secondarystat"}, "properties": [{"id": "unit", "value": "s"}]},
        {"matcher": {"id": "byName", "options": "color"}, "properties": [
            {"id": "color", "value": {"mode": "thresholds"}},
            {"id": "thresholds", "value": thresholds((None, "green"), (0.01, "orange"), (0.05, "red"))}]},
    ]
    graph["options"] = {"nodes": {"mainStatUnit": "Bps"}, "edges": {"mainStatUnit": "Bps", "secondaryStatUnit": "s"}}
    edges = table("Edges", [
        ("bytes/s", edge_bytes(), "Bps"),
        ("connects/s", edge_connects(), "short"),
        ("error ratio", edge_errors(), "percentunit"),
        ("p95 RTT", edge_rtt_p95(), "s"),
    ], desc="Every edge with its health; red: error ratio >= 5% or p95 RTT >= 200 ms.")
    return dashboard("flowlens-service-map", "flowlens / Service map",
                     "Who talks to whom, how much and how healthy, from the kernel's view of every socket.",
                     [graph, edges], [NAMESPACE])


def pod_latency() -> Obj:
    sel = 'namespace=~"$namespace", pod=~"$pod"'
    by = "namespace, pod"
    rtt, conn = "flowlens_pod_rtt_seconds", "flowlens_pod_connect_duration_seconds"
    heat_rtt = panel("heatmap", "RTT distribution", [
        target(f'sum by (le) (rate({rtt}_bucket{{{sel}}}[$__rate_interval]))', "{{le}}", fmt="heatmap")],
        unit="s", desc="Smoothed RTT samples of the selected pods' sockets.",
        options={"calculate": False, "yAxis": {"unit": "s"}, "cellGap": 1, "color": {"scheme": "Oranges"}})
    heat_conn = panel("heatmap", "Connect time distribution", [
        target(f'sum by (le) (rate({conn}_bucket{{{sel}}}[$__rate_interval]))', "{{le}}", fmt="heatmap")],
        unit="s", desc="SYN sent -> established, client side.",
        options={"calculate": False, "yAxis": {"unit": "s"}, "cellGap": 1, "color": {"scheme": "Blues"}})
    return dashboard("flowlens-pod-latency", "flowlens / Pod latency",
                     "Network round-trip and connect time per pod, from the kernel's smoothed RTT.", [
        ts("p95 RTT per pod", quantile(0.95, rtt, by, sel), "{{namespace}}/{{pod}}", "s"),
        ts("p50 RTT per pod", quantile(0.5, rtt, by, sel), "{{namespace}}/{{pod}}", "s"),
        heat_rtt,
        ts("p99 RTT per pod", quantile(0.99, rtt, by, sel), "{{namespace}}/{{pod}}", "s"),
        ts("p95 connect time per pod", quantile(0.95, conn, by, sel), "{{namespace}}/{{pod}}", "s"),
        heat_conn,
        table("Pods by p95 RTT", [("p95 RTT", quantile(0.95, rtt, by, sel), "s"),
                                  ("p95 connect", quantile(0.95, conn, by, sel), "s"),
                                  ("active connections", f"sum by ({by}) (flowlens_pod_active_connections{{{sel}}})",
                                   "short")]),
    ], [var_query("namespace", "label_values(flowlens_pod_rtt_seconds_count, namespace)"),
        var_query("pod", 'label_values(flowlens_pod_rtt_seconds_count{namespace=~"$namespace"}, pod)')])


def cross_zone() -> Obj:
    z = "flowlens_zone_bytes_total", "flowlens_zone_cost_dollars_total"
    # the cost series exist only for pairs of two different, known zones: they select the crossing bytes
    cross = f"rate({z[0]}[$__rate_interval]) and on (src_zone, dst_zone) {z[1]}"
    stat = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value", "graphMode": "area"}
    return dashboard("flowlens-cross-zone", "flowlens / Cross-zone traffic and cost",
                     "Bytes between availability zones (client's view, once per edge) and what they cost at "
                     "config.zone_price_per_gb.", [
        panel("stat", "Cross-zone cost, $/month at this rate", [target(
            f"sum(rate({z[1]}[$__rate_interval])) * 3600 * 24 * 30")], "currencyUSD", w=8, h=5, options=stat),
        panel("stat", "Cross-zone traffic", [target(
            f"sum({cross})")], "Bps", w=8, h=5, options=stat),
        panel("stat", "Share of traffic crossing zones", [target(
            f"sum({cross}) / sum(rate({z[0]}[$__rate_interval]))")],
            "percentunit", w=8, h=5, options=stat),
        ts("Bytes/s by zone pair", f"sum by (src_zone, dst_zone) (rate({z[0]}[$__rate_interval]))",
           "{{src_zone}} -> {{dst_zone}}", "Bps", w=24, stack=True),
        table("Cost by zone pair", [
            ("$/hour", f"sum by (src_zone, dst_zone) (rate({z[1]}[$__rate_interval])) * 3600", "currencyUSD"),
            ("bytes in range", f"sum by (src_zone, dst_zone) (increase({z[0]}[$__range]))", "decbytes"),
            ("$ in range", f"sum by (src_zone, dst_zone) (increase({z[1]}[$__range]))", "currencyUSD"),
        ]),
    ], [])


def chatty() -> Obj:
    conn = edge_connects()
    retrans = edge_rate("flowlens_edge_retransmits_total", both_ends=True)
    tcp = ', protocol="tcp"'
    segs = (f'({edge_rate("flowlens_edge_sent_bytes_total", extra=tcp)} + '
            f'{edge_rate("flowlens_edge_received_bytes_total", extra=tcp)}) / 1448')
    return dashboard("flowlens-chatty", "flowlens / Chatty services and top talkers",
                     "Who opens the most connections, moves the most bytes, fans out widest and retransmits most.",
                     [
        ts("Top 10 edges by connects/s", f"topk(10, {conn})", EDGE, "short"),
        ts("Top 10 edges by bytes/s", f"topk(10, {edge_bytes()})", EDGE, "Bps"),
        ts("Bytes per connection (lowest 10: connection churn)", f"bottomk(10, ({edge_bytes()}) / ({conn} > 0))",
           EDGE, "decbytes", desc="Few bytes per connection: candidates for connection reuse (keep-alive, pools)."),
        ts("Fan-out: servers per client workload",
           f"count by (src_namespace, src_workload) ({edge_bytes()} > 0)", "{{src_namespace}}/{{src_workload}}",
           "short"),
        ts("Top 10 edges by retransmit ratio", f"topk(10, ({retrans}) / (({segs}) > 0))", EDGE, "percentunit",
           desc="Retransmitted / sent segments, an upper bound (segments estimated from bytes at a 1448-byte MSS)."),
        ts("Resets/s by edge and direction",
           f"topk(10, sum by ({'src_workload, dst_workload, direction'}) "
           f'(rate(flowlens_edge_resets_total{{src_namespace=~"$namespace"}}[$__rate_interval])))',
           "{{src_workload}} -> {{dst_workload}} {{direction}}", "short"),
    ], [NAMESPACE])


def agent_health() -> Obj:
    inst = 'instance=~"$instance"'
    return dashboard("flowlens-agent-health", "flowlens / Agent health",
                     "What flowlens itself costs and whether it sees everything.", [
        ts("Agent CPU (cores)", f"rate(process_cpu_seconds_total{{{inst}}}[$__rate_interval])", "{{instance}}",
           "short", w=8),
        ts("Agent memory (RSS)", f"process_resident_memory_bytes{{{inst}}}", "{{instance}}", "bytes", w=8),
        ts("Kernel CPU in BPF programs (cores)",
           f"sum by (instance) (rate(flowlens_agent_bpf_run_seconds_total{{{inst}}}[$__rate_interval])) / "
           f"on (instance) (rate(flowlens_agent_bpf_sampled_seconds_total{{{inst}}}[$__rate_interval]) > 0)",
           "{{instance}}", "short", w=8, desc="Needs bpf_stats (CAP_SYS_ADMIN or kernel.bpf_stats_enabled=1); "
           "measured bpf_stats_sample of the time and scaled up."),
        ts("BPF cost per event, by program",
           f"sum by (program) (rate(flowlens_agent_bpf_run_seconds_total{{{inst}}}[$__rate_interval])) / "
           f"sum by (program) (rate(flowlens_agent_bpf_runs_total{{{inst}}}[$__rate_interval]) > 0)",
           "{{program}}", "s", desc="Budget: 300 ns per event."),
        ts("BPF events/s, by program",
           f"sum by (program) (rate(flowlens_agent_bpf_runs_total{{{inst}}}[$__rate_interval]) / on (instance) "
           f"group_left () (rate(flowlens_agent_bpf_sampled_seconds_total{{{inst}}}[$__rate_interval]) > 0))",
           "{{program}}", "short", desc="Runs counted while sampled, scaled up to the whole time."),
        ts("Edge map fill", f"flowlens_agent_map_entries{{{inst}}} / flowlens_agent_map_capacity{{{inst}}}",
           "{{instance}} {{map}}", "percentunit", w=8),
        ts("Lost and folded updates/s",
           f"sum by (instance, reason) (rate(flowlens_agent_lost_updates_total{{{inst}}}[$__rate_interval])) or "
           f'label_replace(rate(flowlens_agent_series_folded_total{{{inst}}}[$__rate_interval]), "reason", '
           '"series_folded", "", "") or '
           f'label_replace(sum by (instance) (rate(flowlens_agent_bpf_recursion_misses_total{{{inst}}}'
           '[$__rate_interval])), "reason", "bpf_recursion_miss", "", "")', "{{instance}} {{reason}}", "short", w=8,
           desc="bpf_recursion_miss: kernel events skipped because a BPF program was already running on that CPU."),
        ts("Series vs budget", f"flowlens_agent_series{{{inst}}} / flowlens_agent_series_budget{{{inst}}}",
           "{{instance}}", "percentunit", w=8),
        ts("Poll duration", f"flowlens_agent_poll_duration_seconds{{{inst}}}", "{{instance}}", "s", w=8),
        ts("Kubernetes watches up", f"flowlens_agent_k8s_watch_up{{{inst}}}", "{{instance}} {{resource}}",
           "short", w=8),
        ts("Poll errors/s", f"rate(flowlens_agent_poll_errors_total{{{inst}}}[$__rate_interval])",
           "{{instance}}", "short", w=8),
        table("Features", [("enabled", f"flowlens_agent_feature_enabled{{{inst}}}", "bool_yes_no")],
              desc="0 = not attached on that node; reason says why.", h=8),
    ], [var_query("instance", "label_values(flowlens_agent_build_info, instance)")])


DASHBOARDS = {"service-map": service_map, "pod-latency": pod_latency, "cross-zone": cross_zone,
              "chatty": chatty, "agent-health": agent_health}


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    for name, build in DASHBOARDS.items():
        (out / f"{name}.json").write_text(json.dumps(build(), indent=2) + "\n")


if __name__ == "__main__":
    main()

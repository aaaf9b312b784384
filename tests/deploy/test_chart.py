"""The chart: renders with Helm's engine for default and all-features values, lints clean, every object
validates against the Kubernetes schemas, least privilege, values map onto the agent settings."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import kubernetes_validate
import pytest
import yaml

from agent.config import Settings, load
from agent.identity.k8s import PATHS
from tests.deploy.chart import ALL_FEATURES, CHART, Obj, agent_caps, daemonset, kind, notes, render, values_file
from tests.pods.agent import ROOT

K8S_VERSION = "1.30"  # oldest Kubernetes still in support when this was written; schemas are in the wheel
CRDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
VALUES = {"default": {}, "all-features": values_file(ALL_FEATURES)}


@pytest.fixture(scope="module", params=list(VALUES))
def rendered(request: pytest.FixtureRequest) -> tuple[Obj, list[Obj]]:
    return VALUES[request.param], render(VALUES[request.param])


def pod_spec(objs: list[Obj]) -> Obj:
    spec: Obj = daemonset(objs)["spec"]["template"]["spec"]
    return spec


def test_lint_is_clean() -> None:
    import helm_python as helm

    for name, values in VALUES.items():
        report = helm.lint(CHART, values, strict=True)
        bad = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert bad == [], f"{name}: {bad}"


def test_every_object_validates(rendered: tuple[Obj, list[Obj]]) -> None:
    _, objs = rendered
    for o in objs:
        if o["kind"] in CRDS:
            continue  # not in the Kubernetes schemas; checked below
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)
    kinds = {o["kind"] for o in objs}
    assert {"DaemonSet", "ConfigMap", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service"} <= kinds


def test_security_context_is_least_privilege(rendered: tuple[Obj, list[Obj]]) -> None:
    values, objs = rendered
    spec = pod_spec(objs)
    assert spec["hostPID"] is False and "hostIPC" not in spec
    (c,) = spec["containers"]
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    sys_admin = values.get("capabilities", {}).get("sysAdmin")
    want = {"BPF", "PERFMON", "NET_ADMIN"} | ({"SYS_ADMIN"} if sys_admin else set())
    assert set(sc["capabilities"]["add"]) == want
    host = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert host == {"cgroup": "/sys/fs/cgroup", "btf": "/sys/kernel/btf"}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert all(mounts[n]["readOnly"] is True for n in host)
    assert {"operator": "Exists"} in spec["tolerations"]


def test_host_pid_only_when_asked() -> None:
    assert pod_spec(render({"hostPID": True}))["hostPID"] is True
    assert agent_caps() == ["BPF", "PERFMON", "NET_ADMIN"]


def test_values_map_one_to_one_onto_settings(rendered: tuple[Obj, list[Obj]], tmp_path: Any) -> None:
    values, objs = rendered
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(defaults["config"]) == set(Settings.model_fields)
    (cm,) = [o for o in kind(objs, "ConfigMap") if "flowlens.yaml" in o["data"]]
    path = tmp_path / "flowlens.yaml"
    path.write_text(cm["data"]["flowlens.yaml"])
    s = load(path, env={})  # the agent accepts exactly what the chart writes
    for key, want in values.get("config", {}).items():
        got = getattr(s, key)
        assert (got if key != "names" else [r.model_dump() for r in got]) == want
    (c,) = pod_spec(objs)["containers"]
    assert c["ports"][0]["containerPort"] == s.listen_addr()[1]
    assert c["args"] == ["run", "--config", "/etc/flowlens/flowlens.yaml"]
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in c["env"]


def test_schema_is_generated_from_settings() -> None:
    out = subprocess.run([sys.executable, "deploy/helm/schema.py"], cwd=ROOT, capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(ROOT)}).stdout
    assert json.loads(out) == json.loads((CHART / "values.schema.json").read_text()), "run `make chart-schema`"


@pytest.mark.parametrize("bad, where", [({"config": {"poll_interval": 0}}, "/config/poll_interval"),
                                        ({"config": {"pol_interval": 5}}, "pol_interval"),
                                        ({"monitor": {"kind": "Both"}}, "/monitor/kind"),
                                        ({"config": {"names": [{"cidr": "10.0.0.0/8"}]}}, "/config/names/0")])
def test_bad_values_are_refused_naming_the_key(bad: Obj, where: str) -> None:
    import helm_python as helm

    with pytest.raises(helm.HelmError, match=where):
        render(bad)


def test_cluster_role_is_read_only_and_exactly_what_identity_calls() -> None:
    want = {(group, res) for res, (group, _) in PATHS.items()}
    (role,) = kind(render(), "ClusterRole")
    got = set()
    for rule in role["rules"]:
        assert rule["verbs"] == ["get", "list", "watch"]
        got |= {(g, r) for g in rule["apiGroups"] for r in rule["resources"]}
    assert got == want


def test_monitor_toggle_selects_the_agent_pods() -> None:
    assert not kind(render(), "ServiceMonitor") and not kind(render(), "PodMonitor")
    ann = daemonset(render())["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "9464"
    for k in ("ServiceMonitor", "PodMonitor"):
        objs = render({"monitor": {"kind": k, "labels": {"release": "prom"}}})
        (mon,) = kind(objs, k)
        assert mon["metadata"]["labels"]["release"] == "prom"
        pod_labels = daemonset(objs)["spec"]["template"]["metadata"]["labels"]
        assert mon["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        ends = mon["spec"].get("endpoints") or mon["spec"]["podMetricsEndpoints"]
        assert ends[0]["port"] == "metrics"
        assert "prometheus.io/scrape" not in daemonset(objs)["spec"]["template"]["metadata"]["annotations"]
    with pytest.raises(Exception, match="service.enabled"):
        render({"monitor": {"kind": "ServiceMonitor"}, "service": {"enabled": False}})


def test_prometheus_rule_carries_the_tested_rule_files() -> None:
    assert not kind(render(), "PrometheusRule")
    (rule,) = kind(render({"prometheusRule": {"enabled": True}}), "PrometheusRule")
    files = sorted((ROOT / "deploy" / "prometheus").glob("*.rules.yaml"))
    assert files
    want = [g for f in files for g in yaml.safe_load(f.read_text())["groups"]]
    assert rule["spec"]["groups"] == want


def test_dashboards_are_configmaps_for_the_grafana_sidecar() -> None:
    files = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
    assert len(files) == 5
    cms = [o for o in kind(render(values_file(ALL_FEATURES)), "ConfigMap") if "grafana_dashboard" in
           o["metadata"]["labels"]]
    assert sorted(k for cm in cms for k in cm["data"]) == sorted(f.name for f in files)
    for cm in cms:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1" and cm["metadata"]["namespace"] == "grafana"
        (name, text), = cm["data"].items()
        assert json.loads(text) == json.loads((ROOT / "deploy" / "grafana" / name).read_text())
    assert not [o for o in kind(render({"dashboards": {"enabled": False}}), "ConfigMap")
                if "grafana_dashboard" in o["metadata"]["labels"]]


def test_notes_say_what_to_do_next() -> None:
    text = notes()
    assert "kubectl -n obs get daemonset fl-flowlens" in text and "/readyz stays 200" in text
    assert "monitor.kind=ServiceMonitor" in text and "Service map" in text


def test_notes_warn_of_memory_above_the_default_series_budget() -> None:
    """A raised series_budget gets the expected peak RSS (52 MB + 3.4 MB per 1,000 series, from
    bench/results) beside the memory limit; the default budget, which the limit was sized for, none."""
    assert "Memory:" not in notes()
    text = notes({"config": {"series_budget": 100000}})
    assert "series_budget is 100000" in text and "expect\n   ~392 MB" in text
    assert "resources.limits.memory is 384Mi" in text
    assert "limits.memory is not set" in notes({"config": {"series_budget": 30000}, "resources": {"limits": None}})

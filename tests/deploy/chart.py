"""The Helm chart rendered by the real Helm engine (helm-python-sdk bundles Helm's Go SDK)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.pods.agent import ROOT

CHART = ROOT / "deploy" / "helm" / "flowlens"
ALL_FEATURES = CHART / "ci" / "all-features-values.yaml"
Obj = dict[str, Any]


def values_file(path: Path) -> Obj:
    data: Obj = yaml.safe_load(path.read_text())
    return data


def _helm() -> Any:
    import helm_python as helm

    helm.disable_logging()  # else Go's logger prints a line per symlinked dir (dashboards/, rules/)
    return helm


def _rendered(values: Obj | None, namespace: str = "obs") -> dict[str, str]:
    """Template path -> rendered text, as `helm install fl` into `namespace` would render it."""
    out: dict[str, str] = _helm().Chart.load(CHART).render(values or {}, name="fl", namespace=namespace,
                                                             is_install=True)
    return out


def render(values: Obj | None = None, namespace: str = "obs") -> list[Obj]:
    """Every object the chart renders for `values` (NOTES.txt left out)."""
    objs: list[Obj] = []
    for path, text in sorted(_rendered(values, namespace).items()):
        if path.endswith("NOTES.txt"):
            continue
        objs.extend(d for d in yaml.safe_load_all(text) if d)
    return objs


def notes(values: Obj | None = None) -> str:
    return _rendered(values)["flowlens/templates/NOTES.txt"]


def kind(objs: list[Obj], k: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == k]


def daemonset(objs: list[Obj]) -> Obj:
    (ds,) = kind(objs, "DaemonSet")
    return ds


def agent_caps(values: Obj | None = None) -> list[str]:
    """Capabilities the chart adds to the agent container (Kubernetes names: BPF, PERFMON, ...)."""
    (c,) = daemonset(render(values))["spec"]["template"]["spec"]["containers"]
    return list(c["securityContext"]["capabilities"]["add"])

"""Write the chart's values.schema.json: `config` is generated from the agent's Settings model, so the
values map onto the settings key for key and a value the agent would refuse is refused at
`helm install` time, naming the key. The rest (how the DaemonSet runs) is written here by hand.

    python deploy/helm/schema.py > deploy/helm/flowlens/values.schema.json   (make chart-schema)

tests/deploy/test_chart.py fails when the committed file differs from this output.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from agent.config import Settings

Obj = dict[str, Any]


def _inline(node: Any, defs: Obj) -> Any:
    """Replace pydantic's $refs with their definitions and drop titles (the descriptions say it all)."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(defs[node["$ref"].split("/")[-1]], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k not in ("title", "$defs")}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def config_schema() -> Obj:
    raw = Settings.model_json_schema()
    out: Obj = _inline(raw, raw.get("$defs", {}))
    out["additionalProperties"] = False
    out["description"] = "Agent settings, one to one (agent/config.py); see the README's configuration table."
    return out


def obj(props: Obj, required: list[str] | None = None, extra: bool = False) -> Obj:
    out: Obj = {"type": "object", "properties": props, "additionalProperties": extra}
    if required:
        out["required"] = required
    return out


STR: Obj = {"type": "string"}
BOOL: Obj = {"type": "boolean"}
MAP: Obj = {"type": "object", "additionalProperties": {"type": "string"}}
ANY_OBJ: Obj = {"type": "object"}
ANY_LIST: Obj = {"type": "array"}


def schema() -> Obj:
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "flowlens chart values",
        **obj({
            "image": obj({"repository": STR, "tag": STR,
                          "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}}, ["repository"]),
            "imagePullSecrets": ANY_LIST,
            "nameOverride": STR,
            "fullnameOverride": STR,
            "config": config_schema(),
            "capabilities": obj({"sysAdmin": {**BOOL, "description": "add CAP_SYS_ADMIN (see the chart README)"}}),
            "seccompProfile": obj({"type": {"enum": ["Unconfined", "RuntimeDefault", "Localhost"]},
                                   "localhostProfile": STR}, ["type"]),
            "hostNetwork": {**BOOL, "description": "node conntrack for ClusterIP backends; node-IP scrape target"},
            "hostPID": {**BOOL, "description": "not needed by the agent; off unless you have a reason"},
            "resources": ANY_OBJ,
            "tolerations": ANY_LIST,
            "nodeSelector": MAP,
            "affinity": ANY_OBJ,
            "priorityClassName": STR,
            "podAnnotations": MAP,
            "podLabels": MAP,
            "updateStrategy": ANY_OBJ,
            "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
            "serviceAccount": obj({"create": BOOL, "name": STR, "annotations": MAP}),
            "rbac": obj({"create": BOOL}),
            "service": obj({"enabled": BOOL, "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                            "annotations": MAP}),
            "monitor": obj({"kind": {"enum": ["none", "ServiceMonitor", "PodMonitor"]},
                            "interval": STR, "scrapeTimeout": STR, "labels": MAP}),
            "prometheusRule": obj({"enabled": BOOL, "labels": MAP}),
            "dashboards": obj({"enabled": BOOL, "label": STR, "labelValue": STR, "folder": STR,
                               "namespace": STR}),
        }, ["image", "config"]),
    }


def main() -> None:
    json.dump(schema(), sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

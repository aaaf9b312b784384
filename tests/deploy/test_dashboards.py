"""Dashboards: current with their generator, schema-clean structure, the datasource only ever the
${datasource} variable (no hard-coded datasource uid, id or name anywhere)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pods.agent import ROOT

GRAFANA = ROOT / "deploy" / "grafana"
FILES = sorted(GRAFANA.glob("*.json"))
DS = {"type": "prometheus", "uid": "${datasource}"}


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def datasources(node: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """Every value of a "datasource" key, with where it is."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "datasource":
                yield where, v
            yield from datasources(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from datasources(v, f"{where}[{i}]")


def test_json_is_what_the_generator_writes(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(GRAFANA / "make.py"), str(tmp_path)], check=True)
    made = sorted(p.name for p in tmp_path.glob("*.json"))
    assert made == [p.name for p in FILES] and len(made) == 5
    for name in made:
        assert load(tmp_path / name) == load(GRAFANA / name), f"{name} is stale: run `make dashboards`"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_structure(path: Path) -> None:
    d = load(path)
    assert d["uid"].startswith("flowlens-") and len(d["uid"]) <= 40 and d["title"].startswith("flowlens / ")
    assert "id" not in d and "__inputs" not in d  # importable anywhere, no instance-specific ids
    assert isinstance(d["schemaVersion"], int) and d["tags"] == ["flowlens"]
    variables = d["templating"]["list"]
    assert variables[0] == {**variables[0], "name": "datasource", "type": "datasource", "query": "prometheus"}
    names = {v["name"] for v in variables}
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)) and d["panels"]
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        assert p["title"] and p["type"] in {"timeseries", "table", "stat", "heatmap", "nodeGraph"}
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs))
        for t in p["targets"]:
            assert "flowlens_" in t["expr"] or "process_" in t["expr"], t["expr"]
            used = set(re.findall(r"\$\{?(\w+)", t["expr"]))
            assert used <= names | {"__rate_interval", "__range"}, f"{p['title']}: unknown variable {used}"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_no_hard_coded_datasource(path: Path) -> None:
    d = load(path)
    found = list(datasources(d))
    assert found
    for where, ds in found:
        assert ds == DS, f"{path.name}{where}: datasource {ds!r} is not the ${{datasource}} variable"


def test_service_map_is_a_node_graph_of_workloads() -> None:
    d = load(GRAFANA / "service-map.json")
    (graph,) = [p for p in d["panels"] if p["type"] == "nodeGraph"]
    refs = {t["refId"] for t in graph["targets"]}
    assert refs == {"nodes", "bytes", "connects", "errors", "rtt"}
    assert all(t["format"] == "table" and t["instant"] for t in graph["targets"])
    rename = next(t for t in graph["transformations"] if t["id"] == "organize")["options"]["renameByName"]
    assert {"mainstat", "secondarystat", "color"} <= set(rename.values())

"""Prometheus rules: `promtool check rules` and `promtool test rules` (every alert fires on input that
should fire it and stays silent otherwise; deploy/prometheus/tests/*.test.yaml)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.pods.agent import ROOT

RULES = ROOT / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.skip("promtool missing (Debian package prometheus; make test installs it)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=300)


def test_rules_are_valid() -> None:
    files = sorted(str(p) for p in RULES.glob("*.rules.yaml"))
    r = promtool("check", "rules", *files)
    assert r.returncode == 0, r.stdout + r.stderr


def test_rule_unit_tests_pass() -> None:
    tests = sorted(str(p) for p in (RULES / "tests").glob("*.test.yaml"))
    assert tests
    r = promtool("test", "rules", *tests)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    alerts = {r["alert"] for f in RULES.glob("*.rules.yaml") for g in yaml.safe_load(f.read_text())["groups"]
              for r in g["rules"] if "alert" in r}
    fired: set[str] = set()
    silent: set[str] = set()
    for f in (RULES / "tests").glob("*.test.yaml"):
        for t in yaml.safe_load(f.read_text())["tests"]:
            for case in t.get("alert_rule_test", []):
                # an expected list names every alert of that name at that time, so a list that fires on
                # one instance or edge also proves the other input series stay silent
                (fired if case["exp_alerts"] else silent).add(case["alertname"])
                multi = {s["series"].split("{")[0] for s in t["input_series"]}
                if case["exp_alerts"] and len(t["input_series"]) > len(multi):
                    silent.add(case["alertname"])
    assert fired == alerts, f"alerts never fired in tests: {alerts - fired}"
    assert silent == alerts, f"alerts never shown silent: {alerts - silent}"

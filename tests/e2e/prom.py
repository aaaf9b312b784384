"""A real Prometheus server (Debian package `prometheus`) for the e2e tier: scrapes the agent every
second and evaluates deploy/prometheus's rules every second (their group intervals are the only thing
changed), queried through its HTTP API."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.pods.agent import ROOT, free_port

RULES = ROOT / "deploy" / "prometheus"


class Prometheus:
    def __init__(self, tmp: Path, target: str) -> None:
        self.port = free_port()
        self.tmp = tmp
        rule_files = []
        for f in sorted(RULES.glob("*.rules.yaml")):
            data = yaml.safe_load(f.read_text())
            for g in data["groups"]:
                g["interval"] = "1s"
            (tmp / f.name).write_text(yaml.safe_dump(data))
            rule_files.append(str(tmp / f.name))
        cfg = {"global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
               "rule_files": rule_files,
               "scrape_configs": [{"job_name": "flowlens", "static_configs": [{"targets": [target]}]}]}
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> Prometheus:
        exe = shutil.which("prometheus")
        assert exe, "prometheus missing (Debian package prometheus; make test installs it)"
        self.log = self.tmp / "prometheus.log"
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen([exe, f"--config.file={self.tmp / 'prometheus.yml'}",
                                          f"--storage.tsdb.path={self.tmp / 'data'}",
                                          f"--web.listen-address=127.0.0.1:{self.port}"],
                                         stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{path} {params}: HTTP {e.code}: {e.read().decode()}") from e
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[Any]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        result: list[Any] = data["result"]
        return result

    def label_values(self, label: str, match: str) -> list[str]:
        values: list[str] = self.api(f"label/{label}/values", **{"match[]": match})
        return values

    def scrapes(self) -> float:
        """Scrapes of the agent so far (0 before the first)."""
        r = self.query('sum(count_over_time(up{job="flowlens"}[1h]))')
        return float(r[0]["value"][1]) if r else 0.0

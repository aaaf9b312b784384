"""bench.repeat pools independent readings of one load into a verdict with a Student t interval."""

import json
import shutil
from pathlib import Path
from statistics import median
from typing import Any

import pytest

from agent.preflight import default_bpf_dir
from bench import throughput
from bench.repeat import build_of, effective, matching, pool, pooled_lines, reading
from bench.throughput import Shape


def test_pool_of_known_margins() -> None:
    # mean -1, sample standard deviation 1 (deviations -1, 0, +1), se 1/sqrt(3), t(2 df) 4.303
    p = pool([-2.0, -1.0, 0.0])
    assert p.n == 3 and p.mean == pytest.approx(-1.0) and p.se == pytest.approx(3 ** -0.5)
    assert p.lo == pytest.approx(-1 - 4.303 / 3 ** 0.5) and p.hi == pytest.approx(-1 + 4.303 / 3 ** 0.5)
    assert p.over == 2 and p.median == -1.0
    assert p.verdict() == "not settled"


def test_verdict_needs_the_whole_interval_on_one_side() -> None:
    assert pool([-1.0, -1.2, -0.8, -1.1, -0.9]).verdict() == "over the line"
    assert pool([0.5, 0.7, 0.6, 0.4]).verdict() == "under the line"
    assert pool([-3.5, 1.4, 0.2, -0.3]).verdict() == "not settled"


def test_pool_refuses_one_reading() -> None:
    with pytest.raises(ValueError, match="at least two"):
        pool([0.3])


def test_reading_margin_from_the_windows() -> None:
    # agent serves 98% of off (2% overhead), tcpdump 90% (10%, a fifth is 2%): margin 0 points
    off = [1000.0, 1200.0, 800.0]
    res = Shape(rps={"off": off, "agent": [x * 0.98 for x in off], "capture": [x * 0.90 for x in off]})
    rec = reading(res)
    assert rec["agent"] == pytest.approx(0.98) and rec["capture"] == pytest.approx(0.90)
    assert rec["margin"] == pytest.approx(0.0, abs=1e-9)
    assert rec["noise"] == pytest.approx((1200 - 800) / median(off))
    assert rec["rps"]["off"] == [1000, 1200, 800]
    json.dumps(rec)  # what --out keeps


def rec(load: str, margin: float, settings: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    """A reading as bench.repeat writes it, of the current method and effective settings unless ``more``."""
    return {"load": load, "settings": settings or {}, "effective": effective(settings or {}), "margin": margin,
            "build": "b1", "method": throughput.METHOD, **more}


def test_matching_keeps_the_load_settings_build_and_method_asked_for() -> None:
    old = rec("churn/pods", 7.0)
    del old["method"]  # an earlier method (no field): never pooled with this one
    lines = [json.dumps(r) for r in (rec("churn/pods", -0.5), rec("churn/loopback", 1.0),
                                     rec("churn/pods", 2.0, {"bpf_dir": "/v"}), rec("churn/pods", 0.25, build="b2"),
                                     old)] + [""]
    assert [r["margin"] for r in matching(lines, {}, "churn/pods")] == [-0.5, 0.25]
    assert [r["margin"] for r in matching(lines, {}, "churn/pods", build="b1")] == [-0.5]
    assert [r["margin"] for r in matching(lines, {"bpf_dir": "/v"}, "churn/pods")] == [2.0]


def test_a_changed_default_is_a_new_pool() -> None:
    # the same (empty) --settings, but read when a default was another: not the same measure
    then = rec("churn/pods", 1.5)
    then["effective"] = {**then["effective"], "bpf_stats_sample": 0.5}
    lines = [json.dumps(r) for r in (then, rec("churn/pods", -0.5), {**rec("churn/pods", 3.0), "effective": None})]
    assert [r["margin"] for r in matching(lines, {}, "churn/pods")] == [-0.5]
    assert [r["margin"] for r in matching(lines, {"bpf_stats_sample": 0.5}, "churn/pods")] == [1.5]


def test_build_names_the_objects_the_agent_would_load(tmp_path: Path) -> None:
    shipped = default_bpf_dir()
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(shipped, a)
    shutil.copytree(shipped, b)
    assert build_of({"bpf_dir": str(a)}) == build_of({}) == build_of({"bpf_dir": str(b)})
    shutil.copy(shipped / "tcpevents.bpf.o", b / "lifecycle.bpf.o")  # other programs under the same name
    assert build_of({"bpf_dir": str(a)}) != build_of({"bpf_dir": str(b)})


def test_matching_names_a_bad_line() -> None:
    with pytest.raises(SystemExit, match="line 2: not a reading"):
        matching([json.dumps({"load": "churn/pods", "settings": {}, "margin": 0}), "{not json"], {}, "churn/pods")


def test_table_lines_pool_each_load_of_the_default_settings(tmp_path: Path) -> None:
    path = tmp_path / "readings.jsonl"
    recs = [rec("churn/pods", m, date=d, commit="abc") for m, d in ((-1.0, "d1"), (-1.2, "d2"), (-0.8, "d3"))]
    recs += [rec("churn/pods", 9.0, {"bpf_dir": "/v"}), rec("churn/pods", 9.0, build="old"),
             {"load": "churn/pods", "settings": {}, "margin": 9.0},  # method 1, build unnamed
             rec("churn/loopback", 1.0)]  # one reading: not pooled
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    lines = pooled_lines(path, "b1")
    assert len(lines) == 2 and "readings.jsonl" in lines[0] and "build b1" in lines[0]
    assert "3 other readings there not pooled" in lines[0]
    assert "churn/pods" in lines[1] and "(d1 to d3, commits abc): 3 readings:" in lines[1]
    assert "mean margin -1.00 points" in lines[1] and lines[1].endswith("over the line")
    assert pooled_lines(tmp_path / "none.jsonl", "b1") == []

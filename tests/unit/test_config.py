from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, load

ROOT = Path(__file__).resolve().parents[2]


def test_defaults() -> None:
    s = load(None, env={})
    assert s.listen == "0.0.0.0:9464" and s.poll_interval == 5.0 and s.names == []


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("poll_interval: 2\nlisten: 127.0.0.1:1000\nnames:\n- {cidr: 10.0.0.0/8, name: corp}\n")
    s = load(f, env={"FLOWLENS_POLL_INTERVAL": "3"}, flags={"listen": "127.0.0.1:2000", "bpf_dir": None})
    assert (s.poll_interval, s.listen, s.names[0].name) == (3.0, "127.0.0.1:2000", "corp")


@pytest.mark.parametrize("text,needle", [
    ("pol_interval: 2\n", "unknown setting 'pol_interval'"),
    ("poll_interval: -1\n", "poll_interval"),
    ("names:\n- {cidr: 10.0.0.0/33, name: x}\n", "names.0.cidr"),
    ("names:\n- {cidr: 10.0.0.0/8, name: x, colour: red}\n", "names.0.colour"),
    ("listen: nonsense\n", "listen"),
    ("disable: [bogus]\n", "unknown feature 'bogus'"),
    ("enable: [traffic]\n", "enable"),
    ("conn_map_size: 10\n", "conn_map_size"),
    ("conn_map_size: 100000\n", "conn_map_size"),
    ("- a list\n", "mapping"),
    ("a: [\n", "not valid YAML"),
])
def test_bad_config_names_the_key(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load(f, env={})
    assert needle in str(e.value) and "bad.yaml" in str(e.value)


def test_unknown_env_is_an_error() -> None:
    with pytest.raises(ConfigError, match="FLOWLENS_NOPE"):
        load(None, env={"FLOWLENS_NOPE": "1"})


def test_cli_exits_2_with_the_key(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("edge_map_sise: 10\n")
    r = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", str(f)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "edge_map_sise" in r.stderr

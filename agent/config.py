"""One validated settings object from YAML, ``FLOWLENS_*`` env and CLI flags.

Precedence, lowest first: defaults, the YAML file (``--config``), environment
variables ``FLOWLENS_<FIELD>`` (upper case; ``names`` as YAML/JSON text), and
command-line flags.  Unknown keys are errors: :func:`load` raises
:class:`ConfigError` naming the key and the source, and the CLI exits 2.
The Helm chart's values map onto these fields one-to-one.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(Exception):
    """Bad configuration; the message names the field and where it came from."""


class NameRule(BaseModel):
    """Names an address range: ends inside ``cidr`` become ``workload=name``."""

    model_config = ConfigDict(extra="forbid")
    cidr: str
    name: str = Field(min_length=1)
    namespace: str = ""

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        try:
            return str(ipaddress.ip_network(v, strict=False))
        except ValueError as e:
            raise ValueError(f"not a CIDR: {v!r}") from e


class Settings(BaseModel):
    """Every agent setting, with units in the names or the descriptions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = Field("0.0.0.0:9464", description="host:port of the metrics server")
    poll_interval: float = Field(5.0, gt=0, le=300, description="seconds between map polls")
    edge_map_size: int = Field(16384, ge=64, le=4_194_304, description="max edges in the kernel map")
    conn_map_size: int = Field(65536, ge=64, le=4_194_304, description="max TCP connections tracked at once, "
                               "a power of two (kernel memory: 6.8 MB at 65536)")
    idle_polls: int = Field(12, ge=1, description="polls an unchanged, inactive edge stays in the kernel map")
    names: list[NameRule] = Field(default_factory=list, description="named CIDRs, longest prefix wins")
    cgroup_root: str = Field("auto", description="cgroup v2 mount, 'auto' = first cgroup2 in /proc/mounts")
    proc_root: str = Field("/proc", description="host /proc (a mounted host dir in a pod)")
    sys_root: str = Field("/sys", description="host /sys, for BTF and sysctls")
    bpf_dir: str = Field("", description="directory of *.bpf.o; '' = build/ next to the agent")
    disable: list[str] = Field(default_factory=list, description="feature names not to load")
    enable: list[str] = Field(default_factory=list, description="features off by default to load (udp, udp_peer)")
    bpf_stats: bool = Field(True, description="per-program run time (measured here: adds 60-170 ns per event "
                            "while on)")
    bpf_stats_sample: float = Field(0.02, gt=0, le=1, description="fraction of each poll interval that bpf_stats "
                                    "measures (from the poll on; 0.02 = 100 ms of 5 s); 1 = always")
    log_level: str = Field("info", pattern="^(debug|info|warning|error)$")
    identity: Literal["auto", "standalone", "kubernetes"] = Field(
        "auto", description="auto = kubernetes when in a pod or a kubeconfig is given")
    kubeconfig: str = Field("", description="kubeconfig file; '' = in-cluster service account or $KUBECONFIG")
    node_name: str = Field("", description="this node's name; '' = $NODE_NAME, else the host name")
    scope: Literal["cluster", "node"] = Field("cluster", description="what each agent watches (see README)")
    granularity: Literal["workload", "pod"] = Field("workload", description="pod adds src_pod/dst_pod labels")
    edge_bucket_stride: int = Field(2, ge=1, le=4, description="edge histograms export every Nth of the kernel's "
                                    "23 log2 bounds (2: 16us*4^i, 13 samples per histogram; pod series keep all)")
    series_budget: int = Field(20000, ge=10, description="max edge series; new remote ends beyond it fold")
    series_grace: float = Field(300.0, ge=0, description="seconds a gone pod's idle series stay exported")
    zone_price_per_gb: float = Field(0.01, ge=0, description="dollars per GB crossing zones, each direction")
    k8s_timeout: float = Field(10.0, gt=0, description="seconds: connect/read timeout of API calls")
    k8s_backoff_max: float = Field(8.0, gt=0, description="seconds: cap of the jittered retry back-off")
    conntrack_path: str = Field("auto", description="nf_conntrack file; auto = <proc_root>/net/nf_conntrack")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"expected host:port, got {v!r}")
        return v

    @field_validator("conn_map_size")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        # the kernel side wraps a slot index with a mask (bpf/common.h conn_slot)
        if v & (v - 1):
            raise ValueError(f"must be a power of two (65536, 131072, ...), got {v}")
        return v

    @field_validator("disable", "enable")
    @classmethod
    def _features(cls, v: list[str]) -> list[str]:
        from agent.ebpf.loader import FEATURES  # names only; no libbpf call

        known = {f.name for f in FEATURES}
        bad = [n for n in v if n not in known]
        if bad:
            raise ValueError(f"unknown feature {bad[0]!r}, known: {', '.join(sorted(known))}")
        return v

    def listen_addr(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith("FLOWLENS_"):
            continue
        field = key[len("FLOWLENS_"):].lower()
        if field not in Settings.model_fields:
            raise ConfigError(f"environment: unknown setting {key}")
        out[field] = yaml.safe_load(raw) if field in ("names", "disable", "enable") else raw
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return data


def load(path: Path | None, env: Mapping[str, str] | None = None,
         flags: Mapping[str, Any] | None = None) -> Settings:
    """Merge the sources and validate once; raise ConfigError on any bad key."""
    layers = [("config file " + str(path), _read_yaml(path) if path else {}),
              ("environment", _from_env(os.environ if env is None else env)),
              ("flag", {k: v for k, v in (flags or {}).items() if v is not None})]
    merged: dict[str, Any] = {}
    for _, layer in layers:
        merged.update(layer)
    try:
        return Settings(**merged)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        src = next((n for n, lay in reversed(layers) if err["loc"] and err["loc"][0] in lay), "settings")
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"{src}: unknown setting {loc!r}") from None
        raise ConfigError(f"{src}: {loc}: {err['msg']}") from None

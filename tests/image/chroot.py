"""Debian root filesystems for the image test: a debootstrap `minbase` of the Dockerfile's release
(what `debian:<release>-slim` is made from), extracted per stage and entered with chroot.

Every command runs in a private mount namespace, so /proc, /sys and /dev mounted for it vanish
when it exits, whatever happens to the test.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.pods.agent import ROOT

MIRROR = "http://deb.debian.org/debian"
# A clean environment, as a container build has. The host's CA bundle goes in as /host-ca.crt for pip:
# where a TLS-inspecting proxy sits between us and PyPI (as on our build machines), only it is trusted.
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def clean_env() -> dict[str, str]:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           "HOME": "/root", "PIP_DEFAULT_TIMEOUT": "180"}
    if HOST_CA.is_file():
        env["PIP_CERT"] = "/host-ca.crt"
    return env


def release() -> str:
    """The Debian release the Dockerfile builds from (ARG DEBIAN=...)."""
    m = re.search(r"^ARG DEBIAN=(\w+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert m, "Dockerfile has no ARG DEBIAN=<release>"
    return m.group(1)


def debootstrap(tar: Path) -> Path:
    """A tarball of a fresh minbase root, made once per test run."""
    if tar.exists():
        return tar
    root = tar.with_suffix(".d")
    subprocess.run(["debootstrap", "--variant=minbase", release(), str(root), MIRROR],
                   check=True, capture_output=True, timeout=900)
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True)
    subprocess.run(["tar", "-C", str(root), "-cf", str(tar), "."], check=True)
    shutil.rmtree(root)
    return tar


# Mounts a pod has, under the root "$r" (set by the caller's script before these lines).
_MOUNTS = """mount -t proc proc "$r/proc"
mount --rbind /sys "$r/sys"
mount -o remount,bind,ro "$r/sys"
mount --rbind /dev "$r/dev"
"""


@dataclass
class Rootfs:
    path: Path

    @classmethod
    def from_tar(cls, tar: Path, path: Path) -> Rootfs:
        path.mkdir()
        subprocess.run(["tar", "-C", str(path), "-xf", str(tar)], check=True)
        shutil.copy("/etc/resolv.conf", path / "etc/resolv.conf")
        if HOST_CA.is_file():
            shutil.copy(HOST_CA, path / "host-ca.crt")
        return cls(path)

    def run(self, *cmd: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run `cmd` inside this root as root; raise with its output if it fails."""
        script = 'set -e\nr=$1; shift\n' + _MOUNTS + 'exec chroot "$r" "$@"'
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                            str(self.path), *cmd], capture_output=True, text=True, timeout=timeout, env=clean_env())
        if r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} in {self.path} exited {r.returncode}:\n{r.stdout[-4000:]}"
                                 f"\n{r.stderr[-4000:]}")
        return r

    def read_only_argv(self, caps: list[str], *cmd: str) -> list[str]:
        """argv running `cmd` as a pod would: root filesystem read-only, /tmp an empty tmpfs (the chart's
        emptyDir), uid 0 with only the capabilities `caps` (names as in Kubernetes: BPF, PERFMON, ...)."""
        ro = self.path.with_name(self.path.name + ".ro")
        ro.mkdir(exist_ok=True)
        keep = ",".join(f"+{c.lower()}" for c in caps)
        script = (f'set -e\nr="{ro}"\nmount --bind "$1" "$r"\nmount -o remount,bind,ro "$r"\nshift\n'
                  + _MOUNTS
                  + 'mount -t tmpfs -o size=16m tmpfs "$r/tmp"\n'
                  + f'exec chroot "$r" /usr/bin/setpriv --bounding-set=-all,{keep} --inh-caps=-all -- '
                  + '/usr/bin/env PYTHONDONTWRITEBYTECODE=1 "$@"')
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(self.path), *cmd]

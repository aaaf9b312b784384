#!/bin/sh
# Build stage of the image (Dockerfile stage "build"; tests/image runs it in a debootstrap chroot).
# Compiles bpf/ into CO-RE objects and the agent plus its dependencies into wheels.
#   build.sh <source dir> <out dir>   ->   <out>/bpf/*.bpf.o, <out>/wheels/*.whl, <out>/install.sh
# Only this stage has clang, LLVM and headers; the runtime stage installs from <out> with no network
# access to PyPI and no compiler.
set -eu
src=$(cd "$1" && pwd)
out=$2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends clang llvm libbpf-dev make python3 python3-pip python3-venv >/dev/null
mkdir -p "$out/bpf" "$out/wheels"
make -s -C "$src/bpf" OUT="$out/bpf"
# A throwaway venv so pip never touches the system Python (PEP 668 on Debian 12).
python3 -m venv /tmp/flowlens-build
/tmp/flowlens-build/bin/pip install -q --upgrade pip wheel
/tmp/flowlens-build/bin/pip wheel -q --wheel-dir "$out/wheels" "$src"
rm -rf /tmp/flowlens-build
cp "$src/deploy/image/install.sh" "$out/install.sh"
ls "$out/bpf" "$out/wheels" >&2

#!/bin/sh
# Runtime stage of the image (Dockerfile final stage; tests/image runs it in a debootstrap chroot).
#   install.sh <stage dir>   with <stage>/bpf and <stage>/wheels from build.sh
# Installs Python, libbpf and the agent only: no clang, no LLVM, no headers, no compiler.
# The agent goes into the venv /opt/flowlens; the BPF objects into /opt/flowlens/share/flowlens/bpf,
# where the agent looks when bpf_dir is '' and no source checkout's build/ is beside it.
set -eu
stage=$1
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3 python3-venv libbpf1 ca-certificates >/dev/null
python3 -m venv /opt/flowlens
/opt/flowlens/bin/pip install -q --no-index --find-links "$stage/wheels" flowlens
/opt/flowlens/bin/pip uninstall -q -y pip
install -d /opt/flowlens/share/flowlens/bpf
install -m 0644 "$stage"/bpf/*.bpf.o /opt/flowlens/share/flowlens/bpf/
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /usr/share/doc/* /usr/share/man/*
/opt/flowlens/bin/flowlens --version

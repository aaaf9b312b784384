# flowlens agent image. Two stages, each one script that tests/image/test_image.py also runs in a
# debootstrap chroot of the same Debian release (no container engine runs on our build machines):
#   build:   deploy/image/build.sh   clang + libbpf-dev compile bpf/; pip builds wheels
#   runtime: deploy/image/install.sh Python, libbpf1 and the agent only (no clang, LLVM, headers)
# The runtime runs as uid 0 without privilege: the chart adds CAP_BPF and CAP_PERFMON (see
# deploy/helm/flowlens/README.md) and mounts the root filesystem read-only.
ARG DEBIAN=bookworm
FROM debian:${DEBIAN}-slim AS build
COPY . /src
RUN sh /src/deploy/image/build.sh /src /stage

FROM debian:${DEBIAN}-slim
COPY --from=build /stage /stage
RUN sh /stage/install.sh /stage && rm -rf /stage
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/flowlens/bin:$PATH
EXPOSE 9464
ENTRYPOINT ["/opt/flowlens/bin/flowlens"]
CMD ["run"]

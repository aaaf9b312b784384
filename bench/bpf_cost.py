"""First measurement of per-program BPF cost (ns per event) under loopback load.

Starts the agent (bpf_stats on), drives two load shapes over loopback with a
bounded number of operations, and reads run_time_ns / run_cnt per program from
the agent's own flowlens_agent_bpf_* metrics.  Usage (root):
    python -m bench.bpf_cost [--out bench/results/bpf_cost.md]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import socket
import tempfile
import threading
from pathlib import Path

from tests.pods.agent import AgentProc, find

N_CHURN, N_PERSIST = 3000, 100_000


def serve(srv: socket.socket, stop: threading.Event) -> None:
    srv.settimeout(0.5)
    while not stop.is_set():
        try:
            c, _ = srv.accept()
        except TimeoutError:
            continue
        with c:
            while data := c.recv(65536):
                c.sendall(data[:64])


def load(shape: str, port: int) -> None:
    if shape == "churn":  # one connection per request
        for _ in range(N_CHURN):
            with socket.create_connection(("127.0.0.1", port)) as c:
                c.sendall(b"q" * 64)
                c.recv(64)
    else:  # persistent connection, request/response
        with socket.create_connection(("127.0.0.1", port)) as c:
            for _ in range(N_PERSIST):
                c.sendall(b"q" * 64)
                c.recv(64)


def cost(m: dict, before: dict | None) -> dict[str, tuple[float, float]]:  # type: ignore[type-arg]
    out = {}
    for (name, lab), v in m.items():
        if name == "flowlens_agent_bpf_runs_total":
            prog = dict(lab)["program"]
            ns = find(m, "flowlens_agent_bpf_run_seconds_total", program=prog)[0] * 1e9
            if before:
                v -= before[prog][1]
                ns -= before[prog][0]
            out[prog] = (ns, v)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/bpf_cost.md")
    a = ap.parse_args()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(512)
    port = srv.getsockname()[1]
    stop = threading.Event()
    threading.Thread(target=serve, args=(srv, stop), daemon=True).start()
    agent = AgentProc(Path(tempfile.mkdtemp()), {"poll_interval": 1.0}).start()
    rows = []
    try:
        for shape in ("churn", "persistent"):
            before = {k: v for k, v in cost(agent.settle(1), None).items()}
            load(shape, port)
            after = cost(agent.settle(1), before)
            for prog, (ns, cnt) in sorted(after.items()):
                if cnt:
                    rows.append(f"| {shape} | {prog} | {int(cnt)} | {ns / cnt:.0f} |")
    finally:
        agent.stop()
        stop.set()
    head = (f"# BPF per-event cost\n\nMachine: {platform.node()} ({platform.machine()}, "
            f"{__import__('os').cpu_count()} CPUs), kernel {platform.release()}, "
            f"{datetime.date.today()}.  Load: loopback, churn = {N_CHURN} connections with one 64 B "
            f"request/response each; persistent = {N_PERSIST} 64 B request/responses on one connection.  "
            "Source: kernel.bpf_stats (run_time_ns / run_cnt), read from flowlens_agent_bpf_*.\n\n"
            "| load | program | events | ns/event |\n|---|---|---|---|\n")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(head + "\n".join(rows) + "\n")
    print(Path(a.out).read_text())


if __name__ == "__main__":
    main()

"""A Kubernetes API test server that speaks the real list/watch protocol.

The agent's real ``kubernetes`` client talks to it over HTTP, as it would to
kube-apiserver: paginated lists (``limit``/``continue``) carrying a
``resourceVersion``, watches from that version as a chunked stream of
newline-delimited JSON events, ``BOOKMARK`` events when asked for, and
``410 Gone`` (an ``ERROR`` event with a ``Status``, as the real server sends)
when the asked version was compacted away.  Faults on demand: refuse
connections (down), fail the next requests with any status, delay every
response, cut watch streams mid-line, store malformed objects.

Only the cluster-wide collection paths the agent uses are served.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

Obj = dict[str, Any]

RESOURCES = {
    "/api/v1/pods": ("v1", "PodList"),
    "/api/v1/services": ("v1", "ServiceList"),
    "/api/v1/nodes": ("v1", "NodeList"),
    "/apis/discovery.k8s.io/v1/endpointslices": ("discovery.k8s.io/v1", "EndpointSliceList"),
    "/apis/batch/v1/jobs": ("batch/v1", "JobList"),
}
GONE = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410,
        "message": "too old resource version"}


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return "", str(id(obj))
    return str(meta.get("namespace", "")), str(meta.get("name", id(obj)))


def _selected(obj: Obj, selector: str) -> bool:
    """Field selectors the agent uses: ``spec.nodeName=<node>`` (and none)."""
    for term in filter(None, selector.split(",")):
        field, _, want = term.partition("=")
        cur: Any = obj
        for part in field.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if str(cur or "") != want:
            return False
    return True


class ApiServer:
    """State (objects, resourceVersion, event log) survives stop()/start()."""

    def __init__(self, bookmark_interval: float = 1.0) -> None:
        self.objects: dict[str, dict[tuple[str, str], Obj]] = {p: {} for p in RESOURCES}
        self.log: list[tuple[int, str, str, Obj]] = []  # (rv, path, type, object)
        self.rv = 1
        self.compacted = 0           # watches from a version <= this get 410
        self.bookmark_interval = bookmark_interval
        self.delay = 0.0             # seconds before each response
        self.failures: list[int] = []  # statuses for the next requests
        self.requests: list[str] = []  # "GET <path>?<query>", for assertions
        self.auth: list[str] = []  # each request's Authorization header ("" if none)
        self.cond = threading.Condition()
        self.epoch = 0               # bumped to end every open watch
        self.cut_mid_line = False
        self.down = False            # stopped: a request that slipped in before the socket closed is cut
        self.port = 0
        self._http: ThreadingHTTPServer | None = None

    # --- control -----------------------------------------------------------------------
    def start(self) -> ApiServer:
        handler = type("Handler", (_Handler,), {"api": self})
        self._http = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._http.daemon_threads = True
        self.port = self._http.server_address[1]
        self.down = False
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Down: open watches end, new connections are refused.  A client re-watching at once can get
        in between the two: its request is cut too (``down``), else its stream would outlive the stop."""
        with self.cond:
            self.down = True
        self.end_watches()
        if self._http:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def end_watches(self, mid_line: bool = False) -> None:
        with self.cond:
            self.cut_mid_line = mid_line
            self.epoch += 1
            self.cond.notify_all()

    def compact(self) -> None:
        """Forget the event log: a watch from a version older than now gets 410 Gone."""
        with self.cond:
            self.compacted = self.rv
            self.log.clear()
            self.epoch += 1
            self.cond.notify_all()

    def fail(self, n: int, status: int = 500) -> None:
        with self.cond:
            self.failures.extend([status] * n)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self) -> str:
        return json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url()}}],
            "users": [{"name": "test", "user": {"token": "test"}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        })

    # --- objects -----------------------------------------------------------------------
    def put(self, path: str, obj: Obj) -> Obj:
        """Create or replace; returns the stored object with its resourceVersion."""
        with self.cond:
            self.rv += 1
            meta = obj.setdefault("metadata", {}) if isinstance(obj.get("metadata", {}), dict) else {}
            if isinstance(meta, dict):
                meta.setdefault("uid", str(uuid.uuid4()))
                meta["resourceVersion"] = str(self.rv)
            key = _key(obj)
            kind = "MODIFIED" if key in self.objects[path] else "ADDED"
            self.objects[path][key] = obj
            self.log.append((self.rv, path, kind, obj))
            self.cond.notify_all()
            return obj

    def delete(self, path: str, namespace: str, name: str) -> None:
        with self.cond:
            obj = self.objects[path].pop((namespace, name))
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self.log.append((self.rv, path, "DELETED", obj))
            self.cond.notify_all()


class _Handler(BaseHTTPRequestHandler):
    api: ApiServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class name
        pass

    def _json(self, status: int, body: Obj) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        api = self.api
        url = urlparse(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        with api.cond:
            if api.down:
                self.close_connection = True
                return
            api.requests.append(f"GET {self.path}")
            api.auth.append(self.headers.get("Authorization", ""))
            status = api.failures.pop(0) if api.failures else 0
        if api.delay:
            time.sleep(api.delay)
        if status:
            self._json(status, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": status,
                                "message": "injected failure"})
            return
        if url.path not in RESOURCES:
            self._json(404, {"kind": "Status", "code": 404, "message": f"no such path {url.path}"})
            return
        if q.get("watch") in ("true", "1"):
            self._watch(url.path, q)
        else:
            self._list(url.path, q)

    def _list(self, path: str, q: dict[str, str]) -> None:
        api = self.api
        version, kind = RESOURCES[path]
        with api.cond:
            items = [o for k, o in sorted(api.objects[path].items()) if _selected(o, q.get("fieldSelector", ""))]
            rv = api.rv
        start = int(q.get("continue") or 0)
        limit = int(q.get("limit") or 0) or len(items)
        page = items[start:start + limit]
        meta: Obj = {"resourceVersion": str(rv)}
        if start + limit < len(items):
            meta["continue"] = str(start + limit)
        self._json(200, {"kind": kind, "apiVersion": version, "metadata": meta, "items": page})

    def _watch(self, path: str, q: dict[str, str]) -> None:
        api = self.api
        selector = q.get("fieldSelector", "")
        bookmarks = q.get("allowWatchBookmarks") == "true"
        deadline = time.monotonic() + float(q.get("timeoutSeconds") or 1800)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with api.cond:
            since = int(q.get("resourceVersion") or 0)
            epoch = api.epoch
            if since and since < api.compacted:
                self._chunk({"type": "ERROR", "object": GONE})
                self._end()
                return
            pending = [("ADDED", o) for o in api.objects[path].values()] if not since else []
        next_bookmark = time.monotonic() + api.bookmark_interval
        try:
            while True:
                for kind, obj in pending:
                    if _selected(obj, selector):
                        self._chunk({"type": kind, "object": obj})
                now = time.monotonic()
                if bookmarks and now >= next_bookmark:
                    self._chunk({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
                                                                "metadata": {"resourceVersion": str(since)}}})
                    next_bookmark = now + api.bookmark_interval
                if now >= deadline:
                    self._end()
                    return
                with api.cond:
                    api.cond.wait(min(0.2, max(0.0, deadline - now)))
                    if api.epoch != epoch or api.down:
                        if since < api.compacted:
                            self._chunk({"type": "ERROR", "object": GONE})
                            self._end()
                        elif api.cut_mid_line:
                            self.wfile.write(b'10\r\n{"type": "MODI')  # half a chunk, then hang up
                        else:
                            self._end()
                        self.close_connection = True
                        return
                    pending = [(k, o) for rv, p, k, o in api.log if p == path and rv > since]
                    since = max([since] + [rv for rv, p, _k, _o in api.log if p == path])
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _chunk(self, event: Obj) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

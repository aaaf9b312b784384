"""List-then-watch of one Kubernetes collection, kept up to date forever.

The loop is client-go's reflector, with the ``kubernetes`` client's list
functions: list in pages (``limit``/``continue``) and remember the list's
``resourceVersion``; watch from it with bookmarks (``allowWatchBookmarks``)
so an idle stream still advances the version; when a stream ends, watch
again from the last version seen (no re-list); re-list only on ``410 Gone``
(the version was compacted away).  Every call has a timeout: lists
``(connect, read)``; watches a server-side ``timeoutSeconds`` with a little
jitter plus a client read timeout a bit longer, so a dead connection is
noticed.  Errors back off exponentially with full jitter, capped, so a
recovered API server is caught up with within ``backoff_max`` seconds.

Responses are read as raw JSON (``ListFn`` returns the raw response, see
agent/identity/k8s.py): the client's model classes cost ~10x the memory and
CPU of the dicts, and the sink keeps only slim tuples anyway.  A list is
handed to the sink page by page, as it arrives, so only one page of raw
objects is alive at a time (all 10k pods' dicts at once peaked at +30 MB).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("flowlens.k8s")
Obj = dict[str, Any]
ListFn = Callable[..., Any]  # keyword query arguments (limit, _continue, watch, ...) -> raw HTTP response


class Sink(Protocol):
    """Where a reflector puts what it sees (the cluster index)."""

    def replace(self, resource: str, items: Iterable[Obj]) -> None: ...
    def apply(self, resource: str, kind: str, obj: Obj) -> None: ...


class GoneError(Exception):
    """The resourceVersion we watch from is too old: re-list."""


@dataclass
class WatchState:
    """One collection's health, exported as ``flowlens_agent_k8s_*``."""

    resource: str
    synced: bool = False       # a list has completed at least once
    up: bool = False           # the last call succeeded (list done or stream open)
    lists: int = 0
    relists_gone: int = 0
    errors: int = 0
    events: int = 0
    last_error: str = ""
    last_ok: float = 0.0


class Reflector:
    def __init__(self, resource: str, list_fn: ListFn, sink: Sink, *, field_selector: str = "",
                 page: int = 500, timeout: float = 10.0, watch_seconds: int = 240,
                 backoff_max: float = 8.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.resource, self.list_fn, self.sink = resource, list_fn, sink
        self.selector, self.page, self.timeout = field_selector, page, timeout
        self.watch_seconds, self.backoff_max = watch_seconds, backoff_max
        self.clock = clock
        self.state = WatchState(resource)

    def run(self, stop: threading.Event) -> None:
        """Until ``stop`` is set: list, watch, re-watch, re-list on 410, back off on errors."""
        rv: str | None = None
        failures = 0
        while not stop.is_set():
            try:
                if rv is None:
                    rv = self._list()
                rv = self._watch(rv, stop)
                failures = 0
            except GoneError:
                self.state.relists_gone += 1
                self.state.up, self.state.last_error = False, "410 Gone: re-listing"  # stale until the list lands
                log.info("%s: resourceVersion %s expired (410 Gone), re-listing", self.resource, rv)
                rv = None
            except Exception as e:  # any API, network or decoding error: back off, never die
                failures += 1
                st = self.state
                st.errors, st.up, st.last_error = st.errors + 1, False, _describe(e)
                delay = random.uniform(0, min(self.backoff_max, 0.5 * 2 ** min(failures, 10)))
                log.warning("%s: %s; retrying in %.1fs", self.resource, st.last_error, delay)
                stop.wait(delay)

    def _call(self, **kw: Any) -> Any:
        return self.list_fn(field_selector=self.selector or None, **kw)  # None: left out of the query

    def _list(self) -> str:
        meta: dict[str, Any] = {}

        def pages() -> Iterator[Obj]:
            token: str | None = None
            while True:
                resp = self._call(limit=self.page, _continue=token, _request_timeout=(self.timeout, self.timeout))
                body = json.loads(resp.data)
                if not isinstance(body, dict) or not isinstance(body.get("items"), list):
                    raise ValueError("list response has no items")
                meta.update(body.get("metadata") or {})
                yield from body.pop("items")
                token = meta.pop("continue", None) or None
                if not token:
                    return

        self.sink.replace(self.resource, pages())  # a failed page raises before anything is replaced
        st = self.state
        st.synced = st.up = True
        st.lists += 1
        st.last_ok = self.clock()
        return str(meta.get("resourceVersion", ""))

    def _watch(self, rv: str, stop: threading.Event) -> str:
        seconds = int(self.watch_seconds * random.uniform(0.9, 1.1))
        resp = self._call(watch=True, resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=seconds,
                          _request_timeout=(self.timeout, seconds + self.timeout))
        self.state.up = True
        # imported here: a standalone agent never imports the client
        from kubernetes.watch.watch import iter_resp_lines

        try:
            for line in iter_resp_lines(resp):  # type: ignore[no-untyped-call]
                if stop.is_set():
                    break
                if not line:
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise GoneError()
                    raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('message')}")
                new_rv = (obj.get("metadata") or {}).get("resourceVersion") if isinstance(obj, dict) else None
                if kind != "BOOKMARK":
                    self.sink.apply(self.resource, str(kind), obj)
                    self.state.events += 1
                if new_rv:
                    rv = str(new_rv)
                self.state.last_ok = self.clock()
        finally:
            resp.release_conn()
        return rv


def _describe(e: Exception) -> str:
    status = getattr(e, "status", None)
    if status:
        return f"HTTP {status} {getattr(e, 'reason', '')}".strip()
    return f"{type(e).__name__}: {e}"[:200]

"""The resolver's Kubernetes watches: pods, services and endpoint slices into a `PodMap`.

`KubeWatcher` keeps one list+watch per resource kind — with ``namespaces``, one per kind and
namespace (the server filters; nothing is filtered client-side, so a Role in those namespaces
is enough) — each on its own thread, never a poll loop per pod:

1. **List** in pages of `LIST_PAGE` (``limit``/``continue``), raw JSON (``_preload_content=False``,
   decoded with msgspec: the camelCase API shape `PodMap` reads). The first lists of a kind are
   applied together with `PodMap.replace` once every stream of that kind has answered (listed or
   failed), so objects left from a resumed journal that no longer exist end there; a later list
   (after a 410) is `PodMap.replace` for an all-namespaces stream, and for a namespace stream the
   same thing scoped to its namespace (each listed object observed, each object it had seen and
   the list lacks observed as deleted).
2. **Watch** from the list's resourceVersion with ``allowWatchBookmarks`` and a server-side
   ``timeoutSeconds`` (`WATCH_TIMEOUT_S`); every ADDED/MODIFIED/DELETED event is
   `PodMap.observe` stamped with ``clock()`` at arrival, BOOKMARKs only advance the
   resourceVersion. A stream that ends (the timeout) is watched again from the last
   resourceVersion seen; one that breaks (connection dropped, read timeout) is *resumed* the same
   way, at once the first time and with a capped exponential backoff (`BACKOFF_BASE_S` doubling
   to `BACKOFF_MAX_S`, +0-20 % jitter) while it keeps failing. A watch that ends within
   `LIVELY_S` with nothing in it backs off too (a proxy closing streams at once is no hot loop).
3. **410 Gone/Expired** (the watch request answered 410, or an ERROR event whose Status has code
   410: the resourceVersion was compacted away) relists and replaces.

Any other failure (403 Forbidden, 401, 5xx, an unreachable server, an ERROR event) is counted,
reported as one line in `KubeWatcher.last_error` (until that stream recovers) and retried with
the same backoff — a watch from the same resourceVersion, a list only if the list failed — so a
forbidden watch ends up costing one request per 30 s, not a hot loop. `stop()` shuts down the
socket of every open list or watch response (urllib3 ``HTTPResponse.shutdown``), so it returns
at once even with watches blocked on a quiet stream.

The ``kubernetes`` package (~0.5 s to import) is imported only inside functions here: importing
this module costs nothing until a client is loaded or a watcher built.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import msgspec

from shark_tui.engine.podmap import PodMap

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

__all__ = [
    "BACKOFF_BASE_S",
    "BACKOFF_MAX_S",
    "LIST_PAGE",
    "MAX_EVENT_BYTES",
    "NO_KUBECONFIG",
    "WATCH_TIMEOUT_S",
    "KubeError",
    "KubeWatcher",
    "load_client",
]

WATCH_TIMEOUT_S: Final = 300
"""Server-side ``timeoutSeconds`` of each watch request (client-go uses 5-10 min)."""
LIST_PAGE: Final = 500
"""Objects per list page (client-go's default)."""
BACKOFF_BASE_S: Final = 0.5
"""First retry delay after a failed request; doubles per consecutive failure..."""
BACKOFF_MAX_S: Final = 30.0
"""...up to this."""
MAX_EVENT_BYTES: Final = 16 << 20
"""Longest watch event line accepted (the API caps objects at ~1.5 MiB in etcd)."""
CONNECT_TIMEOUT_S: Final = 10.0
LIST_READ_TIMEOUT_S: Final = 60.0
WATCH_READ_SLACK_S: Final = 30.0  # a watch socket silent this long past timeoutSeconds is dead
STOP_JOIN_S: Final = 2.0
LIVELY_S: Final = 1.0  # a watch that ends sooner with nothing in it counts as a failure
_READ_SIZE: Final = 64 << 10

NO_KUBECONFIG: Final = (
    "no kubeconfig: set KUBECONFIG or pass --kubeconfig; in a pod, the service account is used"
)

_POD: Final = "Pod"
_SERVICE: Final = "Service"
_SLICE: Final = "EndpointSlice"
_STATS: Final = (
    "lists", "relists", "watches", "resumes", "events", "changes", "bookmarks", "errors",
)  # fmt: skip


class KubeError(Exception):
    """No usable cluster configuration (one line, with the fix)."""


def load_client(kubeconfig: str | None = None, context: str | None = None) -> ApiClient:
    """An API client for the cluster: the pod's service account when ``KUBERNETES_SERVICE_HOST``
    is set and neither ``kubeconfig``, ``context`` nor ``$KUBECONFIG`` says otherwise, else the
    kubeconfig (``kubeconfig``, else ``$KUBECONFIG`` — a ``:``-separated list is merged —, else
    ``~/.kube/config``) at ``context`` (default: its current context). Raises `KubeError`."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    cfg = client.Configuration()
    # one connection per stream of a KubeWatcher (3 per namespace watched) and some to spare:
    # urllib3 discards, with a warning, connections returned to a full pool
    cfg.connection_pool_maxsize = max(cfg.connection_pool_maxsize, 32)
    env = os.environ.get("KUBECONFIG", "")
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if in_cluster and kubeconfig is None and context is None and not env:
        try:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        except ConfigException as e:
            raise KubeError(f"in-cluster config: {_one_line(str(e))}") from None
        return client.ApiClient(cfg)
    path = kubeconfig or env or os.path.expanduser("~/.kube/config")
    if not any(os.path.isfile(p) for p in path.split(os.pathsep) if p):
        if kubeconfig is not None:
            raise KubeError(f"kubeconfig {kubeconfig}: no such file")
        raise KubeError(NO_KUBECONFIG)
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, context=context, client_configuration=cfg, persist_config=False
        )
    except Exception as e:  # ConfigException, OSError, yaml errors...
        raise KubeError(f"kubeconfig {path}: {_one_line(str(e))}") from None
    return client.ApiClient(cfg)


@dataclass(frozen=True, slots=True)
class _Resource:
    kind: str
    plural: str
    api: str  # the kubernetes.client class
    list_all: str  # its method for every namespace...
    list_in: str  # ...and for one


_RESOURCES: Final = (
    _Resource(_POD, "pods", "CoreV1Api", "list_pod_for_all_namespaces", "list_namespaced_pod"),
    _Resource(
        _SERVICE, "services", "CoreV1Api", "list_service_for_all_namespaces",
        "list_namespaced_service",
    ),
    _Resource(
        _SLICE, "endpointslices", "DiscoveryV1Api", "list_endpoint_slice_for_all_namespaces",
        "list_namespaced_endpoint_slice",
    ),
)  # fmt: skip


class _ListMeta(
    msgspec.Struct, rename={"resource_version": "resourceVersion", "continue_": "continue"}
):
    resource_version: str = ""
    continue_: str = ""


class _ListPage(msgspec.Struct):
    metadata: _ListMeta = msgspec.field(default_factory=_ListMeta)
    items: list[dict[str, Any]] | None = None


class _Event(msgspec.Struct):
    type: str
    object: dict[str, Any]


_decode_list: Final = msgspec.json.Decoder(_ListPage).decode
_decode_event: Final = msgspec.json.Decoder(_Event).decode


class _Expired(Exception):
    """The resourceVersion is too old (410): relist."""


class _StatusError(Exception):
    """An ERROR watch event other than 410."""

    def __init__(self, status: Mapping[str, Any]) -> None:
        super().__init__(status.get("message") or "")
        self.status = status


class _Broken(Exception):
    """An open watch stream broke (dropped connection, read timeout)."""

    def __init__(self, cause: BaseException, healthy: bool) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.healthy = healthy  # it delivered events before breaking


class _Initial:
    """The first lists of one kind, applied together with one `PodMap.replace`."""

    __slots__ = ("cond", "items", "pending", "released")

    def __init__(self, streams: int) -> None:
        self.cond = threading.Condition()
        self.pending = streams
        self.items: list[dict[str, Any]] | None = None  # None: no stream has listed
        self.released = False


class KubeWatcher:
    """Feeds ``podmap`` from list+watch on pods, services and endpoint slices (see the module
    docstring). ``namespaces``: watch only those (one stream per kind and namespace), else every
    namespace (one stream per kind). ``clock``: the nanosecond timestamps given to the map."""

    def __init__(
        self,
        podmap: PodMap,
        api_client: ApiClient,
        *,
        namespaces: list[str] | None = None,
        clock: Callable[[], int] = time.time_ns,
        watch_timeout_s: int = WATCH_TIMEOUT_S,
    ) -> None:
        from kubernetes import client

        self.podmap = podmap
        self.namespaces = list(dict.fromkeys(namespaces)) if namespaces else None
        self.watch_timeout_s = watch_timeout_s
        self.ready = threading.Event()
        """Set once every stream's first list is in the map."""
        self._clock = clock
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._stats = dict.fromkeys(_STATS, 0)
        self._seq = itertools.count(1)
        self._started = False
        self._streams: list[_Stream] = []
        self._initial: dict[str, _Initial] = {}
        scopes: list[str | None] = list(self.namespaces) if self.namespaces else [None]
        for res in _RESOURCES:
            api = getattr(client, res.api)(api_client)
            self._initial[res.kind] = _Initial(len(scopes))
            for ns in scopes:
                call = (
                    functools.partial(getattr(api, res.list_in), ns)
                    if ns is not None
                    else getattr(api, res.list_all)
                )
                self._streams.append(_Stream(self, res, ns, call))

    # -- control -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every stream's thread (once); `ready` is set when their first lists are in."""
        if self._started:
            raise RuntimeError("KubeWatcher.start() called twice")
        self._started = True
        for s in self._streams:
            s.thread.start()

    def stop(self, timeout: float = STOP_JOIN_S) -> None:
        """Stop every stream: open responses are shut down, threads joined (each thread is a
        daemon thread, so one stuck in connecting never holds the process)."""
        self._stopping.set()
        for s in self._streams:
            s.interrupt()
        for initial in self._initial.values():
            with initial.cond:
                initial.cond.notify_all()
        deadline = time.monotonic() + timeout
        for s in self._streams:
            if s.thread.is_alive():
                s.thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> KubeWatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state ---------------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """Counters (a copy): ``lists`` (complete lists, first ones included), ``relists``
        (lists after a 410), ``watches`` (watch requests answered 200), ``resumes`` (those
        re-opened from the last resourceVersion after a stream broke), ``events`` (ADDED,
        MODIFIED, DELETED applied), ``changes`` (events that changed the map), ``bookmarks``,
        ``errors`` (failed requests and broken streams)."""
        with self._lock:
            return dict(self._stats)

    @property
    def last_error(self) -> str | None:
        """The latest error of a stream that has not recovered since (None: all healthy), one
        line, e.g. ``forbidden: pods is forbidden: User "x" cannot watch resource "pods" ...``."""
        with self._lock:
            errors = [s.error for s in self._streams if s.error is not None]
        return max(errors)[1] if errors else None

    @property
    def alive(self) -> bool:
        return any(s.thread.is_alive() for s in self._streams)

    # -- for the streams -----------------------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def _set_error(self, stream: _Stream, message: str | None) -> None:
        with self._lock:
            if message is None:
                stream.error = None
            else:
                stream.error = (next(self._seq), message)
                self._stats["errors"] += 1

    def _settle(self, stream: _Stream, items: list[dict[str, Any]] | None) -> None:
        """A stream's first list answered (``items``) or failed (None). The last stream of a
        kind to settle replaces that kind in the map with every list; all wait until then."""
        initial = self._initial[stream.res.kind]
        with initial.cond:
            if items is not None:
                initial.items = (initial.items or []) + items
            initial.pending -= 1
            if initial.pending == 0:
                if initial.items is not None:
                    self.podmap.replace(stream.res.kind, initial.items, self._clock())
                initial.items = None
                initial.released = True
                initial.cond.notify_all()
            while not initial.released and not self._stopping.is_set():
                initial.cond.wait(0.5)

    def _check_ready(self) -> None:
        if all(s.listed for s in self._streams):
            self.ready.set()


class _Stream:
    """One kind in one namespace (or all): its list+watch loop on its own thread."""

    def __init__(
        self, w: KubeWatcher, res: _Resource, namespace: str | None, call: Callable[..., Any]
    ) -> None:
        self.w = w
        self.res = res
        self.namespace = namespace
        self.what = res.plural if namespace is None else f"{res.plural} in {namespace}"
        self.rv = ""
        self.listed = False  # a list of this stream is in the map
        self.settled = False  # its first list answered or failed
        self.error: tuple[int, str] | None = None
        # namespace streams: object key -> (namespace, name) of what the map holds from here
        self.keys: dict[str, tuple[str, str]] = {}
        self._call = call
        self._resp: Any = None  # the open urllib3 response
        self._resp_lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=f"kube {self.what}", daemon=True)

    # -- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        w = self.w
        failures = 0  # consecutive
        need_list = True
        resuming = False  # the previous watch broke: the next one resumes it
        while not w._stopping.is_set():
            verb = "list" if need_list else "watch"
            try:
                if need_list:
                    self._list_and_apply()
                    need_list = resuming = False
                    failures = 0
                expired, lively = self._watch(resuming)
            except _Expired:
                expired, lively = True, True
            except Exception as e:
                if w._stopping.is_set():
                    break
                broken = False
                if isinstance(e, _Broken):
                    broken = resuming = True
                    if e.healthy:
                        failures = 0
                failures += 1
                w._set_error(self, _describe(e, verb, self.what))
                if not self.settled:  # a first list failed: the kind's other streams go on
                    self.settled = True
                    w._settle(self, None)
                n = failures - 1 if broken else failures  # a first break resumes at once
                if n and w._stopping.wait(_backoff(n)):
                    break
                continue
            # the watch ended (its timeout) or said 410: watch again, or relist
            resuming = False
            need_list = expired
            if lively:
                failures = 0
            else:  # ended at once with nothing in it: no error, but no hot loop either
                failures += 1
                if w._stopping.wait(_backoff(failures)):
                    break

    def interrupt(self) -> None:
        """Called by `KubeWatcher.stop` after it set the stop flag: unblock a pending read."""
        with self._resp_lock:
            resp = self._resp
        if resp is not None:
            with contextlib.suppress(Exception):  # released or closed: nothing blocks on it
                resp.shutdown()

    # -- requests ------------------------------------------------------------------------------

    def _open(self, **params: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            resp = self._call(_preload_content=False, **params)
        except ApiException as e:
            if e.status == 410:
                raise _Expired(str(e.reason)) from None
            raise
        with self._resp_lock:  # stop() sets the flag first, then reads _resp under this lock
            if self.w._stopping.is_set():
                _release(resp)
                raise _Broken(RuntimeError("stopping"), False)
            self._resp = resp
        return resp

    def _done(self, resp: Any) -> None:
        with self._resp_lock:
            self._resp = None
        _release(resp)

    def _list(self) -> tuple[list[dict[str, Any]], str]:
        items: list[dict[str, Any]] = []
        rv = cont = ""
        restarts = 0
        while True:
            try:
                resp = self._open(
                    limit=LIST_PAGE,
                    _continue=cont or None,
                    _request_timeout=(CONNECT_TIMEOUT_S, LIST_READ_TIMEOUT_S),
                )
            except _Expired:
                if not cont or restarts >= 2:
                    raise
                items, rv, cont = [], "", ""  # the continue token expired: start over
                restarts += 1
                continue
            try:
                page = _decode_list(resp.data)
            finally:
                self._done(resp)
            items += page.items or ()
            rv = rv or page.metadata.resource_version
            cont = page.metadata.continue_
            if not cont:
                return items, rv

    def _list_and_apply(self) -> None:
        w = self.w
        items, rv = self._list()
        fresh = {_key(obj): _ns_name(obj) for obj in items} if self.namespace else {}
        if not self.settled:
            self.settled = True
            w._settle(self, items)
        else:
            now = w._clock()
            if self.namespace is None:
                w.podmap.replace(self.res.kind, items, now)
            else:  # replace, scoped to this namespace
                for obj in items:
                    w.podmap.observe(self.res.kind, obj, now)
                for key, (ns, name) in self.keys.items():
                    if key not in fresh:
                        stub = {"metadata": {"uid": key, "namespace": ns, "name": name}}
                        if "/" in key:  # an object without uid is known by namespace/name
                            del stub["metadata"]["uid"]
                        w.podmap.observe(self.res.kind, stub, now, deleted=True)
            if self.listed:
                w._count("relists")
        if self.namespace is not None:
            self.keys = fresh
        self.rv = rv
        self.listed = True
        w._count("lists")
        w._set_error(self, None)
        w._check_ready()

    def _watch(self, resuming: bool) -> tuple[bool, bool]:
        """One watch request, read to its end: (it ended on a 410 ERROR event, it delivered
        events or lasted `LIVELY_S`)."""
        from urllib3.exceptions import HTTPError

        w = self.w
        t0 = time.monotonic()
        resp = self._open(
            watch=True,
            resource_version=self.rv or None,
            allow_watch_bookmarks=True,
            timeout_seconds=w.watch_timeout_s,
            _request_timeout=(CONNECT_TIMEOUT_S, w.watch_timeout_s + WATCH_READ_SLACK_S),
        )
        w._count("watches")
        if resuming:
            w._count("resumes")
        w._set_error(self, None)
        got = False
        buf = bytearray()
        try:
            while True:
                try:
                    data = resp.read1(_READ_SIZE)
                except (HTTPError, OSError) as e:
                    raise _Broken(e, got) from e
                if not data:
                    break
                buf += data
                start = 0
                while (end := buf.find(b"\n", start)) >= 0:
                    line = bytes(buf[start:end])
                    start = end + 1
                    if line.strip():
                        if self._event(line):
                            return True, True
                        got = True
                del buf[:start]
                if len(buf) > MAX_EVENT_BYTES:
                    raise ValueError(f"a watch event over {MAX_EVENT_BYTES} bytes")
            if buf.strip():
                got = True
                if self._event(bytes(buf)):
                    return True, True
            return False, got or time.monotonic() - t0 >= LIVELY_S
        finally:
            self._done(resp)

    def _event(self, line: bytes) -> bool:
        """Apply one watch event; True for a 410 ERROR (relist)."""
        w = self.w
        ev = _decode_event(line)
        obj = ev.object
        if ev.type == "ERROR":
            if obj.get("code") == 410:
                return True
            raise _StatusError(obj)
        if ev.type in ("ADDED", "MODIFIED", "DELETED"):
            deleted = ev.type == "DELETED"
            changed = w.podmap.observe(self.res.kind, obj, w._clock(), deleted=deleted)
            if self.namespace is not None:
                if deleted:
                    self.keys.pop(_key(obj), None)
                else:
                    self.keys[_key(obj)] = _ns_name(obj)
            with w._lock:
                w._stats["events"] += 1
                w._stats["changes"] += changed
        elif ev.type == "BOOKMARK":
            w._count("bookmarks")
        meta = obj.get("metadata")
        rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
        if isinstance(rv, str) and rv:
            self.rv = rv
        return False


def _backoff(n: int) -> float:
    """The delay before the retry after ``n`` consecutive failures (n >= 1), jittered."""
    return min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0 ** (n - 1)) * random.uniform(1.0, 1.2)


def _release(resp: Any) -> None:
    with contextlib.suppress(Exception):
        resp.close()
        resp.release_conn()


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _ns_name(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = _meta(obj)
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _key(obj: Mapping[str, Any]) -> str:
    """The object's identity as `PodMap` keys it: uid, else namespace/name."""
    uid = _meta(obj).get("uid")
    if isinstance(uid, str) and uid:
        return uid
    ns, name = _ns_name(obj)
    return f"{ns}/{name}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _status_text(status: Mapping[str, Any], code: object, fallback: str) -> str:
    reason = str(status.get("reason") or "")
    message = _one_line(str(status.get("message") or ""))
    if code == 401:
        return f"unauthorized: the API server rejected the credentials ({message or reason})"
    if message and reason:
        return f"{reason[:1].lower()}{reason[1:]}: {message}"  # "forbidden: pods is forbidden..."
    return fallback


def _describe(e: BaseException, verb: str, what: str) -> str:
    """One line saying what failed."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import MaxRetryError, ProtocolError, ReadTimeoutError

    if isinstance(e, ApiException):
        fallback = f"{verb} {what}: HTTP {e.status} {_one_line(str(e.reason or ''))}"
        if not e.status:  # raised before any response: the reason is the whole story
            fallback = f"{verb} {what}: {_one_line(str(e.reason or ''))}"
        try:
            status = msgspec.json.decode(e.body or b"")
        except (msgspec.DecodeError, TypeError):
            status = None
        if isinstance(status, dict):
            return _status_text(status, e.status, fallback)
        return fallback
    if isinstance(e, _StatusError):
        code = e.status.get("code")
        return _status_text(e.status, code, f"watch {what}: ERROR event {code}")
    if isinstance(e, _Broken):
        cause = e.cause
        if isinstance(cause, ReadTimeoutError):
            return f"watch {what}: no data from the API server, reconnecting"
        text = cause.args[0] if isinstance(cause, ProtocolError) and cause.args else cause
        return f"watch {what}: stream broken ({_one_line(str(text))}), resuming"
    if isinstance(e, MaxRetryError):
        return f"{verb} {what}: cannot reach the API server: {_one_line(str(e.reason))}"
    return f"{verb} {what}: {type(e).__name__}: {_one_line(str(e))}"

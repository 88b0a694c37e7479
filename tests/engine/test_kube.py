"""The resolver's watches against the stand-in apiserver (tests/kube/apiserver.py) over HTTP,
through the real ``kubernetes`` client: first lists, live events, resumes after dropped watches
(nothing lost, nothing twice), relists after compaction, 403s reported without a hot loop,
namespace-scoped streams, a prompt stop, and `load_client`."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.config import incluster_config

from shark_tui.engine.kube import NO_KUBECONFIG, KubeError, KubeWatcher, load_client
from shark_tui.engine.podmap import PodMap, Ref
from tests.kube.apiserver import ApiServer

WAIT_S = 5.0

Log = list[tuple[str, str, str, str, int]]  # (what, kind, name, resourceVersion, ts)


class Clock:
    """time.time_ns, strictly increasing: no two stamps collapse into one instant."""

    def __init__(self) -> None:
        self.t = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            self.t = max(time.time_ns(), self.t + 1)
            return self.t


class RecordingMap(PodMap):
    """A PodMap that logs what the watcher feeds it, with the stamps it used."""

    def __init__(self) -> None:
        super().__init__()
        self.log: Log = []
        self.cond = threading.Condition()

    def observe(self, kind: str, obj: Mapping[str, Any], ts_ns: int, deleted: bool = False) -> bool:
        changed = super().observe(kind, obj, ts_ns, deleted)
        meta = obj.get("metadata") or {}
        with self.cond:
            self.log.append(
                (
                    "DELETED" if deleted else "SEEN",
                    kind,
                    meta.get("name", ""),
                    meta.get("resourceVersion", ""),
                    ts_ns,
                )
            )
            self.cond.notify_all()
        return changed

    def replace(self, kind: str, objs: Iterable[Mapping[str, Any]], ts_ns: int) -> None:
        objs = list(objs)
        super().replace(kind, objs, ts_ns)
        names = ",".join(sorted(o["metadata"]["name"] for o in objs))
        with self.cond:
            self.log.append(("REPLACE", kind, names, "", ts_ns))
            self.cond.notify_all()

    def wait_for(self, pred: Callable[[Log], object], timeout: float = WAIT_S) -> Any:
        with self.cond:
            found = self.cond.wait_for(lambda: pred(self.log), timeout)
        assert found, f"timed out; log: {self.log}"
        return found

    def entry(self, what: str, name: str) -> tuple[str, str, str, str, int]:
        """Wait for the first log entry ``what`` of ``name``."""

        def first(log: Log) -> Any:
            return next((e for e in log if e[0] == what and e[2] == name), None)

        return self.wait_for(first)  # type: ignore[no-any-return]

    def since(self, n: int, kind: str = "Pod") -> Log:
        with self.cond:
            return [e for e in self.log[n:] if e[1] == kind]


def pod(name: str, ns: str, ip: str, node: str = "node-1") -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name.split("-")[0]}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx:1.27"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }  # fmt: skip


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def wait_until(pred: Callable[[], object], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def now() -> int:
    return time.time_ns()


@pytest.fixture
def api() -> Iterator[ApiServer]:
    with ApiServer() as server:
        for ns in ("shop", "db", "other"):
            server.create(namespace(ns))
        yield server


@pytest.fixture
def kube(api: ApiServer, tmp_path: Path) -> k8s.ApiClient:
    return load_client(str(api.kubeconfig(tmp_path / "kubeconfig")))


@pytest.fixture
def pm() -> RecordingMap:
    return RecordingMap()


@pytest.fixture
def watcher_factory(
    kube: k8s.ApiClient,
    pm: RecordingMap,
) -> Iterator[Callable[..., KubeWatcher]]:
    made: list[KubeWatcher] = []

    def make(**kw: Any) -> KubeWatcher:
        w = KubeWatcher(pm, kube, clock=Clock(), **kw)
        made.append(w)
        w.start()
        return w

    yield make
    for w in made:
        w.stop()


def watch_requests(api: ApiServer, path: str) -> list[dict[str, str]]:
    return [r.query for r in api.requests if r.path == path and r.query.get("watch") == "true"]


# ---- first lists, live events, the history -------------------------------------------------


def test_pods_in_two_namespaces_resolve_and_an_ip_changes_hands(
    api: ApiServer,
    pm: RecordingMap,
    watcher_factory: Callable[..., KubeWatcher],
) -> None:
    api.create(pod("web-1", "shop", "10.1.0.5"))
    api.create(pod("pg-0", "db", "10.1.0.9", node="node-2"))
    w = watcher_factory()
    assert w.ready.wait(WAIT_S)
    assert pm.resolve("10.1.0.5", now()) == Ref(name="web-1", ns="shop", kind="pod", node="node-1")
    assert pm.resolve("10.1.0.9", now()) == Ref(name="pg-0", ns="db", kind="pod", node="node-2")
    listed = pm.entry("REPLACE", "pg-0,web-1")[4]
    assert w.stats["lists"] == 3 and w.stats["relists"] == 0 and w.last_error is None

    api.delete("pods", "web-1", "shop")
    api.create(pod("web-2", "shop", "10.1.0.5", node="node-3"))
    gone = pm.entry("DELETED", "web-1")[4]
    came = pm.entry("SEEN", "web-2")[4]
    assert listed < gone < came
    web1 = Ref(name="web-1", ns="shop", kind="pod", node="node-1")
    web2 = Ref(name="web-2", ns="shop", kind="pod", node="node-3")
    assert pm.history("10.1.0.5") == [(listed, web1), (gone, None), (came, web2)]
    assert pm.resolve("10.1.0.5", gone - 1) == web1
    assert pm.resolve("10.1.0.5", came - 1) == web1  # the grace rule: the last holder
    assert pm.resolve("10.1.0.5", came) == web2
    assert pm.resolve("10.1.0.5", now()) == web2
    wait_until(lambda: w.stats["events"] == 2)
    assert w.stats["changes"] == 2
    # one watch per kind over every namespace, from the list's resourceVersion, with bookmarks
    (query,) = watch_requests(api, "/api/v1/pods")
    assert query["allowWatchBookmarks"] == "true" and int(query["timeoutSeconds"]) > 0
    assert query["resourceVersion"] not in ("", "0")


def test_service_cluster_ip_and_endpoint_slice_backing(
    api: ApiServer,
    pm: RecordingMap,
    watcher_factory: Callable[..., KubeWatcher],
) -> None:
    api.create(pod("web-1", "shop", "10.1.0.5"))
    svc = api.create({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    })  # fmt: skip
    cluster_ip = svc["spec"]["clusterIP"]
    w = watcher_factory()
    assert w.ready.wait(WAIT_S)
    assert pm.resolve(cluster_ip, now()) == Ref(
        name="web", ns="shop", kind="service", service="web"
    )
    assert pm.resolve("10.1.0.5", now(), 8080).service is None  # type: ignore[union-attr]

    api.create({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-abc12", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.1.0.5"], "conditions": {"ready": True},
                       "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "shop"}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    })  # fmt: skip
    backed = pm.entry("SEEN", "web-abc12")[4]
    ref = pm.resolve("10.1.0.5", backed, 8080)
    assert ref == Ref(name="web-1", ns="shop", kind="pod", node="node-1", service="web")
    assert pm.resolve("10.1.0.5", backed - 1, 8080).service is None  # type: ignore[union-attr]

    api.delete("endpointslices", "web-abc12", "shop")
    unbacked = pm.entry("DELETED", "web-abc12")[4]
    assert pm.resolve("10.1.0.5", unbacked, 8080).service is None  # type: ignore[union-attr]
    assert pm.resolve("10.1.0.5", unbacked - 1, 8080).service == "web"  # type: ignore[union-attr]
    wait_until(lambda: w.stats["events"] == 2)
    assert w.last_error is None


# ---- resumes and relists -------------------------------------------------------------------


def test_watches_that_time_out_go_on_from_the_last_bookmark(
    api: ApiServer,
    pm: RecordingMap,
    watcher_factory: Callable[..., KubeWatcher],
) -> None:
    w = watcher_factory(watch_timeout_s=2)
    assert w.ready.wait(WAIT_S)
    wait_until(lambda: w.stats["watches"] == 3)
    api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    api.send_bookmarks()  # every watch learns the current resourceVersion
    wait_until(lambda: w.stats["bookmarks"] == 3)
    bookmark_rv = api.resource_version
    wait_until(lambda: len(watch_requests(api, "/api/v1/pods")) >= 2)  # the first one ended
    assert watch_requests(api, "/api/v1/pods")[1]["resourceVersion"] == bookmark_rv
    api.create(pod("p1", "shop", "10.1.0.1"))
    pm.entry("SEEN", "p1")
    stats = w.stats
    assert stats["resumes"] == stats["errors"] == stats["relists"] == 0 and stats["events"] == 1
    assert w.last_error is None


def test_dropped_watches_resume_from_the_last_resource_version_exactly_once(
    api: ApiServer,
    pm: RecordingMap,
    watcher_factory: Callable[..., KubeWatcher],
) -> None:
    api.create(pod("p1", "shop", "10.1.0.1"))
    api.create(pod("p4", "db", "10.1.0.4"))
    w = watcher_factory()
    assert w.ready.wait(WAIT_S)
    live = api.create(pod("p0", "shop", "10.1.0.10"))  # the watch is live: rv moves past the list
    pm.entry("SEEN", "p0")
    wait_until(lambda: w.stats["watches"] == 3)  # every watch is open: each one breaks
    before = w.stats

    # Keep the pod watch away while things change (its resume is refused until reset_rules).
    api.forbid("watch", "pods")
    api.drop_watches()
    wait_until(lambda: (w.last_error or "").startswith("forbidden:"))
    mark = len(pm.log)
    changes = [
        api.create(pod("p2", "shop", "10.1.0.2")),
        api.create(pod("p3", "other", "10.1.0.3")),
        api.delete("pods", "p1", "shop"),
    ]
    moved = api.get("pods", "p4", "db")
    moved["status"]["podIP"], moved["status"]["podIPs"] = "10.1.0.44", [{"ip": "10.1.0.44"}]
    changes.append(api.update(moved))
    api.reset_rules()

    expected = [
        (
            "DELETED" if c["metadata"]["name"] == "p1" else "SEEN",
            "Pod",
            c["metadata"]["name"],
            c["metadata"]["resourceVersion"],
        )
        for c in changes
    ]
    pm.wait_for(lambda log: len([e for e in log[mark:] if e[1] == "Pod"]) >= len(expected))
    time.sleep(0.3)  # nothing more may come
    assert [e[:4] for e in pm.since(mark)] == expected
    stats = w.stats
    assert stats["events"] - before["events"] == len(expected)
    assert stats["relists"] == 0 and stats["lists"] == 3
    assert stats["resumes"] - before["resumes"] == 3  # pods, services, endpoint slices
    assert stats["errors"] > before["errors"] and w.last_error is None
    # every retry of the pod watch came back from the resourceVersion of the last event it saw
    retries = watch_requests(api, "/api/v1/pods")[1:]
    assert len(retries) >= 2  # refused, then resumed
    assert {q["resourceVersion"] for q in retries} == {live["metadata"]["resourceVersion"]}

    t = now()
    assert pm.resolve("10.1.0.2", t).name == "p2"  # type: ignore[union-attr]
    assert pm.resolve("10.1.0.3", t) == Ref(name="p3", ns="other", kind="pod", node="node-1")
    assert pm.resolve("10.1.0.44", t).name == "p4"  # type: ignore[union-attr]
    assert pm.history("10.1.0.1")[-1][1] is None  # released
    assert pm.history("10.1.0.4")[-1][1] is None


def test_compaction_while_away_relists_and_replaces(
    api: ApiServer,
    pm: RecordingMap,
    watcher_factory: Callable[..., KubeWatcher],
) -> None:
    api.create(pod("p1", "shop", "10.1.0.1"))
    api.create(pod("p2", "db", "10.1.0.2"))
    w = watcher_factory()
    assert w.ready.wait(WAIT_S)
    wait_until(lambda: w.stats["watches"] == 3)  # every watch is open: each one breaks
    api.forbid("watch", "pods")
    api.drop_watches()
    wait_until(lambda: w.last_error is not None)
    wait_until(lambda: w.stats["resumes"] == 2)  # services, slices: back before the compaction
    api.delete("pods", "p1", "shop")
    api.create(pod("p5", "shop", "10.1.0.5"))
    api.compact()  # the pod watch's resourceVersion is gone: it gets a 410 ERROR event
    compacted = int(api.resource_version)
    api.reset_rules()

    relisted = pm.entry("REPLACE", "p2,p5")[4]
    wait_until(lambda: w.stats["lists"] == 4)
    assert w.stats["relists"] == 1
    assert [e[0] for e in pm.since(0) if e[2] == "p1"] == []  # the relist ended it, not an event
    assert pm.history("10.1.0.1")[-1] == (relisted, None)
    assert pm.resolve("10.1.0.5", relisted).name == "p5"  # type: ignore[union-attr]
    assert len(pm.history("10.1.0.2")) == 1  # unchanged by the relist

    # and the watch goes on from the relist's resourceVersion
    api.create(pod("p6", "other", "10.1.0.6"))
    seen = pm.entry("SEEN", "p6")[4]
    assert pm.resolve("10.1.0.6", seen).name == "p6"  # type: ignore[union-attr]
    wait_until(lambda: w.last_error is None)
    rvs = [int(q["resourceVersion"]) for q in watch_requests(api, "/api/v1/pods")]
    assert rvs[0] == rvs[-2] < compacted <= rvs[-1]  # resumes from the first list's, then new


# ---- namespaces ----------------------------------------------------------------------------


def test_namespace_streams_watch_only_their_namespaces_and_relist_alone(
    api: ApiServer,
    pm: RecordingMap,
    watcher_factory: Callable[..., KubeWatcher],
) -> None:
    api.create(pod("web-1", "shop", "10.1.0.1"))
    api.create(pod("pg-0", "db", "10.1.0.2"))
    api.create(pod("x-0", "other", "10.1.0.3"))
    w = watcher_factory(namespaces=["shop", "db"])
    assert w.ready.wait(WAIT_S)
    assert pm.resolve("10.1.0.1", now()).name == "web-1"  # type: ignore[union-attr]
    assert pm.resolve("10.1.0.2", now()).name == "pg-0"  # type: ignore[union-attr]
    assert pm.resolve("10.1.0.3", now()) is None
    # one Pod replace for both namespaces' first lists
    assert [e[2] for e in pm.log if e[:2] == ("REPLACE", "Pod")] == ["pg-0,web-1"]
    paths = {r.path for r in api.requests}
    assert "/api/v1/namespaces/shop/pods" in paths and "/api/v1/namespaces/db/pods" in paths
    assert "/api/v1/pods" not in paths and "/apis/discovery.k8s.io/v1/endpointslices" not in paths
    assert w.stats["lists"] == 6

    api.create(pod("x-1", "other", "10.1.0.4"))  # not watched
    api.create(pod("pg-1", "db", "10.1.0.5"))
    pm.entry("SEEN", "pg-1")
    assert pm.resolve("10.1.0.4", now()) is None

    # The shop pod stream alone misses its history: its relist ends what it had, only there.
    wait_until(lambda: w.stats["watches"] == 6)  # every watch is open: each one breaks
    api.forbid("watch", "pods", namespace="shop")
    api.drop_watches()
    wait_until(lambda: 'in the namespace "shop"' in (w.last_error or ""))
    wait_until(lambda: w.stats["resumes"] == 5)  # every other stream: before the compaction
    api.delete("pods", "web-1", "shop")
    api.create(pod("web-2", "shop", "10.1.0.6"))
    api.compact()
    api.reset_rules()
    pm.entry("SEEN", "web-2")
    gone = pm.entry("DELETED", "web-1")[4]
    wait_until(lambda: w.stats["relists"] == 1)
    assert pm.history("10.1.0.1")[-1] == (gone, None)
    assert len(pm.history("10.1.0.2")) == 1  # the db pods were not touched
    assert pm.resolve("10.1.0.2", now()).name == "pg-0"  # type: ignore[union-attr]
    assert pm.resolve("10.1.0.6", now()).name == "web-2"  # type: ignore[union-attr]


def test_a_forbidden_namespace_leaves_the_others_working(
    api: ApiServer,
    pm: RecordingMap,
    watcher_factory: Callable[..., KubeWatcher],
) -> None:
    api.create(pod("web-1", "shop", "10.1.0.1"))
    api.create(pod("pg-0", "db", "10.1.0.2"))
    api.forbid("list", "pods", namespace="db")
    w = watcher_factory(namespaces=["shop", "db"])
    pm.entry("REPLACE", "web-1")
    assert pm.resolve("10.1.0.1", now()).name == "web-1"  # type: ignore[union-attr]
    assert pm.resolve("10.1.0.2", now()) is None
    assert not w.ready.is_set()
    assert w.last_error == (
        'forbidden: pods is forbidden: User "kubernetes-admin" cannot list resource "pods" in '
        'API group "" in the namespace "db"'
    )

    api.reset_rules()
    assert w.ready.wait(WAIT_S)
    assert pm.resolve("10.1.0.2", now()).name == "pg-0"  # type: ignore[union-attr]
    assert w.last_error is None and w.stats["relists"] == 0


# ---- errors and stopping -------------------------------------------------------------------


def test_forbidden_watch_is_reported_and_retried_with_backoff(
    api: ApiServer,
    watcher_factory: Callable[..., KubeWatcher],
) -> None:
    api.forbid("watch", "pods")
    w = watcher_factory()
    assert w.ready.wait(WAIT_S)  # the lists went through
    wait_until(lambda: w.last_error is not None)
    assert w.last_error == (
        'forbidden: pods is forbidden: User "kubernetes-admin" cannot watch resource "pods" in '
        'API group "" at the cluster scope'
    )
    n0 = len(watch_requests(api, "/api/v1/pods"))
    time.sleep(2.0)
    n1 = len(watch_requests(api, "/api/v1/pods"))
    assert 1 <= n1 - n0 <= 3, (n0, n1)  # 0.5 s, 1 s, 2 s, ... apart: no hot loop
    assert n1 - 1 <= w.stats["errors"] <= n1 + 1 and w.alive
    assert len(watch_requests(api, "/api/v1/services")) == 1  # the others are unaffected


def test_stop_returns_promptly_with_watches_open_and_in_backoff(
    api: ApiServer,
    watcher_factory: Callable[..., KubeWatcher],
) -> None:
    api.forbid("watch", "services")
    w = watcher_factory(namespaces=["shop", "db"])
    assert w.ready.wait(WAIT_S)
    wait_until(lambda: w.last_error is not None and w.stats["watches"] == 4)
    t = time.monotonic()
    w.stop()
    assert time.monotonic() - t < 1.0
    assert not w.alive
    assert not [th for th in threading.enumerate() if th.name.startswith("kube ")]


def test_engine_import_leaves_kubernetes_out() -> None:
    code = "import sys, shark_tui.engine.kube; print('kubernetes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- load_client ---------------------------------------------------------------------------


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for var in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def test_load_client_from_a_kubeconfig(
    api: ApiServer,
    tmp_path: Path,
    no_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = api.kubeconfig(tmp_path / "kc", context="lab", token="t0ken", user="alice")
    names = k8s.CoreV1Api(load_client(str(path))).list_namespace()
    assert "shop" in [n.metadata.name for n in names.items if n.metadata]
    headers = {k.lower(): v for k, v in api.requests[-1].headers.items()}
    assert headers["authorization"] == "Bearer t0ken"
    assert load_client(str(path), context="lab").configuration.host == api.url

    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}:{path}")  # a list, merged
    assert load_client().configuration.host == api.url
    monkeypatch.delenv("KUBECONFIG")
    (no_env / ".kube").mkdir()
    (no_env / ".kube" / "config").write_text(path.read_text())
    assert load_client().configuration.host == api.url

    with pytest.raises(KubeError, match=r"^kubeconfig .*kc: .*nope"):
        load_client(str(path), context="nope")
    with pytest.raises(KubeError, match=r"^kubeconfig /nonexistent: no such file$"):
        load_client("/nonexistent")


def test_load_client_without_any_config(no_env: Path) -> None:
    with pytest.raises(KubeError) as e:
        load_client()
    assert (
        str(e.value)
        == NO_KUBECONFIG
        == (
            "no kubeconfig: set KUBECONFIG or pass --kubeconfig; in a pod, the service account is "
            "used"
        )
    )


def test_load_client_in_a_pod_uses_the_service_account(
    no_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    with pytest.raises(KubeError, match=r"^in-cluster config: Service token file does not exist"):
        load_client()
    token.write_text("sa-token")
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    cfg = load_client().configuration
    assert cfg.host == "https://10.96.0.1:443"
    assert cfg.api_key["BearerToken"] == "bearer sa-token"

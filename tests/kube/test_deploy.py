"""``shark-tui tap``, ``manifests`` and ``clean`` against the stand-in API server that kubectl
1.32 and the ``kubernetes`` client drive (tests/kube/apiserver.py).

The stand-in has no controllers, no kubelet and no ``pods/portforward``: `Controller` plays the
DaemonSet controller and the kubelets (it creates the daemon's pod on each node with the status
a test wants and writes the DaemonSet's status), the TUI is a stand-in that records the links it
is given (``cli._run_app``) — except in the Ctrl-C test, where the real app runs headless and
ctrl+c is pressed in it — and the port-forward step is replaced by local listeners — except in
`test_port_forward_refused_by_the_api_server_is_said_before_the_tui`, where the real one meets
the stand-in's 404. The relay itself is tested in test_portforward.py. SIGTERM and SIGHUP are
sent to a ``shark-tui tap`` child process.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from textual.pilot import Pilot

from shark_tui import cli
from shark_tui.app import SharkApp
from shark_tui.engine import deploy, kube
from shark_tui.engine.deploy import NAME, NAMESPACE
from tests.kube.apiserver import (
    ApiError,
    ApiServer,
    pod_security_status,
    pod_security_warning,
)

TOKEN = "tok-fixed-for-the-test"
CONTEXT_NS = "team"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
VENV_BIN = Path(sys.executable).parent
run_app = SharkApp.run  # the real one: `Ui` replaces it with a headless run that presses keys
KINDS = {  # kind -> the stand-in's resource name, in tap's order
    "Namespace": "namespaces",
    "ServiceAccount": "serviceaccounts",
    "ClusterRole": "clusterroles",
    "ClusterRoleBinding": "clusterrolebindings",
    "Secret": "secrets",
    "DaemonSet": "daemonsets",
}
VIOLATIONS = [
    "host namespaces (hostNetwork=true, hostPID=true)",
    'hostPath volumes (volumes "proc", "sys", "tracefs", "debugfs", "modules", "usr-src")',
    'non-default capabilities (container "daemon" must not include "BPF", "NET_ADMIN", '
    '"PERFMON", "SYS_ADMIN", "SYS_PTRACE" in securityContext.capabilities.add)',
]
UNDONE = [  # tap's last lines when it leaves the cluster as it found it
    "shark-tui: deleted daemonset shark-tui/shark-tui",
    "shark-tui: deleted secret shark-tui/shark-tui-token",
    "shark-tui: deleted clusterrolebinding shark-tui",
    "shark-tui: deleted clusterrole shark-tui",
    "shark-tui: deleted serviceaccount shark-tui/shark-tui",
    "shark-tui: deleted namespace shark-tui",
]
PSA_FIX = (
    "they need host access; allow it with: kubectl label namespace shark-tui "
    "pod-security.kubernetes.io/enforce=privileged --overwrite"
)


# ---------------------------------------------------------------------------------------------
# fixtures and the controller


@pytest.fixture
def api() -> Iterator[ApiServer]:
    with ApiServer(namespace_finalize_delay=0.2) as server:
        yield server


@pytest.fixture
def kubeconfig(api: ApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = api.kubeconfig(tmp_path / "kubeconfig", namespace=CONTEXT_NS)
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(deploy, "new_token", lambda: TOKEN)
    monkeypatch.setattr(deploy, "POLL_S", 0.02)
    return path


class FakeForward:
    """What `deploy.forward_pods` returns, without a port-forward: a listener per daemon."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.sock = socket.create_server(("127.0.0.1", 0))
        host, port = self.sock.getsockname()[:2]
        self.address = f"{host}:{port}"
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True
        self.sock.close()


class Ui:
    """The TUI stand-in (``cli._run_app``) and the port-forward stand-in (`deploy.forward_pods`):
    records what tap hands them; ``then`` runs in place of the TUI. With ``keys``, the real TUI
    runs instead (``cli._run_app``, `SharkApp`, headless), ``then`` once it is up, and the keys
    are pressed in it (the app must quit on them)."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        then: Callable[[], object] = lambda: 0,
        real_forward: bool = False,
        keys: Sequence[str] = (),
    ) -> None:
        self.links: list[tuple[str, str]] | None = None
        self.forwards: list[FakeForward] = []
        self.pods: list[deploy.DaemonPod] = []
        self.then = then
        self.keys = keys
        self.return_code: int | None = None  # the real TUI's
        if keys:
            monkeypatch.setattr(SharkApp, "run", lambda app, **_: self.run_headless(app))
        else:
            monkeypatch.setattr(cli, "_run_app", self.run)
        if not real_forward:
            monkeypatch.setattr(deploy, "forward_pods", self.forward)

    def forward(self, tap: deploy.Tap, pods: Sequence[deploy.DaemonPod]) -> list[FakeForward]:
        self.pods = list(pods)
        self.forwards = [FakeForward(p.node) for p in pods]
        return self.forwards

    def run(self, links: list[tuple[str, str]]) -> int:
        self.links = links
        self.then()
        return 0

    def run_headless(self, app: SharkApp) -> None:
        self.links = [(link.address, link.token) for link in app.links]

        async def press(pilot: Pilot[None]) -> None:
            self.then()
            await pilot.press(*self.keys)
            for _ in range(100):
                if app.return_code is not None:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"{self.keys} did not quit the app")  # the app exits, said

        run_app(app, headless=True, size=(120, 30), auto_pilot=press)
        self.return_code = app.return_code


def ready_status() -> dict[str, Any]:
    return {
        "phase": "Running",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True"},
        ],
        "containerStatuses": [
            {
                "name": "daemon",
                "ready": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}},
            }
        ],
    }


def waiting_status(reason: str, message: str, last: dict[str, Any] | None = None) -> dict[str, Any]:
    cs: dict[str, Any] = {
        "name": "daemon",
        "ready": False,
        "restartCount": 3,
        "state": {"waiting": {"reason": reason, "message": message}},
    }
    if last:
        cs["lastState"] = {"terminated": last}
    return {
        "phase": "Pending" if "Image" in reason else "Running",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
        ],
        "containerStatuses": [cs],
    }


def unschedulable_status(message: str) -> dict[str, Any]:
    return {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
            },
        ],
    }


class Controller:
    """Plays the DaemonSet controller and the kubelets: once the DaemonSet exists (or changes
    generation), one pod per node with ``statuses[node]`` (ready when None; a node mapped to
    "nopods" gets none), and the DaemonSet's status as the controller writes it. ``events``:
    FailedCreate messages the controller records instead of creating pods."""

    def __init__(self, api: ApiServer, statuses: dict[str, Any], events: Sequence[str] = ()):
        self.api = api
        self.statuses = statuses
        self.events = list(events)
        self.seen_generation = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Controller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            try:
                ds = self.api.get("daemonsets", NAME, NAMESPACE)
            except ApiError:
                continue
            generation = int(ds["metadata"].get("generation", 1))
            if generation != self.seen_generation:
                self.seen_generation = generation
                self._play(ds)

    def _play(self, ds: dict[str, Any]) -> None:
        template = ds["spec"]["template"]
        for pod in self.api.list("pods", NAMESPACE, label_selector="app.kubernetes.io/name"):
            self.api.delete("pods", pod["metadata"]["name"], NAMESPACE)
        for message in self.events:
            self.api.create(
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"name": f"{NAME}.failedcreate", "namespace": NAMESPACE},
                    "involvedObject": {
                        "kind": "DaemonSet",
                        "namespace": NAMESPACE,
                        "name": NAME,
                        "uid": ds["metadata"]["uid"],
                        "apiVersion": "apps/v1",
                    },
                    "reason": "FailedCreate",
                    "type": "Warning",
                    "message": message,
                    "lastTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "source": {"component": "daemonset-controller"},
                }
            )
        ready = 0
        for node, status in self.statuses.items():
            if self.events:
                break
            spec = copy.deepcopy(template["spec"])
            status = status or ready_status()
            if status.get("conditions", [{}])[0].get("reason") == "Unschedulable":
                spec["affinity"] = {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchFields": [
                                        {"key": "metadata.name", "operator": "In", "values": [node]}
                                    ]
                                }
                            ]
                        }
                    }
                }
            else:
                spec["nodeName"] = node
            self.api.create(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"{NAME}-{node}",
                        "namespace": NAMESPACE,
                        "labels": dict(template["metadata"]["labels"]),
                        "ownerReferences": [
                            {
                                "apiVersion": "apps/v1",
                                "kind": "DaemonSet",
                                "name": NAME,
                                "uid": ds["metadata"]["uid"],
                                "controller": True,
                            }
                        ],
                    },
                    "spec": spec,
                    "status": status,
                }
            )
            ready += status is not None and any(
                c["type"] == "Ready" and c["status"] == "True" for c in status["conditions"]
            )
        n = len(self.statuses)
        ds = self.api.get("daemonsets", NAME, NAMESPACE)
        ds["status"] = {
            "observedGeneration": ds["metadata"]["generation"],
            "desiredNumberScheduled": n,
            "currentNumberScheduled": 0 if self.events else n,
            "updatedNumberScheduled": 0 if self.events else n,
            "numberReady": ready,
            "numberAvailable": ready,
            "numberMisscheduled": 0,
        }
        self.api.update(ds)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def ours(api: ApiServer) -> dict[str, list[str]]:
    """Every object labelled managed-by=shark-tui in the stand-in, by resource."""
    found = {}
    for kind, resource in KINDS.items():
        objs = api.list(resource, label_selector="app.kubernetes.io/managed-by=shark-tui")
        found[kind] = [
            f"{o['metadata'].get('namespace') or ''}/{o['metadata']['name']}".lstrip("/")
            for o in objs
            if not o["metadata"].get("deletionTimestamp")
        ]
    return {k: v for k, v in found.items() if v}


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def namespace_gone(api: ApiServer) -> bool:
    try:
        api.get("namespaces", NAMESPACE)
    except ApiError:
        return True
    return False


def posts(api: ApiServer) -> list[dict[str, Any]]:
    return [r.body for r in api.requests if r.method == "POST"]


def add_bystanders(api: ApiServer) -> None:
    """Objects tap did not make, some with the names it uses: clean must leave them alone."""
    api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bystander"}})
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "shark-tui-token", "namespace": "bystander"},
            "data": {"token": "eA=="},
        }
    )
    api.create(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "shark-tui", "namespace": "bystander"},
        }
    )
    api.create(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "view-ish", "labels": {"app.kubernetes.io/name": "x"}},
            "rules": [],
        }
    )


def bystanders(api: ApiServer) -> list[str]:
    names = []
    for resource, name, ns in (
        ("namespaces", "bystander", None),
        ("secrets", "shark-tui-token", "bystander"),
        ("serviceaccounts", "shark-tui", "bystander"),
        ("clusterroles", "view-ish", None),
    ):
        api.get(resource, name, ns)
        names.append(name)
    return names


# ---------------------------------------------------------------------------------------------
# the objects


def test_manifests_validate_against_the_kubernetes_schemas(
    kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = run(["manifests", "api-.*"], capsys)
    assert rc == 0 and err == ""
    docs = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in docs] == list(KINDS)
    for doc in docs:
        kubernetes_validate.validate(doc, "1.32", strict=True)
    # the validator is strict: an unknown field fails
    bad = copy.deepcopy(docs[-1])
    bad["spec"]["template"]["spec"]["containers"][0]["capabilites"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.32", strict=True)
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "shark-tui"


def test_cluster_role_reads_exactly_what_the_resolver_reads() -> None:
    role = next(o for o in deploy.objects(deploy.TapSpec(token="t")) if o["kind"] == "ClusterRole")
    groups = {"CoreV1Api": "", "DiscoveryV1Api": "discovery.k8s.io"}
    resolver = {(groups[r.api], r.plural) for r in kube._RESOURCES}
    granted = {
        (g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    assert (
        granted
        == resolver
        == {("", "pods"), ("", "services"), ("discovery.k8s.io", "endpointslices")}
    )
    assert all(sorted(rule["verbs"]) == ["get", "list", "watch"] for rule in role["rules"])
    assert set(role) == {"apiVersion", "kind", "metadata", "rules"}  # no aggregation, no more
    binding = next(
        o for o in deploy.objects(deploy.TapSpec(token="t")) if o["kind"] == "ClusterRoleBinding"
    )
    assert binding["roleRef"]["name"] == NAME
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]


def test_daemonset_runs_the_daemon_on_every_node_with_host_access(
    kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = deploy.objects(
        deploy.TapSpec(
            token="t", pods="web-.*", namespaces=("a", "b"), image="reg.example/shark-tui:9"
        )
    )[-1]
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["hostNetwork"] and pod["hostPID"] and pod["serviceAccountName"] == NAME
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert c["image"] == "reg.example/shark-tui:9"
    assert c["command"] == ["shark-tui", "daemon"]
    assert c["args"] == [
        "--kube",
        "--node",
        "$(NODE_NAME)",
        "--listen",
        "127.0.0.1:8898",
        "--token-file",
        "/var/run/shark-tui/token",
        "--store",
        "/var/lib/shark-tui",
        "--max-bytes",
        "1G",
        "--tls-if-possible",
        "--pods",
        "web-.*",
        "-n",
        "a",
        "-n",
        "b",
    ]
    assert c["env"] == [
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    ]
    assert sorted(c["securityContext"]["capabilities"]["add"]) == [
        "BPF",
        "NET_ADMIN",
        "NET_RAW",
        "PERFMON",
        "SYS_ADMIN",
        "SYS_PTRACE",
    ]
    assert set(c["resources"]) == {"requests", "limits"}
    mounts = {m["mountPath"]: m.get("readOnly", False) for m in c["volumeMounts"]}
    assert mounts["/sys"] is True and mounts["/sys/kernel/tracing"] is False
    assert mounts["/var/run/shark-tui"] is True
    assert mounts["/host/proc"] is True  # the host's /proc, read-only, besides hostPID's
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["token"]["secret"] == {"secretName": "shark-tui-token", "defaultMode": 0o400}
    assert volumes["tracefs"]["hostPath"]["path"] == "/sys/kernel/tracing"
    assert volumes["proc"]["hostPath"] == {"path": "/proc", "type": "Directory"}
    hosted = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v} == {
        "proc": "/proc",
        "sys": "/sys",
        "tracefs": "/sys/kernel/tracing",
        "debugfs": "/sys/kernel/debug",
        "modules": "/lib/modules",
        "usr-src": "/usr/src",
    }
    assert set(hosted) == set(volumes)  # every volume mounted, every mount a volume
    # targets: the context's namespace by default, every namespace with -A
    for argv, tail in (
        (["manifests"], ["-n", CONTEXT_NS]),
        (["manifests", "-A"], ["--tls-if-possible"]),
        (["manifests", "-n", "x", "-n", "y", "-n", "x"], ["-n", "x", "-n", "y"]),
    ):
        rc, out, _ = run(argv, capsys)
        assert rc == 0
        args = list(yaml.safe_load_all(out))[-1]["spec"]["template"]["spec"]["containers"][0]
        assert args["args"][-len(tail) :] == tail, argv


# ---------------------------------------------------------------------------------------------
# tap, clean


def test_tap_creates_what_manifests_prints_and_clean_removes_it(
    api: ApiServer,
    kubeconfig: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add_bystanders(api)
    rc, printed, _ = run(["manifests", "api-.*", "-n", "shop"], capsys)
    assert rc == 0
    ui = Ui(monkeypatch)
    api.clear_requests()
    with Controller(api, {"node-b": None, "node-a": None}):
        rc, out, err = run(["tap", "api-.*", "-n", "shop", "--keep"], capsys)
    assert out == ""
    assert rc == 0, err
    assert posts(api) == list(yaml.safe_load_all(printed))  # exactly, field for field
    assert {r.query.get("fieldValidation") for r in api.requests if r.method == "POST"} == {"Warn"}
    assert ui.links == [(f.address, TOKEN) for f in ui.forwards]
    assert [f.node for f in ui.forwards] == ["node-a", "node-b"] and all(
        f.stopped for f in ui.forwards
    )
    secret = api.get("secrets", "shark-tui-token", NAMESPACE)
    assert base64.b64decode(secret["data"]["token"]).decode() == TOKEN
    assert err.splitlines() == [
        "shark-tui: created namespace shark-tui",
        "shark-tui: created serviceaccount shark-tui/shark-tui",
        "shark-tui: created clusterrole shark-tui",
        "shark-tui: created clusterrolebinding shark-tui",
        "shark-tui: created secret shark-tui/shark-tui-token",
        "shark-tui: created daemonset shark-tui/shark-tui",
        *[line for line in err.splitlines() if "rollout:" in line],
        "shark-tui: --keep: the daemons stay in the cluster (shark-tui clean removes them)",
    ]
    assert err.splitlines()[-2] == "shark-tui: rollout: 2/2 daemons ready"
    assert ours(api) == {
        "Namespace": ["shark-tui"],
        "ServiceAccount": ["shark-tui/shark-tui"],
        "Secret": ["shark-tui/shark-tui-token"],
        "ClusterRole": ["shark-tui"],
        "ClusterRoleBinding": ["shark-tui"],
        "DaemonSet": ["shark-tui/shark-tui"],
    }

    rc, _, err = run(["clean"], capsys)
    assert rc == 0, err
    assert err.splitlines() == [
        "shark-tui: deleted daemonset shark-tui/shark-tui",
        "shark-tui: deleted secret shark-tui/shark-tui-token",
        "shark-tui: deleted clusterrolebinding shark-tui",
        "shark-tui: deleted clusterrole shark-tui",
        "shark-tui: deleted serviceaccount shark-tui/shark-tui",
        "shark-tui: deleted namespace shark-tui",
        "shark-tui: waiting for namespace shark-tui to terminate",
    ]
    assert ours(api) == {} and namespace_gone(api)
    assert bystanders(api) == ["bystander", "shark-tui-token", "shark-tui", "view-ish"]
    rc, _, err = run(["clean"], capsys)
    assert (rc, err) == (
        0,
        "shark-tui: nothing to clean: no object labelled app.kubernetes.io/managed-by=shark-tui\n",
    )


def test_kubectl_applies_the_manifests_and_the_plugin_is_the_same_program(
    api: ApiServer,
    kubeconfig: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    plugin = subprocess.run(
        [KUBECTL, "shark", "manifests", "-A", "--image", "r/s:1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plugin.returncode == 0, plugin.stderr
    rc, out, _ = run(["manifests", "-A", "--image", "r/s:1"], capsys)
    assert rc == 0
    ours_docs, plugin_docs = list(yaml.safe_load_all(out)), list(yaml.safe_load_all(plugin.stdout))
    for docs in (ours_docs, plugin_docs):  # the token is new each time
        docs[4]["data"]["token"] = "-"
    assert plugin_docs == ours_docs
    applied = subprocess.run(
        [KUBECTL, "apply", "-f", "-"],
        input=plugin.stdout,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines() == [
        "namespace/shark-tui created",
        "serviceaccount/shark-tui created",
        "clusterrole.rbac.authorization.k8s.io/shark-tui created",
        "clusterrolebinding.rbac.authorization.k8s.io/shark-tui created",
        "secret/shark-tui-token created",
        "daemonset.apps/shark-tui created",
    ]
    creates = [r for r in api.requests if r.method == "POST"]
    assert all(r.query.get("fieldValidation") == "Strict" for r in creates)
    assert len(ours(api)) == 6
    clean = subprocess.run(
        [KUBECTL, "shark", "clean"], env=env, capture_output=True, text=True, timeout=60
    )
    assert clean.returncode == 0, clean.stderr
    assert ours(api) == {} and namespace_gone(api)


@pytest.mark.parametrize("keep", [False, True])
def test_ctrl_c_in_the_tui_leaves_the_cluster_as_tap_found_it(
    keep: bool,
    api: ApiServer,
    kubeconfig: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real TUI (headless, on the port-forwards' stand-in listeners) quits on ctrl+c; tap
    then stops the forwards and undoes."""
    add_bystanders(api)

    def deployed() -> None:
        assert len(ours(api)) == 6  # deployed while the TUI runs

    ui = Ui(monkeypatch, then=deployed, keys=["ctrl+c"])
    with Controller(api, {"node-a": None}):
        rc, _, err = run(["tap"] + (["--keep"] if keep else []), capsys)
    assert rc == 0 and ui.return_code == 0  # the app quit
    assert ui.links == [(ui.forwards[0].address, TOKEN)]
    assert ui.forwards[0].stopped
    if keep:
        assert len(ours(api)) == 6
        assert err.endswith(
            "shark-tui: --keep: the daemons stay in the cluster (shark-tui clean removes them)\n"
        )
    else:
        assert err.splitlines()[-6:] == UNDONE
        wait_for(lambda: namespace_gone(api))
        assert ours(api) == {}
    assert bystanders(api)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_while_tap_waits_leaves_the_cluster_as_it_found_it(
    sig: signal.Signals, api: ApiServer, kubeconfig: Path
) -> None:
    """The real program in a child process, signalled while it waits for the rollout (no
    controller here: the daemons never come): it undoes in its main thread, not in the signal
    handler, and exits 128 + the signal's number."""
    add_bystanders(api)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    child = subprocess.Popen(
        [sys.executable, "-m", "shark_tui", "tap", "-n", "shop"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert child.stderr is not None
        for line in child.stderr:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("rollout:" in line for line in lines), timeout=60)
        assert len(ours(api)) == 6
        child.send_signal(sig)
        signalled = time.monotonic()
        rc = child.wait(timeout=30)
        took = time.monotonic() - signalled
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    reader.join(5)
    assert rc == 128 + sig, lines
    assert took < 10, took
    assert lines[-6:] == UNDONE
    wait_for(lambda: namespace_gone(api))
    assert ours(api) == {} and bystanders(api)


@pytest.mark.parametrize("when", ["in the TUI", "as the forwards stop"])
def test_a_signal_in_the_tui_undoes_and_one_during_the_undo_waits_for_it(
    when: str,
    api: ApiServer,
    kubeconfig: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGTERM while the TUI (its stand-in) runs, or once it quit, as the port-forwards stop,
    unwinds like Ctrl-C, and the undo runs there, not inside the signal handler; a SIGHUP in
    the middle of the undo (the terminal closing after it) does not cut it short."""
    say = cli._say
    in_handler: list[bool] = []

    def hangup_while_undoing(text: str) -> None:
        say(text)
        frame = sys._getframe()
        while frame.f_back is not None and frame.f_code.co_name != "on_signal":
            frame = frame.f_back
        in_handler.append(frame.f_code.co_name == "on_signal")
        if text.startswith("deleted secret"):
            os.kill(os.getpid(), signal.SIGHUP)

    monkeypatch.setattr(cli, "_say", hangup_while_undoing)
    if when == "in the TUI":
        Ui(monkeypatch, then=lambda: os.kill(os.getpid(), signal.SIGTERM))
    else:
        Ui(monkeypatch)
        stop = FakeForward.stop

        def stop_signalled(self: FakeForward) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            stop(self)

        monkeypatch.setattr(FakeForward, "stop", stop_signalled)
    with Controller(api, {"node-a": None}):
        rc, _, err = run(["tap"], capsys)
    assert rc == 128 + signal.SIGTERM
    assert err.splitlines()[-6:] == UNDONE
    assert len(in_handler) > 12 and not any(in_handler)  # created, rollout, deleted: none there
    wait_for(lambda: namespace_gone(api))
    assert ours(api) == {}
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # tap's handlers are gone


def test_an_interruption_while_a_create_is_under_way_still_undoes_it(
    api: ApiServer,
    kubeconfig: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C (or a signal, raised the same way) after the server created the Secret and
    before tap read its answer: the Secret is deleted with the rest."""
    request = deploy._Api.request

    def interrupted(self: Any, method: str, verb: str, kind: Any, *a: Any, **kw: Any) -> Any:
        answer = request(self, method, verb, kind, *a, **kw)
        if method == "POST" and kind.kind == "Secret":
            raise KeyboardInterrupt
        return answer

    monkeypatch.setattr(deploy._Api, "request", interrupted)
    Ui(monkeypatch)
    rc, _, err = run(["tap"], capsys)
    assert rc == 130
    assert "shark-tui: created secret shark-tui/shark-tui-token" not in err
    assert err.splitlines()[-5:] == UNDONE[1:]
    wait_for(lambda: namespace_gone(api))
    assert ours(api) == {}


def test_second_tap_reuses_the_token_and_puts_back_what_it_changed(
    api: ApiServer,
    kubeconfig: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Ui(monkeypatch)
    with Controller(api, {"node-a": None}):
        assert run(["tap", "-n", "one", "--keep"], capsys)[0] == 0
        before = api.get("daemonsets", NAME, NAMESPACE)
        monkeypatch.setattr(deploy, "new_token", lambda: "a-different-token")
        ui = Ui(monkeypatch, then=lambda: None)
        rc, _, err = run(["tap", "-n", "two"], capsys)
    assert rc == 0, err
    assert ui.links == [(ui.forwards[0].address, TOKEN)]  # the running daemons' token
    assert "shark-tui: updated daemonset shark-tui/shark-tui (put back on exit)" in err
    assert "shark-tui: secret shark-tui/shark-tui-token is already there" in err
    assert err.splitlines()[-1] == "shark-tui: put back daemonset shark-tui/shark-tui"
    after = api.get("daemonsets", NAME, NAMESPACE)
    assert after["spec"] == before["spec"] and after["metadata"]["uid"] == before["metadata"]["uid"]
    assert len(ours(api)) == 6  # what the first tap kept stays


# ---------------------------------------------------------------------------------------------
# errors, each one line with its fix


def test_no_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nothing-here"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for argv in (["tap"], ["clean"]):
        rc, out, err = run(argv, capsys)
        assert (rc, out) == (2, "")
        assert err == (
            "shark-tui: no kubeconfig: set KUBECONFIG or pass --kubeconfig; in a "
            "pod, the service account is used\n"
        )
    rc, _, err = run(["manifests"], capsys)
    assert rc == 2 and err.endswith("is used (or target with -n NS / -A)\n")
    assert run(["manifests", "-n", "x"], capsys)[0] == 0  # GitOps needs no cluster


def test_unknown_or_missing_context(
    api: ApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = run(["tap", "--context", "prod"], capsys)
    assert rc == 2
    assert err == (
        f"shark-tui: --context 'prod' is not in the kubeconfig {kubeconfig} (its "
        "contexts: standin): pass --context with one of them (kubectl config "
        "get-contexts)\n"
    )
    config = yaml.safe_load(kubeconfig.read_text())
    del config["current-context"]
    kubeconfig.write_text(yaml.safe_dump(config))
    rc, _, err = run(["clean"], capsys)
    assert rc == 2
    assert err == (
        f"shark-tui: the kubeconfig {kubeconfig} has no current context: pass "
        "--context (its contexts: standin) or run kubectl config use-context NAME\n"
    )
    assert api.requests == []


def test_forbidden_names_the_verb_and_resource_and_undoes_the_rest(
    api: ApiServer,
    kubeconfig: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Ui(monkeypatch)
    api.forbid("create", "clusterroles")
    rc, _, err = run(["tap"], capsys)
    assert rc == 1
    assert err.splitlines()[-1] == (
        "shark-tui: forbidden: cannot create clusterroles.rbac.authorization.k8s.io "
        "(cluster-scoped): ask a cluster admin for that permission, or to apply the objects "
        "for you: shark-tui manifests | kubectl apply -f -"
    )
    assert err.splitlines()[:-1] == [
        "shark-tui: created namespace shark-tui",
        "shark-tui: created serviceaccount shark-tui/shark-tui",
        "shark-tui: deleted serviceaccount shark-tui/shark-tui",
        "shark-tui: deleted namespace shark-tui",
    ]
    wait_for(lambda: namespace_gone(api))
    api.reset_rules()
    api.forbid("list", "pods", NAMESPACE)
    with Controller(api, {"node-a": None}):
        rc, _, err = run(["tap"], capsys)
    assert rc == 1
    assert err.splitlines()[-1] == (
        "shark-tui: forbidden: cannot list pods in namespace "
        "shark-tui: ask a cluster admin for that permission"
    )
    api.reset_rules()
    api.forbid("delete", "daemonsets")
    with Controller(api, {"node-a": None}):
        assert run(["tap", "--keep"], capsys)[0] == 0
    rc, _, err = run(["clean"], capsys)
    assert (rc, err) == (
        1,
        "shark-tui: forbidden: cannot delete daemonsets.apps in namespace "
        "shark-tui: ask a cluster admin for that permission, or to run "
        "shark-tui clean\n",
    )


def test_pod_security_rejection(
    api: ApiServer,
    kubeconfig: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Ui(monkeypatch)
    want = (
        'shark-tui: PodSecurity "baseline:latest" rejects the daemon\'s pods in namespace '
        f"shark-tui ({', '.join(VIOLATIONS)}): {PSA_FIX}"
    )
    # an admission webhook or PodSecurity itself refusing the DaemonSet
    api.reject_create("daemonsets", pod_security_status("shark-tui", VIOLATIONS))
    rc, _, err = run(["tap"], capsys)
    assert rc == 1 and err.splitlines()[-1] == want
    assert "shark-tui: deleted namespace shark-tui" in err
    wait_for(lambda: namespace_gone(api))
    # PodSecurity as it usually shows: the DaemonSet is admitted with a warning, its pods are
    # refused, and only the controller's FailedCreate events say so
    api.reset_rules()
    api.warn("create", "daemonsets", pod_security_warning(VIOLATIONS))
    event = (
        'Error creating: pods "shark-tui-x7k2p" is forbidden: violates PodSecurity '
        f'"baseline:latest": {", ".join(VIOLATIONS)}'
    )
    with Controller(api, {"node-a": None}, events=[event]):
        rc, _, err = run(["tap"], capsys)
    assert rc == 1 and err.splitlines()[-1] == want
    assert ("shark-tui: warning: " + want.removeprefix("shark-tui: ")) in err.splitlines()


@pytest.mark.parametrize("case", ["image", "crash", "unschedulable", "config"])
def test_nodes_where_the_daemon_cannot_start(
    case: str,
    api: ApiServer,
    kubeconfig: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pod = "shark-tui-node-a"
    status, want = {
        "image": (
            waiting_status("ImagePullBackOff", 'Back-off pulling image "shark-tui:0.1.0"'),
            "node node-a: cannot pull the image shark-tui:0.1.0 (ImagePullBackOff: Back-off "
            'pulling image "shark-tui:0.1.0"): build it with the Dockerfile (README: '
            "Kubernetes), push it where the nodes pull from and pass --image "
            "REGISTRY/shark-tui:TAG (a private registry also needs an imagePullSecret on "
            "serviceaccount shark-tui in namespace shark-tui)",
        ),
        "crash": (
            waiting_status(
                "CrashLoopBackOff",
                f"back-off 40s restarting failed container=daemon pod={pod}",
                {
                    "exitCode": 1,
                    "reason": "Error",
                    "message": "shark-tui: error: --kube: in-cluster config: token file missing\n",
                },
            ),
            "node node-a: the daemon keeps exiting (exit code 1: shark-tui: error: --kube: "
            "in-cluster config: token file missing): kubectl logs -n shark-tui "
            "shark-tui-node-a --previous",
        ),
        "unschedulable": (
            unschedulable_status(
                "0/3 nodes are available: 1 Insufficient memory, 2 node(s) "
                "didn't match Pod's node affinity/selector."
            ),
            "node node-a: the daemon cannot be scheduled (0/3 nodes are available: 1 "
            "Insufficient memory, 2 node(s) didn't match Pod's node affinity/selector.): make "
            "room on the node or lower the daemon's resource requests (shark-tui manifests, "
            "edit, kubectl apply -f -)",
        ),
        "config": (
            waiting_status("CreateContainerConfigError", 'secret "shark-tui-token" not found'),
            "node node-a: the daemon cannot start (CreateContainerConfigError: secret "
            '"shark-tui-token" not found): kubectl describe pod -n shark-tui shark-tui-node-a',
        ),
    }[case]
    ui = Ui(monkeypatch)
    with Controller(api, {"node-a": status}):
        rc, _, err = run(["tap"], capsys)
    assert rc == 1 and ui.links is None
    assert err.splitlines()[-1] == f"shark-tui: {want}"
    assert "shark-tui: rollout: 0/1 daemons ready, 1 failing" in err.splitlines()
    wait_for(lambda: namespace_gone(api))


def test_some_nodes_failing_is_a_warning_the_others_open(
    api: ApiServer,
    kubeconfig: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ui = Ui(monkeypatch)
    pull = waiting_status("ErrImagePull", "rpc error: code = NotFound desc = not found")
    with Controller(api, {"node-a": None, "node-b": pull, "node-c": None}):
        rc, _, err = run(["tap", "--image", "reg.example/s:2"], capsys)
    assert rc == 0 and [f.node for f in ui.forwards] == ["node-a", "node-c"]
    assert ui.links is not None and len(ui.links) == 2
    assert (
        "shark-tui: warning: node node-b: cannot pull the image reg.example/s:2 "
        "(ErrImagePull: rpc error: code = NotFound desc = not found): build it"
    ) in err


def test_rollout_timeout_and_no_nodes(
    api: ApiServer,
    kubeconfig: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Ui(monkeypatch)
    monkeypatch.setattr(deploy, "ROLLOUT_TIMEOUT_S", 0.3)
    rc, _, err = run(["tap"], capsys)  # no controller: nothing ever happens
    assert rc == 1
    assert err.splitlines()[-1] == (
        "shark-tui: the daemons are not ready after 0.3s (no pod yet): kubectl get pods -n "
        "shark-tui -o wide; kubectl describe daemonset -n shark-tui shark-tui"
    )
    wait_for(lambda: namespace_gone(api))
    with Controller(api, {}):
        rc, _, err = run(["tap"], capsys)
    assert rc == 1
    assert err.splitlines()[-1] == (
        "shark-tui: no node runs the daemon: daemonset shark-tui/shark-tui schedules no pod "
        "(are there nodes? kubectl get nodes; kubectl describe daemonset -n shark-tui shark-tui)"
    )


def test_an_object_of_the_same_name_that_is_not_ours(
    api: ApiServer,
    kubeconfig: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Ui(monkeypatch)
    api.create(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "shark-tui"},
            "rules": [],
        }
    )
    rc, _, err = run(["tap"], capsys)
    assert rc == 1
    assert err.splitlines()[-1] == (
        "shark-tui: clusterrole shark-tui exists and is not shark-tui's (no label "
        "app.kubernetes.io/managed-by=shark-tui): delete it (kubectl delete clusterrole "
        "shark-tui) or ask whoever made it"
    )
    assert api.get("clusterroles", "shark-tui")["rules"] == []
    # a namespace made beforehand (say, by an admin, labelled for PodSecurity) is used, kept
    wait_for(lambda: namespace_gone(api))
    api.delete("clusterroles", "shark-tui")
    api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    with Controller(api, {"node-a": None}):
        rc, _, err = run(["tap"], capsys)
    assert rc == 0 and "shark-tui: using namespace shark-tui" in err
    assert not namespace_gone(api)


def test_port_forward_refused_by_the_api_server_is_said_before_the_tui(
    api: ApiServer,
    kubeconfig: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real port-forward step against the stand-in, which has no pods/portforward: the
    websocket handshake is answered 404, said before the TUI would open."""
    ui = Ui(monkeypatch, real_forward=True)
    with Controller(api, {"node-a": None}):
        rc, _, err = run(["tap"], capsys)
    assert rc == 1 and ui.links is None
    assert err.splitlines()[-1] == (
        "shark-tui: port-forward to pod shark-tui/shark-tui-node-a (node node-a) failed (HTTP "
        "404 Not Found): kubectl port-forward -n shark-tui pod/shark-tui-node-a 8898 shows the "
        "same from here"
    )
    pf = [r for r in api.requests if r.path.endswith("/portforward")]
    assert [(r.path, r.query, r.headers.get("Upgrade")) for r in pf] == [
        (
            "/api/v1/namespaces/shark-tui/pods/shark-tui-node-a/portforward",
            {"ports": "8898"},
            "websocket",
        )
    ]

"""The node daemons deployed to a cluster: what ``shark-tui tap`` creates, applies, waits for,
port-forwards to and removes again, and what ``manifests`` prints and ``clean`` deletes.

**The objects** (`objects`, plain dicts in the order they are applied, the same ones
``manifests`` prints): the namespace `NAMESPACE` where the daemons run (a dedicated one, as
Kubeshark does; labelled ``pod-security.kubernetes.io/*=privileged`` because the daemon needs
host access), a ServiceAccount, a ClusterRole with get/list/watch on exactly what the daemon's
resolver reads (`kube.KubeWatcher`: pods, services, endpoint slices — in every namespace, since
a targeted pod talks to pods anywhere) and its binding, a Secret with the daemons' token, and
the DaemonSet: ``shark-tui daemon --kube --node $(NODE_NAME)`` (the downward API) listening on
``127.0.0.1:8898`` of the node (hostNetwork), with hostPID (the container's ``/proc`` is then the
host's: the pods' network namespaces and processes, what the daemon reads), the host's ``/proc``
also mounted read-only at ``/host/proc`` (procfs without the paths the container runtime masks),
the capabilities capture and eBPF need, ``/sys``, tracefs, debugfs and the node's kernel headers
mounted, requests and limits, and a toleration of every taint (one daemon per node).

**Targets** are what the daemons capture: ``POD_REGEX`` and the namespaces ``-n NS`` (repeatable),
``-A`` for every namespace, and neither means the kubeconfig context's namespace (as ``kubectl``
reads ``-n``/``-A``). They only become the daemon's ``--pods``/``-n`` arguments; the objects
themselves always live in `NAMESPACE`.

**Ownership.** Every object carries ``app.kubernetes.io/managed-by=shark-tui`` (`MANAGED_BY`):
`clean` deletes exactly the objects with that label. `Tap.apply` reads each object first: a
missing one is created, one of ours that differs is replaced (its previous state kept), one of
ours that matches is left alone, and one with the same name that is not ours is an error (a
namespace excepted: an existing namespace is used as it is, and never deleted). `Tap.undo`
(``tap``'s exit, unless ``--keep``) deletes what this run created and puts back what it
replaced, so the cluster is left as tap found it.

**Errors** are `DeployError`: one line that says what failed and how to fix it. A 403 names the
verb and resource of the request that was refused (known here, not read from the message);
PodSecurity's rejections (a 403 on create, or the DaemonSet's ``FailedCreate`` events) name the
policy and the ``kubectl label namespace`` that allows the daemons; pods that cannot start
(image pulls, crash loops, unschedulable) name their node and reason.

Requests go through the configured ``kubernetes`` client's connection pool (its TLS, proxy and
credentials) as raw JSON — the objects are sent exactly as `objects` built them (with
``fieldValidation=Warn``: a field an older server lacks is dropped with a warning, said), and the
server's ``Warning`` headers are seen. The ``kubernetes`` package is imported only inside
functions: importing this module costs nothing.
"""

from __future__ import annotations

import base64
import copy
import email.utils
import functools
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import quote, urlencode

from shark_tui import __version__
from shark_tui.engine.kube import NO_KUBECONFIG, KubeError
from shark_tui.engine.portforward import Forwarder, Stream

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

__all__ = [
    "CAPABILITIES",
    "DAEMON_PORT",
    "DEFAULT_IMAGE",
    "MANAGED_BY",
    "NAME",
    "NAMESPACE",
    "DaemonPod",
    "DeployError",
    "KubeContext",
    "Tap",
    "TapSpec",
    "clean",
    "existing_token",
    "forward_pods",
    "kube_context",
    "new_token",
    "objects",
    "open_portforward",
    "run_tap",
    "to_yaml",
]

Obj = dict[str, Any]

NAMESPACE: Final = "shark-tui"
"""Where the daemons and their objects live (not where they capture: that is the targets)."""
NAME: Final = "shark-tui"
"""The ServiceAccount, ClusterRole, ClusterRoleBinding and DaemonSet."""
SECRET: Final = "shark-tui-token"
DAEMON_PORT: Final = 8898
TOKEN_DIR: Final = "/var/run/shark-tui"
STORE_DIR: Final = "/var/lib/shark-tui"
HOST_PROC: Final = "/host/proc"
"""Where the host's ``/proc`` is mounted (read-only) in the daemon's container."""
STORE_BUDGET: Final = "1G"  # the daemon's --max-bytes; the emptyDir's sizeLimit leaves room
DEFAULT_IMAGE: Final = f"shark-tui:{__version__}"
"""What ``docker build -t shark-tui:VERSION .`` names the Dockerfile's image (README)."""
MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "shark-tui"}
SELECTOR: Final = {"app.kubernetes.io/name": "shark-tui", "app.kubernetes.io/component": "daemon"}
LABELS: Final = {"app.kubernetes.io/name": "shark-tui", **MANAGED_BY}
CAPABILITIES: Final = ("NET_RAW", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE", "BPF", "PERFMON")
"""Capture (NET_RAW, NET_ADMIN), entering the pods' namespaces and reading their processes
(SYS_ADMIN, SYS_PTRACE), eBPF (BPF, PERFMON; SYS_ADMIN on kernels before 5.8)."""
READ: Final = ("get", "list", "watch")
RULES: Final = (
    {"apiGroups": [""], "resources": ["pods", "services"], "verbs": list(READ)},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": list(READ)},
)
"""The ClusterRole: what `kube.KubeWatcher` lists and watches, and nothing else."""
PRIVILEGED_NS_LABELS: Final = {
    f"pod-security.kubernetes.io/{mode}": "privileged" for mode in ("enforce", "audit", "warn")
}
SA_NAMESPACE_FILE: Final = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

ROLLOUT_TIMEOUT_S: Final = 300.0  # image pulls on a cold node take minutes
POLL_S: Final = 1.0
NAMESPACE_GONE_TIMEOUT_S: Final = 120.0
CONNECT_TIMEOUT_S: Final = 10.0
READ_TIMEOUT_S: Final = 60.0
MAX_REASON: Final = 300  # characters of a server's or kubelet's message kept in one line

_APPLY_FIX: Final = (
    "ask a cluster admin for that permission, or to apply the objects for you: "
    "shark-tui manifests | kubectl apply -f -"
)
_CLEAN_FIX: Final = "ask a cluster admin for that permission, or to run shark-tui clean"
_ASK_FIX: Final = "ask a cluster admin for that permission"
_IMAGE_PULL: Final = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
_CANNOT_START: Final = frozenset(
    {
        "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
        "ContainerCannotRun", "PreCreateHookError", "PostStartHookError",
    }
)  # fmt: skip
_POD_SECURITY: Final = re.compile(r'violates PodSecurity "([^"]+)": (.+)', re.S)
_WOULD_VIOLATE: Final = re.compile(r'would violate PodSecurity "([^"]+)": (.+)', re.S)
_VALIDATION: Final = {"fieldValidation": "Warn"}
"""Unknown fields dropped with a warning (said), not refused: a server older than a field in
`objects` (``appArmorProfile`` came in 1.30) still takes the rest."""
_HANDSHAKE: Final = re.compile(r"Handshake status (\d{3})(?: ([^-]+?))?\s*(?:-\+-\+-|$)")


class DeployError(Exception):
    """The cluster refused or failed something: one line, with the fix."""


def _one_line(text: str, limit: int = MAX_REASON) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def new_token() -> str:
    """A token for the daemons (stored in the Secret, given to the TUI)."""
    return secrets.token_urlsafe(32)


# ---------------------------------------------------------------------------------------------
# The kubeconfig context


@dataclass(frozen=True, slots=True)
class KubeContext:
    name: str  # "" inside a pod (its service account)
    namespace: str  # the context's namespace ("default" when it names none)


def _kubeconfig_path(kubeconfig: str | None) -> str | None:
    """The kubeconfig `kube.load_client` would read, or None for the pod's service account."""
    env = os.environ.get("KUBECONFIG", "")
    if os.environ.get("KUBERNETES_SERVICE_HOST") and kubeconfig is None and not env:
        return None
    return kubeconfig or env or os.path.expanduser("~/.kube/config")


def kube_context(kubeconfig: str | None = None, context: str | None = None) -> KubeContext:
    """The context `kube.load_client` would use and its namespace. Raises `KubeError` (one
    line, with the fix) when there is no kubeconfig, no current context or no such context."""
    import yaml  # type: ignore[import-untyped]

    path = _kubeconfig_path(kubeconfig)
    if path is None and context is None:
        try:
            with open(SA_NAMESPACE_FILE) as f:
                return KubeContext("", f.read().strip() or "default")
        except OSError:
            return KubeContext("", "default")
    path = path or os.path.expanduser("~/.kube/config")
    files = [p for p in path.split(os.pathsep) if p]
    if not any(os.path.isfile(p) for p in files):
        if kubeconfig is not None:
            raise KubeError(f"kubeconfig {kubeconfig}: no such file")
        raise KubeError(NO_KUBECONFIG)
    current = ""
    contexts: dict[str, Obj] = {}
    for p in files:  # merged as kubectl does: the first file to set a value wins
        if not os.path.isfile(p):
            continue
        try:
            with open(p) as f:
                doc = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            raise KubeError(f"kubeconfig {p}: {_one_line(str(e))}") from None
        if not isinstance(doc, dict):
            raise KubeError(f"kubeconfig {p}: not a kubeconfig (a YAML mapping)")
        current = current or str(doc.get("current-context") or "")
        for entry in doc.get("contexts") or []:
            if isinstance(entry, dict) and entry.get("name"):
                contexts.setdefault(str(entry["name"]), entry.get("context") or {})
    names = ", ".join(sorted(contexts)) or "none"
    wanted = context or current
    if not wanted:
        raise KubeError(
            f"the kubeconfig {path} has no current context: pass --context (its contexts: "
            f"{names}) or run kubectl config use-context NAME"
        )
    if wanted not in contexts:
        how = "--context" if context else "current-context"
        raise KubeError(
            f"{how} {wanted!r} is not in the kubeconfig {path} (its contexts: {names}): pass "
            "--context with one of them (kubectl config get-contexts)"
        )
    return KubeContext(wanted, str(contexts[wanted].get("namespace") or "default"))


# ---------------------------------------------------------------------------------------------
# The objects


@dataclass(frozen=True, slots=True, kw_only=True)
class TapSpec:
    """What tap deploys. ``namespaces``: the targeted namespaces, empty for every one (``-A``;
    the command line puts the context's namespace here when neither ``-n`` nor ``-A`` is
    given)."""

    token: str
    pods: str = ""
    namespaces: tuple[str, ...] = ()
    image: str = DEFAULT_IMAGE


def _meta(name: str, namespace: str | None = None, **labels: str) -> Obj:
    meta: Obj = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = {**LABELS, **labels}
    return meta


def daemon_args(spec: TapSpec) -> list[str]:
    """The daemon's flags (after ``shark-tui daemon``)."""
    args = [
        "--kube", "--node", "$(NODE_NAME)", "--listen", f"127.0.0.1:{DAEMON_PORT}",
        "--token-file", f"{TOKEN_DIR}/token", "--store", STORE_DIR, "--max-bytes", STORE_BUDGET,
        "--tls-if-possible",  # eBPF TLS capture where the node allows it, plain capture anyway
    ]  # fmt: skip
    if spec.pods:
        args += ["--pods", spec.pods]
    for ns in spec.namespaces:
        args += ["-n", ns]
    return args


def _daemonset(spec: TapSpec) -> Obj:
    def host(name: str, path: str, type_: str = "") -> Obj:
        src: Obj = {"path": path}
        if type_:
            src["type"] = type_
        return {"name": name, "hostPath": src}

    container: Obj = {
        "name": "daemon",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["shark-tui", "daemon"],
        "args": daemon_args(spec),
        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        "securityContext": {
            "runAsUser": 0,
            "capabilities": {"add": list(CAPABILITIES)},
            "seccompProfile": {"type": "Unconfined"},  # bpf(), perf_event_open()
            "appArmorProfile": {"type": "Unconfined"},
        },
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
        # ready once the daemon listens (it does after its first lists of the cluster)
        "readinessProbe": {
            "tcpSocket": {"host": "127.0.0.1", "port": DAEMON_PORT},
            "periodSeconds": 5,
        },
        # a daemon that exits says why in its last log lines: the pod's status carries them
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "token", "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": "store", "mountPath": STORE_DIR},
            {"name": "proc", "mountPath": HOST_PROC, "readOnly": True},
            {"name": "sys", "mountPath": "/sys", "readOnly": True},
            {"name": "tracefs", "mountPath": "/sys/kernel/tracing"},
            {"name": "debugfs", "mountPath": "/sys/kernel/debug"},
            {"name": "modules", "mountPath": "/lib/modules", "readOnly": True},
            {"name": "usr-src", "mountPath": "/usr/src", "readOnly": True},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _meta(NAME, NAMESPACE, **{"app.kubernetes.io/component": "daemon"}),
        "spec": {
            "selector": {"matchLabels": dict(SELECTOR)},
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "100%"},
            },
            "template": {
                "metadata": {
                    "labels": {**LABELS, **SELECTOR},
                    "annotations": {"kubectl.kubernetes.io/default-container": "daemon"},
                },
                "spec": {
                    "serviceAccountName": NAME,
                    "hostNetwork": True,
                    "hostPID": True,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "tolerations": [{"operator": "Exists"}],  # every taint: every node
                    "terminationGracePeriodSeconds": 10,
                    "containers": [container],
                    "volumes": [
                        {"name": "token", "secret": {"secretName": SECRET, "defaultMode": 0o400}},
                        {"name": "store", "emptyDir": {"sizeLimit": "2Gi"}},
                        host("proc", "/proc", "Directory"),
                        host("sys", "/sys", "Directory"),
                        host("tracefs", "/sys/kernel/tracing"),
                        host("debugfs", "/sys/kernel/debug"),
                        # the node's own headers first (/lib/modules/$(uname -r)/build links into
                        # /usr/src), else the image's tree (Dockerfile)
                        host("modules", "/lib/modules"),
                        host("usr-src", "/usr/src"),
                    ],
                },
            },
        },
    }


def objects(spec: TapSpec) -> list[Obj]:
    """Every object tap creates, in the order it creates them."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": _meta(NAMESPACE, None, **PRIVILEGED_NS_LABELS),
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME, NAMESPACE)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(NAME),
            "rules": [copy.deepcopy(rule) for rule in RULES],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(NAME),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": NAME,
            },
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _meta(SECRET, NAMESPACE),
            "type": "Opaque",
            "data": {"token": base64.b64encode(spec.token.encode()).decode()},
        },
        _daemonset(spec),
    ]


def to_yaml(objs: Sequence[Obj]) -> str:
    """A multi-document YAML stream (``kubectl apply -f`` reads it)."""
    import yaml

    return "---\n".join(yaml.safe_dump(obj, sort_keys=False) for obj in objs)


# ---------------------------------------------------------------------------------------------
# Requests


@dataclass(frozen=True, slots=True)
class _Kind:
    kind: str
    api_version: str
    plural: str
    namespaced: bool

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def qualified(self) -> str:
        """``pods``, ``clusterroles.rbac.authorization.k8s.io``: how RBAC names a resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/apis/{self.api_version}" if self.group else f"/api/{self.api_version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        return f"{base}/{quote(name, safe='')}" if name is not None else base

    def describe(self, namespace: str | None, name: str) -> str:
        """``daemonset shark-tui/shark-tui``, ``clusterrole shark-tui``."""
        return (
            f"{self.kind.lower()} {namespace}/{name}"
            if self.namespaced
            else (f"{self.kind.lower()} {name}")
        )


_KINDS: Final = {
    k.kind: k
    for k in (
        _Kind("Namespace", "v1", "namespaces", False),
        _Kind("ServiceAccount", "v1", "serviceaccounts", True),
        _Kind("ClusterRole", "rbac.authorization.k8s.io/v1", "clusterroles", False),
        _Kind("ClusterRoleBinding", "rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
        _Kind("Secret", "v1", "secrets", True),
        _Kind("DaemonSet", "apps/v1", "daemonsets", True),
        _Kind("Pod", "v1", "pods", True),
        _Kind("Event", "v1", "events", True),
    )
}
_APPLIED: Final = ("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Secret",
                   "DaemonSet")  # fmt: skip


class _HttpError(Exception):
    """A request the API server refused: what was asked, and its ``Status``."""

    def __init__(
        self, code: int, status: Obj, verb: str, kind: _Kind, namespace: str | None,
        name: str | None,
    ) -> None:  # fmt: skip
        super().__init__(str(status.get("message") or f"HTTP {code}"))
        self.code = code
        self.status = status
        self.verb = verb
        self.kind = kind
        self.namespace = namespace
        self.name = name

    @property
    def message(self) -> str:
        return str(self.status.get("message") or "")


class _Api:
    """JSON requests through a configured ``kubernetes`` client (thread-safe: urllib3's pool)."""

    def __init__(self, api_client: ApiClient) -> None:
        self.api_client = api_client
        self._config: Any = api_client.configuration
        self._pool: Any = api_client.rest_client.pool_manager

    def request(
        self, method: str, verb: str, kind: _Kind, namespace: str | None = None,
        name: str | None = None, *, body: Obj | None = None, query: Mapping[str, str] | None = None,
    ) -> tuple[Obj, Any]:  # fmt: skip
        """The decoded answer and its headers; raises `_HttpError` for a failure ``Status`` and
        `DeployError` when the server cannot be reached."""
        import urllib3

        url = self._config.host + kind.path(namespace, name)
        if query:
            url += "?" + urlencode(query)
        headers = {"Accept": "application/json", "User-Agent": f"shark-tui/{__version__}"}
        for setting in self._config.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[setting["key"]] = setting["value"]
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        try:
            resp = self._pool.request(
                method, url, body=data, headers=headers, preload_content=True,
                timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
            )  # fmt: skip
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise DeployError(
                f"cannot reach the API server at {self._config.host}: {_one_line(str(e))} "
                "(is the cluster up? kubectl cluster-info)"
            ) from None
        try:
            decoded = json.loads(resp.data) if resp.data else {}
        except ValueError:
            decoded = {"message": _one_line(resp.data.decode(errors="replace"))}
        if not 200 <= resp.status < 300:
            status = decoded if isinstance(decoded, dict) else {}
            raise _HttpError(resp.status, status, verb, kind, namespace, name)
        return (decoded if isinstance(decoded, dict) else {}), resp.headers

    def get(self, kind: _Kind, namespace: str | None, name: str) -> Obj | None:
        """The object, or None when there is none (404)."""
        try:
            return self.request("GET", "get", kind, namespace, name)[0]
        except _HttpError as e:
            if e.code == 404:
                return None
            raise

    def list(
        self, kind: _Kind, namespace: str | None, *, labels: str = "", fields: str = "",
    ) -> list[Obj]:  # fmt: skip
        query = {}
        if labels:
            query["labelSelector"] = labels
        if fields:
            query["fieldSelector"] = fields
        items = self.request("GET", "list", kind, namespace, query=query)[0].get("items")
        return [i for i in items or [] if isinstance(i, dict)]

    def delete(self, kind: _Kind, namespace: str | None, name: str) -> bool:
        """False when it was already gone."""
        try:
            self.request("DELETE", "delete", kind, namespace, name,
                         query={"propagationPolicy": "Background"})  # fmt: skip
        except _HttpError as e:
            if e.code == 404:
                return False
            raise
        return True


def _labels(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in selector.items())


def _explain(e: _HttpError, fix: str = _ASK_FIX) -> DeployError:
    """The one line for a refused request."""
    what = e.kind.describe(e.namespace, e.name) if e.name else e.kind.qualified
    message = _one_line(e.message)
    if e.code == 401:
        return DeployError(
            f"the API server does not accept your credentials (401 Unauthorized on {e.verb} "
            f"{what}): log in again for this context (kubectl get ns shows the same)"
        )
    if e.code == 403:
        psa = _POD_SECURITY.search(e.message)
        if psa:
            return DeployError(_pod_security(psa[1], psa[2], e.namespace or NAMESPACE))
        causes = (e.status.get("details") or {}).get("causes") or []
        if any(isinstance(c, dict) and c.get("reason") == "NamespaceTerminating" for c in causes):
            return DeployError(
                f"namespace {e.namespace} is being deleted: wait until it is gone "
                f"(kubectl get namespace {e.namespace}), then run tap again"
            )
        scope = "(cluster-scoped)"
        if e.kind.namespaced:
            scope = f"in namespace {e.namespace}" if e.namespace else "in every namespace"
        return DeployError(f"forbidden: cannot {e.verb} {e.kind.qualified} {scope}: {fix}")
    reason = e.status.get("reason") or "error"
    return DeployError(f"{e.verb} {what}: the API server answered {e.code} {reason}: {message}")


def _pod_security(level: str, violations: str, namespace: str) -> str:
    return (
        f'PodSecurity "{level}" rejects the daemon\'s pods in namespace {namespace} '
        f"({_one_line(violations)}): they need host access; allow it with: kubectl label "
        f"namespace {namespace} pod-security.kubernetes.io/enforce=privileged --overwrite"
    )


def _ours(obj: Obj) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in MANAGED_BY.items())


def _covers(have: Any, want: Any) -> bool:
    """Whether ``have`` (as stored: with server defaults) holds everything in ``want``."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(k in have and _covers(have[k], v)
                                              for k, v in want.items())  # fmt: skip
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(have) == len(want)
            and all(_covers(h, w) for h, w in zip(have, want))
        )
    return bool(have == want)


def existing_token(api_client: ApiClient) -> str | None:
    """The token in the Secret a previous tap (``--keep``) or ``kubectl apply`` left, if any:
    the running daemons use it."""
    api = _Api(api_client)
    try:
        secret = api.get(_KINDS["Secret"], NAMESPACE, SECRET)
    except _HttpError as e:
        raise _explain(e) from None
    if secret is None or not _ours(secret):
        return None
    try:
        token = base64.b64decode((secret.get("data") or {}).get("token") or "").decode()
    except ValueError:
        return None
    return token.strip() or None


# ---------------------------------------------------------------------------------------------
# tap: apply, wait, undo


@dataclass(frozen=True, slots=True)
class DaemonPod:
    """A daemon's pod as the rollout left it: ready, or with the one line that says why not."""

    name: str
    node: str
    ready: bool
    problem: str | None = None


@dataclass(slots=True)
class _Change:
    kind: _Kind
    namespace: str | None
    name: str
    before: Obj | None  # None: created by this run; else the object this run replaced


@dataclass(slots=True)
class _Rollout:
    uid: str = ""
    generation: int = 1
    since: datetime | None = None  # server time of our last write to the DaemonSet


class Tap:
    """One ``tap``: `apply` the objects, `wait` for the daemons, `undo` on the way out.

    One thread drives it (``tap``'s main thread). An interruption — Ctrl-C's KeyboardInterrupt,
    SIGTERM or SIGHUP raised the same way — may land anywhere, a request included: each write
    is recorded before it is sent, so `undo` (in `run_tap`'s ``finally``) still finds it."""

    def __init__(
        self,
        api_client: ApiClient,
        spec: TapSpec,
        *,
        say: Callable[[str], None],
        timeout_s: float | None = None,
        poll_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api_client = api_client
        self.spec = spec
        self.say = say
        self.timeout_s = ROLLOUT_TIMEOUT_S if timeout_s is None else timeout_s
        self.poll_s = POLL_S if poll_s is None else poll_s
        self._clock = clock
        self._sleep = sleep
        self._api = _Api(api_client)
        self._changes: list[_Change] = []
        self.undoing = False  # True while `undo` runs
        self._rollout = _Rollout()
        self._events = True  # False once listing events is forbidden

    # ---- apply

    def apply(self) -> None:
        """Create, replace or keep each object (module docstring: "Ownership")."""
        for obj in objects(self.spec):
            self._apply_one(obj)

    def _apply_one(self, obj: Obj) -> None:
        kind = _KINDS[obj["kind"]]
        ns = obj["metadata"].get("namespace")
        name = obj["metadata"]["name"]
        what = kind.describe(ns, name)
        try:
            current = self._api.get(kind, ns, name)
            readable = True
        except _HttpError as e:
            if e.code != 403:
                raise _explain(e, _APPLY_FIX) from None
            current, readable = None, False  # not allowed to look: creating says the rest
        if current is not None and kind.kind == "Namespace":
            if not (current.get("metadata") or {}).get("deletionTimestamp"):
                self.say(f"using namespace {name}")
                return
            self._wait_gone(kind, name)
            current = None
        if current is None:
            # recorded first: deleting what the server never created is a no-op; but an object
            # we may not read may be someone else's, which the create only finds (409)
            change = _Change(kind, ns, name, None)
            if readable:
                self._changes.append(change)
            try:
                created, headers = self._api.request(
                    "POST", "create", kind, ns, body=obj, query=_VALIDATION
                )
            except _HttpError as e:
                self._forget(change)  # answered: nothing was created
                if e.code == 409 and not readable:
                    self.say(f"{what} exists (not readable with your rights): left as it is")
                    return
                raise _explain(e, _APPLY_FIX) from None
            if not readable:
                self._changes.append(change)
            self.say(f"created {what}")
            self._after_write(kind, created, headers)
            return
        if not _ours(current):
            raise DeployError(
                f"{what} exists and is not shark-tui's (no label "
                f"{_labels(MANAGED_BY)}): delete it (kubectl delete {kind.kind.lower()} "
                f"{'-n ' + ns + ' ' if ns else ''}{name}) or ask whoever made it"
            )
        if _covers(current, obj):
            self.say(f"{what} is already there")
            if kind.kind == "DaemonSet":
                self._rollout = _Rollout(
                    str(current["metadata"].get("uid", "")),
                    int(current["metadata"].get("generation") or 1),
                    None,
                )
            return
        body = copy.deepcopy(obj)
        body["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
        change = _Change(kind, ns, name, current)
        self._changes.append(change)  # first, as above: putting back what is unchanged is harmless
        try:
            replaced, headers = self._api.request(
                "PUT", "update", kind, ns, name, body=body, query=_VALIDATION
            )
        except _HttpError as e:
            self._forget(change)
            raise _explain(e, _APPLY_FIX) from None
        self.say(f"updated {what} (put back on exit)")
        self._after_write(kind, replaced, headers)

    def _forget(self, change: _Change) -> None:
        if change in self._changes:
            self._changes.remove(change)

    def _after_write(self, kind: _Kind, obj: Obj, headers: Any) -> None:
        for warning in _warnings(headers):
            psa = _WOULD_VIOLATE.search(warning)
            if psa:
                self.say("warning: " + _pod_security(psa[1], psa[2], NAMESPACE))
            else:
                self.say(f"warning: {_one_line(warning)}")
        if kind.kind == "DaemonSet":
            meta = obj.get("metadata") or {}
            since = None
            date = headers.get("Date") if headers is not None else None
            if date:
                with_tz = email.utils.parsedate_to_datetime(date)
                since = with_tz if with_tz.tzinfo else with_tz.replace(tzinfo=UTC)
            self._rollout = _Rollout(str(meta.get("uid", "")), int(meta.get("generation") or 1),
                                     since)  # fmt: skip

    def _wait_gone(self, kind: _Kind, name: str) -> None:
        self.say(f"{kind.kind.lower()} {name} is being deleted: waiting for it to go")
        deadline = self._clock() + NAMESPACE_GONE_TIMEOUT_S
        while self._clock() < deadline:
            try:
                if self._api.get(kind, None, name) is None:
                    return
            except _HttpError as e:
                raise _explain(e, _APPLY_FIX) from None
            self._sleep(self.poll_s)
        raise DeployError(
            f"{kind.kind.lower()} {name} is still being deleted after "
            f"{NAMESPACE_GONE_TIMEOUT_S:.0f}s: see kubectl get {kind.kind.lower()} {name} -o yaml "
            "(its status says what holds it), then run tap again"
        )

    # ---- wait

    def wait(self) -> list[DaemonPod]:
        """Wait for the rollout (a line on every change); return the ready daemons' pods.
        Nodes whose daemon cannot start are said as warnings when others are ready; when none
        is, the first of them is the `DeployError`."""
        ds_kind, pod_kind = _KINDS["DaemonSet"], _KINDS["Pod"]
        deadline = self._clock() + self.timeout_s
        said = ""
        while True:
            try:
                ds = self._api.get(ds_kind, NAMESPACE, NAME)
                if ds is None:
                    raise DeployError(
                        f"daemonset {NAMESPACE}/{NAME} is gone (deleted while tap waited for "
                        "it): run tap again"
                    )
                items = self._api.list(pod_kind, NAMESPACE, labels=_labels(SELECTOR))
            except _HttpError as e:
                raise _explain(e) from None
            pods = [
                _daemon_pod(p, self.spec.image) for p in items
                if not (p.get("metadata") or {}).get("deletionTimestamp")
            ]  # fmt: skip
            pods.sort(key=lambda p: (p.node, p.name))
            status = ds.get("status") or {}
            generation = int((ds.get("metadata") or {}).get("generation") or 1)
            current = int(status.get("observedGeneration") or 0) >= generation
            desired = int(status.get("desiredNumberScheduled") or 0)
            updated = int(status.get("updatedNumberScheduled") or 0)
            ready = [p for p in pods if p.ready]
            failed = [p for p in pods if p.problem]
            starting = len(pods) - len(ready) - len(failed)
            line = f"rollout: {len(ready)}/{desired if current else '?'} daemons ready"
            if starting:
                line += f", {starting} starting"
            if failed:
                line += f", {len(failed)} failing"
            if line != said:
                self.say(line)
                said = line
            if current and desired == 0:
                raise DeployError(
                    f"no node runs the daemon: daemonset {NAMESPACE}/{NAME} schedules no pod "
                    "(are there nodes? kubectl get nodes; kubectl describe daemonset -n "
                    f"{NAMESPACE} {NAME})"
                )
            if not pods:
                self._check_events()
            if current and updated >= desired and len(ready) >= desired:
                return ready
            if current and pods and len(pods) >= desired and not starting and failed:
                return self._settle(ready, failed)
            if self._clock() >= deadline:
                if ready:
                    return self._settle(ready, failed + [p for p in pods if not p.ready
                                                          and not p.problem])  # fmt: skip
                states = f"{len(pods)} pods, {starting} starting" if pods else "no pod yet"
                raise DeployError(
                    f"the daemons are not ready after {self.timeout_s:g}s ({states}): "
                    f"kubectl get pods -n {NAMESPACE} -o wide; kubectl describe daemonset "
                    f"-n {NAMESPACE} {NAME}"
                )
            self._sleep(self.poll_s)

    def _settle(self, ready: list[DaemonPod], failed: list[DaemonPod]) -> list[DaemonPod]:
        problems = [p.problem or f"node {p.node}: the daemon is not ready yet" for p in failed]
        if not ready:
            for extra in problems[1:]:
                self.say(extra)
            raise DeployError(problems[0])
        for problem in problems:
            self.say(f"warning: {problem}")
        return ready

    def _check_events(self) -> None:
        """The DaemonSet controller's ``FailedCreate`` events: pods it cannot create (a
        PodSecurity rejection, a quota) say so only there."""
        if not self._events or not self._rollout.uid:
            return
        fields = f"involvedObject.uid={self._rollout.uid},reason=FailedCreate"
        try:
            events = self._api.list(_KINDS["Event"], NAMESPACE, fields=fields)
        except _HttpError:
            self._events = False  # not allowed to read events: the pods' states still speak
            return
        since = self._rollout.since
        for event in events:
            when = _event_time(event)
            if since is not None and when is not None and when < since:
                continue
            message = str(event.get("message") or "")
            psa = _POD_SECURITY.search(message)
            if psa:
                raise DeployError(_pod_security(psa[1], psa[2], NAMESPACE))
            raise DeployError(
                f"daemonset {NAMESPACE}/{NAME} cannot create its pods ({_one_line(message)}): "
                f"kubectl describe daemonset -n {NAMESPACE} {NAME}"
            )

    # ---- undo

    def undo(self) -> None:
        """Delete what this run created, put back what it replaced (newest first). Safe to
        call twice: each change is undone once; an interrupted undo leaves the rest recorded.
        `undoing` says it runs (``tap`` lets a SIGTERM or SIGHUP then wait for it)."""
        self.undoing = True
        try:
            while self._changes:
                self._undo_one(self._changes.pop())
        finally:
            self.undoing = False

    def _undo_one(self, ch: _Change) -> None:
        what = ch.kind.describe(ch.namespace, ch.name)
        try:
            if ch.before is None:
                if self._api.delete(ch.kind, ch.namespace, ch.name):
                    self.say(f"deleted {what}")
                return
            body = copy.deepcopy(ch.before)
            body.pop("status", None)
            now = self._api.get(ch.kind, ch.namespace, ch.name)
            if now is None:
                body["metadata"].pop("resourceVersion", None)
                body["metadata"].pop("uid", None)
                self._api.request("POST", "create", ch.kind, ch.namespace, body=body)
            else:
                body["metadata"]["resourceVersion"] = now["metadata"].get("resourceVersion")
                self._api.request("PUT", "update", ch.kind, ch.namespace, ch.name, body=body)
            self.say(f"put back {what}")
        except (_HttpError, DeployError) as e:
            why = _explain(e, _CLEAN_FIX) if isinstance(e, _HttpError) else e
            self.say(f"could not undo {what}: {why} (shark-tui clean removes what is left)")

    @property
    def changed(self) -> bool:
        """Whether this run created or replaced anything."""
        return bool(self._changes)


def _warnings(headers: Any) -> list[str]:
    """The texts of ``Warning: 299 - "text"`` headers."""
    if headers is None:
        return []
    values = (
        headers.getlist("Warning")
        if hasattr(headers, "getlist")
        else ([headers.get("Warning")] if headers.get("Warning") else [])
    )
    out = []
    for value in values:
        for m in re.finditer(r'\d{3} \S+ "((?:[^"\\]|\\.)*)"', value):
            out.append(m[1].replace('\\"', '"').replace("\\\\", "\\"))
    return out


def _parse_time(text: Any) -> datetime | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _event_time(event: Obj) -> datetime | None:
    return (
        _parse_time(event.get("lastTimestamp"))
        or _parse_time(event.get("eventTime"))
        or _parse_time((event.get("metadata") or {}).get("creationTimestamp"))
    )


def _pod_node(pod: Obj) -> str:
    """The pod's node: where it runs, or for a DaemonSet pod not scheduled yet, the node its
    affinity names."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    for term in affinity.get("nodeSelectorTerms") or []:
        for req in term.get("matchFields") or []:
            if req.get("key") == "metadata.name" and req.get("values"):
                return str(req["values"][0])
    return "?"


def _daemon_pod(pod: Obj, image: str) -> DaemonPod:
    """Ready, starting (no problem yet), or failing with its one line."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    name, node = str(meta.get("name", "")), _pod_node(pod)
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, dict)}
    if (conditions.get("Ready") or {}).get("status") == "True":
        return DaemonPod(name, node, True)
    describe = f"kubectl describe pod -n {NAMESPACE} {name}"
    if status.get("phase") == "Failed":
        why = _one_line(f"{status.get('reason') or 'Failed'}: {status.get('message') or ''}")
        problem = f"node {node}: the daemon's pod failed ({why.rstrip(': ')}): {describe}"
        return DaemonPod(name, node, False, problem)
    scheduled = conditions.get("PodScheduled") or {}
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        why = _one_line(scheduled.get("message") or "Unschedulable")
        return DaemonPod(name, node, False, (
            f"node {node}: the daemon cannot be scheduled ({why}): make room on the node or "
            "lower the daemon's resource requests (shark-tui manifests, edit, kubectl apply -f -)"
        ))  # fmt: skip
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        message = _one_line(waiting.get("message") or "")
        if reason in _IMAGE_PULL:
            return DaemonPod(name, node, False, (
                f"node {node}: cannot pull the image {image} ({reason}: {message}): build it "
                "with the Dockerfile (README: Kubernetes), push it where the nodes pull from and "
                "pass --image REGISTRY/shark-tui:TAG (a private registry also needs an "
                f"imagePullSecret on serviceaccount {NAME} in namespace {NAMESPACE})"
            ))  # fmt: skip
        if reason == "CrashLoopBackOff":
            last = ((cs.get("lastState") or {}).get("terminated")) or {}
            exited = f"exit code {last.get('exitCode', '?')}"
            said = last.get("message") or last.get("reason") or ""
            if said:
                exited += f": {_one_line(said)}"
            return DaemonPod(name, node, False, (
                f"node {node}: the daemon keeps exiting ({exited}): kubectl logs -n {NAMESPACE} "
                f"{name} --previous"
            ))  # fmt: skip
        if reason in _CANNOT_START:
            problem = f"node {node}: the daemon cannot start ({reason}: {message}): {describe}"
            return DaemonPod(name, node, False, problem)
    return DaemonPod(name, node, False)


# ---------------------------------------------------------------------------------------------
# clean


def clean(
    api_client: ApiClient,
    *,
    say: Callable[[str], None],
    timeout_s: float | None = None,
    poll_s: float | None = None,
) -> int:
    """Delete every object labelled `MANAGED_BY` among the kinds tap creates (cluster-scoped
    ones anywhere, namespaced ones in `NAMESPACE`), the namespace last, and wait for the
    namespace to be gone. Returns how many objects were deleted."""
    timeout_s = NAMESPACE_GONE_TIMEOUT_S if timeout_s is None else timeout_s
    poll_s = POLL_S if poll_s is None else poll_s
    api = _Api(api_client)
    selector = _labels(MANAGED_BY)
    deleted = 0
    namespaces: list[str] = []
    for kind_name in reversed(_APPLIED):
        kind = _KINDS[kind_name]
        try:
            found = api.list(kind, NAMESPACE if kind.namespaced else None, labels=selector)
            for obj in found:
                meta = obj.get("metadata") or {}
                ns, name = meta.get("namespace"), str(meta.get("name", ""))
                if api.delete(kind, ns, name):
                    deleted += 1
                    say(f"deleted {kind.describe(ns, name)}")
                    if kind.kind == "Namespace":
                        namespaces.append(name)
        except _HttpError as e:
            raise _explain(e, _CLEAN_FIX) from None
    if not deleted:
        say(f"nothing to clean: no object labelled {selector}")
        return 0
    deadline = time.monotonic() + timeout_s
    for name in namespaces:
        waiting_said = False
        while True:
            try:
                left = api.get(_KINDS["Namespace"], None, name)
            except _HttpError as e:
                raise _explain(e, _CLEAN_FIX) from None
            if left is None:
                break
            if time.monotonic() >= deadline:
                say(f"warning: namespace {name} is still terminating after {timeout_s:.0f}s "
                    f"(kubectl get namespace {name} -o yaml says what holds it)")  # fmt: skip
                break
            if not waiting_said:
                say(f"waiting for namespace {name} to terminate")
                waiting_said = True
            time.sleep(poll_s)
    return deleted


# ---------------------------------------------------------------------------------------------
# port-forward


def _portforward_error(exc: Exception, namespace: str, pod: str, node: str) -> DeployError:
    """What a failed port-forward handshake means (the ``kubernetes`` client reports the
    websocket's HTTP status only in its text)."""
    text = str(getattr(exc, "reason", "") or exc)
    m = _HANDSHAKE.search(text)
    if m and m[1] == "403":
        return DeployError(
            f"forbidden: cannot create pods/portforward in namespace {namespace}: {_ASK_FIX}"
        )
    if m:
        why = f"HTTP {m[1]} {(m[2] or '').strip()}".strip()
    else:
        why = _one_line(text.split(" -+-+- ")[0])
    return DeployError(
        f"port-forward to pod {namespace}/{pod} (node {node}) failed ({why}): kubectl "
        f"port-forward -n {namespace} pod/{pod} {DAEMON_PORT} shows the same from here"
    )


def open_portforward(api_client: ApiClient, namespace: str, pod: str, port: int) -> Stream:
    """A port-forward stream to ``port`` of ``pod`` through the API server (a websocket; the
    ``kubernetes`` client's `PortForward`): ``.socket(port)`` carries the bytes. Raises the
    client's ``ApiException`` when the handshake fails."""
    from kubernetes import client
    from kubernetes.stream import portforward

    api = client.CoreV1Api(api_client)
    stream: Stream = portforward(api.connect_get_namespaced_pod_portforward, pod, namespace,
                                 ports=str(port))  # fmt: skip
    return stream


class _PortForwards:
    """Opens a stream to the daemon on a node: finds the node's daemon pod at each connection
    (a replaced pod has a new name) and opens the websocket. ``kubernetes.stream.portforward``
    swaps its client's ``call_api`` while it connects, so the streams get their own client and
    are opened one at a time."""

    def __init__(self, api_client: ApiClient) -> None:
        from kubernetes.client import ApiClient as _Client

        self._api = _Api(api_client)
        self._client = _Client(api_client.configuration)  # its pool stays unused: nothing to close
        self._lock = threading.Lock()

    def pod_on(self, node: str) -> str:
        try:
            pods = self._api.list(_KINDS["Pod"], NAMESPACE, labels=_labels(SELECTOR),
                                  fields=f"spec.nodeName={node}")  # fmt: skip
        except _HttpError as e:
            raise _explain(e) from None
        ready = [p for p in pods if not p["metadata"].get("deletionTimestamp")
                 and _daemon_pod(p, "").ready]  # fmt: skip
        if not ready:
            raise DeployError(f"node {node}: no ready daemon pod (kubectl get pods -n "
                              f"{NAMESPACE} -o wide)")  # fmt: skip
        return str(ready[0]["metadata"]["name"])

    def open(self, node: str) -> Stream:
        pod = self.pod_on(node)
        with self._lock:
            try:
                return open_portforward(self._client, NAMESPACE, pod, DAEMON_PORT)
            except Exception as e:  # ApiException (the handshake), websocket errors
                raise _portforward_error(e, NAMESPACE, pod, node) from None


class _Stoppable(Protocol):
    @property
    def address(self) -> str: ...

    def stop(self) -> None: ...


def forward_pods(tap: Tap, pods: Sequence[DaemonPod]) -> list[Forwarder]:
    """A local listener per daemon (``127.0.0.1``, a free port), each connection relayed to
    the daemon's port through the API server; one stream is opened and closed per node first,
    so a refused port-forward is said now rather than in the TUI."""
    streams = _PortForwards(tap.api_client)
    out: list[Forwarder] = []
    try:
        for pod in pods:
            fw = Forwarder(functools.partial(streams.open, pod.node), DAEMON_PORT,
                           name=f"node {pod.node}")  # fmt: skip
            fw.start()
            out.append(fw)
            fw.check()
            tap.say(f"node {pod.node}: {fw.address} → {NAMESPACE}/{pod.name}:{DAEMON_PORT}")
    except BaseException:
        for fw in out:
            fw.stop()
        raise
    return out


def run_tap(
    tap: Tap,
    *,
    keep: bool,
    open_ui: Callable[[list[tuple[str, str]]], object],
    forward: Callable[[Tap, Sequence[DaemonPod]], Sequence[_Stoppable]] | None = None,
) -> int:
    """The whole of ``tap``: apply, wait, port-forward, ``open_ui(links)`` (the TUI: a list of
    (address, token)); on the way out — the TUI quit, Ctrl-C, an error — stop the forwards and,
    unless ``keep``, undo what was applied."""
    forwards: Sequence[_Stoppable] = ()
    deployed = False
    try:
        tap.apply()
        pods = tap.wait()
        deployed = True
        forwards = (forward or forward_pods)(tap, pods)
        open_ui([(fw.address, tap.spec.token) for fw in forwards])
        return 0
    finally:
        try:
            for fw in forwards:
                fw.stop()
        finally:  # the undo runs even when an interruption lands in a stop
            if not keep:
                tap.undo()
            elif deployed or tap.changed:
                tap.say("--keep: the daemons stay in the cluster (shark-tui clean removes them)")

"""The stand-in apiserver, driven by the real ``kubectl`` (1.32) and the ``kubernetes`` client.

kubectl is a hard requirement here, as everywhere in the project's Kubernetes tests: missing,
the tests fail rather than skip.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes import client, config, dynamic, watch
from kubernetes.client.exceptions import ApiException

from tests.kube.apiserver import ApiServer, pod_security_status, pod_security_warning

MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata:
  name: shark
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: shark-tui
  namespace: shark
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: shark-tui
rules:
- apiGroups: [""]
  resources: [pods, services, namespaces, nodes]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: shark-tui
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: shark-tui}
subjects:
- {kind: ServiceAccount, name: shark-tui, namespace: shark}
---
apiVersion: v1
kind: Secret
metadata:
  name: shark-token
  namespace: shark
stringData:
  token: s3cr3t
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: shark-daemon
  namespace: shark
  labels: {app: shark}
spec:
  selector:
    matchLabels: {app: shark}
  template:
    metadata:
      labels: {app: shark}
    spec:
      hostNetwork: true
      hostPID: true
      serviceAccountName: shark-tui
      containers:
      - name: daemon
        image: ghcr.io/example/shark-tui:0.1.0
        args: [daemon, --listen, "0.0.0.0:8898"]
        securityContext: {privileged: true}
        volumeMounts:
        - {name: store, mountPath: /var/lib/shark-tui}
      volumes:
      - name: store
        hostPath: {path: /var/lib/shark-tui}
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shark
  labels: {app: web}
spec:
  nodeName: node-1
  containers:
  - name: nginx
    image: nginx:1.27
    ports:
    - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shark
spec:
  selector: {app: web}
  ports:
  - {port: 80, targetPort: 80}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc12
  namespace: shark
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- {name: "", port: 80, protocol: TCP}
endpoints:
- addresses: ["10.244.0.5"]
  conditions: {ready: true}
  nodeName: node-1
  targetRef: {kind: Pod, name: web, namespace: shark}
"""


def pod(name: str, namespace: str = "default", node: str | None = None,
        labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "busybox:1.36"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": spec}


@pytest.fixture(scope="session")
def kubectl_path() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is missing (the machine image provides kubectl 1.32)")
    return path


@pytest.fixture
def api() -> Iterator[ApiServer]:
    with ApiServer(namespace_finalize_delay=0.2) as server:
        yield server


class Kubectl:
    """``kubectl`` with a kubeconfig for the stand-in and nothing from the user's home."""

    def __init__(self, binary: str, kubeconfig: Path, home: Path) -> None:
        self.binary = binary
        self.env = {k: v for k, v in os.environ.items()
                    if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
        self.env.update(KUBECONFIG=str(kubeconfig), HOME=str(home),
                        NO_PROXY="127.0.0.1,localhost")

    def __call__(self, *args: str, stdin: str | None = None,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([self.binary, *args], input=stdin, env=self.env,
                                capture_output=True, text=True, timeout=30)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([self.binary, *args], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)


@pytest.fixture
def kubectl(api: ApiServer, kubectl_path: str, tmp_path: Path) -> Kubectl:
    return Kubectl(kubectl_path, api.kubeconfig(tmp_path / "kubeconfig"), tmp_path)


@pytest.fixture
def core(api: ApiServer, tmp_path: Path) -> client.CoreV1Api:
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig-py")
    return client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))


# ---- kubectl


def test_kubectl_version_and_api_resources(kubectl: Kubectl) -> None:
    version = json.loads(kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.32.0"

    rows = {}
    for line in kubectl("api-resources", "--no-headers").stdout.splitlines():
        fields = line.split()
        # NAME [SHORTNAMES] APIVERSION NAMESPACED KIND
        rows[fields[0]] = (fields[1:-3], fields[-3], fields[-2], fields[-1])
    assert rows == {
        "configmaps": (["cm"], "v1", "true", "ConfigMap"),
        "events": (["ev"], "v1", "true", "Event"),
        "namespaces": (["ns"], "v1", "false", "Namespace"),
        "nodes": (["no"], "v1", "false", "Node"),
        "pods": (["po"], "v1", "true", "Pod"),
        "secrets": ([], "v1", "true", "Secret"),
        "serviceaccounts": (["sa"], "v1", "true", "ServiceAccount"),
        "services": (["svc"], "v1", "true", "Service"),
        "daemonsets": (["ds"], "apps/v1", "true", "DaemonSet"),
        "endpointslices": ([], "discovery.k8s.io/v1", "true", "EndpointSlice"),
        "clusterrolebindings": ([], "rbac.authorization.k8s.io/v1", "false",
                                "ClusterRoleBinding"),
        "clusterroles": ([], "rbac.authorization.k8s.io/v1", "false", "ClusterRole"),
        "rolebindings": ([], "rbac.authorization.k8s.io/v1", "true", "RoleBinding"),
        "roles": ([], "rbac.authorization.k8s.io/v1", "true", "Role"),
    }
    verbs = kubectl("api-resources", "-o", "wide", "--no-headers").stdout
    assert "create,delete,get,list,patch,update,watch" in next(
        line for line in verbs.splitlines() if line.startswith("namespaces "))
    assert kubectl("api-resources", "--categories=all", "-o", "name").stdout.split() == [
        "pods", "services", "daemonsets.apps"]


def test_kubectl_explain_reads_the_openapi_v3_schemas(kubectl: Kubectl) -> None:
    out = kubectl("explain", "daemonsets.spec.template.spec.hostNetwork").stdout
    assert "FIELD: hostNetwork <boolean>" in out
    assert "Host networking requested for this pod" in out


def test_kubectl_apply_get_and_delete_a_multi_document_manifest(
    api: ApiServer, kubectl: Kubectl, tmp_path: Path,
) -> None:
    api.namespace_finalize_delay = 0.5  # the namespace is deleted first: the rest must go too
    manifest = tmp_path / "shark.yaml"
    manifest.write_text(MANIFEST)

    out = kubectl("apply", "-f", str(manifest)).stdout.splitlines()
    assert out == [
        "namespace/shark created",
        "serviceaccount/shark-tui created",
        "clusterrole.rbac.authorization.k8s.io/shark-tui created",
        "clusterrolebinding.rbac.authorization.k8s.io/shark-tui created",
        "secret/shark-token created",
        "daemonset.apps/shark-daemon created",
        "pod/web created",
        "service/web created",
        "endpointslice.discovery.k8s.io/web-abc12 created",
    ]

    # What kubectl sent: one POST per document, validated by the server (Strict), and every
    # body valid against the official 1.32 schemas, unknown fields included.
    posts = [r for r in api.requests if r.method == "POST"]
    assert [r.path for r in posts] == [
        "/api/v1/namespaces",
        "/api/v1/namespaces/shark/serviceaccounts",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        "/api/v1/namespaces/shark/secrets",
        "/apis/apps/v1/namespaces/shark/daemonsets",
        "/api/v1/namespaces/shark/pods",
        "/api/v1/namespaces/shark/services",
        "/apis/discovery.k8s.io/v1/namespaces/shark/endpointslices",
    ]
    for request in posts:
        assert request.query["fieldValidation"] == "Strict"
        assert request.query["fieldManager"] == "kubectl-client-side-apply"
        kubernetes_validate.validate(request.body, "1.32", strict=True)
    ds_body = next(r.body for r in posts if r.body["kind"] == "DaemonSet")
    assert ds_body["spec"]["template"]["spec"]["hostNetwork"] is True

    # ... and what the server stored, also valid.
    for resource in ("daemonsets", "pods", "services", "secrets", "endpointslices",
                     "serviceaccounts", "namespaces"):
        for obj in api.list(resource):
            kubernetes_validate.validate(obj, "1.32", strict=True)
    secret = api.get("secrets", "shark-token", "shark")
    assert secret["data"] == {"token": "czNjcjN0"} and "stringData" not in secret
    assert api.get("services", "web", "shark")["spec"]["clusterIP"].startswith("10.96.")
    assert {sa["metadata"]["name"] for sa in api.list("serviceaccounts", "shark")} == {
        "default", "shark-tui"}

    listed = json.loads(kubectl("get", "pods", "-A", "-o", "json").stdout)
    assert [(p["metadata"]["namespace"], p["metadata"]["name"], p["spec"]["nodeName"])
            for p in listed["items"]] == [("shark", "web", "node-1")]
    assert listed["items"][0]["status"]["phase"] == "Pending"
    names = kubectl("get", "ds,svc,sa,secret,endpointslices", "-n", "shark", "-o", "name").stdout
    assert names.split() == [
        "daemonset.apps/shark-daemon", "service/web", "serviceaccount/default",
        "serviceaccount/shark-tui", "secret/shark-token",
        "endpointslice.discovery.k8s.io/web-abc12",
    ]

    # A second apply with a new image: a strategic merge patch that keeps the defaults.
    api.clear_requests()
    manifest.write_text(MANIFEST.replace("nginx:1.27", "nginx:1.28"))
    out = kubectl("apply", "-f", str(manifest)).stdout
    assert "pod/web configured" in out and "daemonset.apps/shark-daemon unchanged" in out
    patch = next(r for r in api.requests if r.method == "PATCH" and r.path.endswith("/pods/web"))
    assert patch.headers["Content-Type"] == "application/strategic-merge-patch+json"
    container = api.get("pods", "web", "shark")["spec"]["containers"][0]
    assert container["image"] == "nginx:1.28"
    assert container["ports"] == [{"containerPort": 80}]
    assert container["terminationMessagePath"] == "/dev/termination-log"

    out = kubectl("delete", "-f", str(manifest)).stdout.splitlines()
    assert out[0] == 'namespace "shark" deleted' and len(out) == 9
    assert api.list("pods") == [] and api.list("daemonsets") == []
    assert api.list("clusterroles") == [] and api.list("endpointslices") == []
    assert "shark" not in {ns["metadata"]["name"] for ns in api.list("namespaces")}


def test_kubectl_create_namespace_then_delete_it_with_its_contents(
    api: ApiServer, kubectl: Kubectl, core: client.CoreV1Api,
) -> None:
    # kubectl's create subcommands send protobuf: the stand-in decodes those kinds.
    assert kubectl("create", "namespace", "x").stdout.strip() == "namespace/x created"
    created = api.requests[-1]
    assert created.headers["Content-Type"] == "application/vnd.kubernetes.protobuf"
    assert created.body["kind"] == "Namespace" and created.body["metadata"] == {"name": "x"}
    kubectl("create", "configmap", "settings", "-n", "x", "--from-literal=level=debug")
    kubectl("create", "secret", "generic", "pw", "-n", "x", "--from-literal=pw=hunter2")
    kubectl("create", "clusterrole", "reader", "--verb=get,list", "--resource=pods")
    assert api.get("configmaps", "settings", "x")["data"] == {"level": "debug"}
    assert api.get("secrets", "pw", "x")["data"] == {"pw": "aHVudGVyMg=="}
    assert api.get("clusterroles", "reader")["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    ns = api.get("namespaces", "x")
    assert ns["status"] == {"phase": "Active"}
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "x"}

    rv = core.list_config_map_for_all_namespaces().metadata.resource_version
    assert kubectl("delete", "namespace", "x").stdout.strip() == 'namespace "x" deleted'
    events = [(e["type"], e["object"]["kind"], e["object"]["metadata"]["name"]) for e in
              _raw_watch(api, "/api/v1/configmaps", rv)]
    assert events == [("DELETED", "ConfigMap", "settings")]
    events = [(e["type"], e["object"]["status"]["phase"]) for e in
              _raw_watch(api, "/api/v1/namespaces?fieldSelector=metadata.name%3Dx", rv)]
    assert events == [("MODIFIED", "Terminating"), ("DELETED", "Terminating")]
    with pytest.raises(ApiException) as e:
        core.read_namespace("x")
    assert e.value.status == 404


def test_kubectl_watch_sees_what_the_test_creates_and_deletes(
    api: ApiServer, kubectl: Kubectl,
) -> None:
    api.create(pod("before"))
    proc = kubectl.popen("get", "pods", "--watch", "-o", "json", "--output-watch-events")
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or ()],
                              daemon=True)
    reader.start()
    try:
        def next_event() -> tuple[str, str]:
            event = json.loads(lines.get(timeout=10))
            return event["type"], event["object"]["metadata"]["name"]

        assert next_event() == ("ADDED", "before")
        api.create(pod("web-1", node="node-1"))
        assert next_event() == ("ADDED", "web-1")
        api.delete("pods", "web-1")
        assert next_event() == ("DELETED", "web-1")
        api.create(pod("elsewhere", namespace="kube-system"))  # another namespace: not seen
        api.delete("pod", "before", "default")
        assert next_event() == ("DELETED", "before")
    finally:
        proc.kill()
        proc.wait()
    watches = [r for r in api.requests if r.query.get("watch") == "true"]
    assert watches and watches[0].path == "/api/v1/namespaces/default/pods"


def test_kubectl_get_forbidden(api: ApiServer, kubectl: Kubectl) -> None:
    user = "system:serviceaccount:x:y"
    api.user = user  # kubectl sends no kubeconfig token over plain HTTP: requests act as this
    api.forbid("list", "pods")

    result = kubectl("get", "pods", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f'Error from server (Forbidden): pods is forbidden: User "{user}" cannot list resource '
        '"pods" in API group "" in the namespace "default"'
    )
    result = kubectl("get", "pods", "-A", check=False)
    assert result.stderr.strip().endswith(
        'cannot list resource "pods" in API group "" at the cluster scope')
    result = kubectl("get", "pods", "--as=system:serviceaccount:shark:tui", check=False)
    assert 'User "system:serviceaccount:shark:tui" cannot list' in result.stderr
    assert kubectl("get", "services").returncode == 0


def test_python_client_bearer_token(api: ApiServer, tmp_path: Path) -> None:
    kubeconfig = api.kubeconfig(tmp_path / "kc", token="sa-token",
                                user="system:serviceaccount:x:y")
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    api.forbid("get", "secrets", namespace="kube-system")
    with pytest.raises(ApiException) as e:
        core.read_namespaced_secret("token", "kube-system")
    assert json.loads(e.value.body)["message"] == (
        'secrets "token" is forbidden: User "system:serviceaccount:x:y" cannot get resource '
        '"secrets" in API group "" in the namespace "kube-system"')
    assert api.requests[-1].headers["authorization"] == "Bearer sa-token"

    stranger = api.kubeconfig(tmp_path / "kc2", token="unknown")
    api.revoke_token("unknown")
    with pytest.raises(ApiException) as e:
        client.CoreV1Api(config.new_client_from_config(config_file=str(stranger))).list_node()
    assert e.value.status == 401 and json.loads(e.value.body)["reason"] == "Unauthorized"


def test_kubectl_apply_rejected_by_admission_and_warned(
    api: ApiServer, kubectl: Kubectl, tmp_path: Path,
) -> None:
    violations = ["host namespaces (hostNetwork=true, hostPID=true)",
                  'hostPath volumes (volume "store")',
                  'privileged (container "daemon" must not set securityContext.privileged=true)']
    docs = list(yaml.safe_load_all(MANIFEST))
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    manifest = tmp_path / "ds.yaml"
    manifest.write_text(yaml.safe_dump_all([docs[0], ds]))

    api.warn("create", "daemonsets", pod_security_warning(violations))
    out = kubectl("apply", "-f", str(manifest))
    assert out.stderr.strip() == (
        'Warning: would violate PodSecurity "baseline:latest": host namespaces (hostNetwork=true,'
        ' hostPID=true), hostPath volumes (volume "store"), privileged (container "daemon" must '
        "not set securityContext.privileged=true)"
    )

    api.reject_create("pods", pod_security_status("shark-daemon-x7k2p", violations))
    pod_doc = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "shark-daemon-x7k2p", "namespace": "shark"},
               "spec": ds["spec"]["template"]["spec"]}
    result = kubectl("create", "-f", "-", stdin=json.dumps(pod_doc), check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        'Error from server (Forbidden): error when creating "STDIN": pods "shark-daemon-x7k2p" '
        'is forbidden: violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true, '
        'hostPID=true), hostPath volumes (volume "store"), privileged (container "daemon" must '
        "not set securityContext.privileged=true)"
    )
    assert api.list("pods") == []


def test_kubectl_strict_field_validation_and_server_errors(
    api: ApiServer, kubectl: Kubectl,
) -> None:
    bad = pod("typo")
    bad["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    result = kubectl("apply", "-f", "-", stdin=json.dumps(bad), check=False)
    assert result.returncode == 1
    assert ('strict decoding error: unknown field "spec.containers[0].imagePullPolicyy"'
            in result.stderr)

    result = kubectl("create", "-f", "-", stdin=json.dumps(pod("p", namespace="nowhere")),
                     check=False)
    assert 'Error from server (NotFound): error when creating "STDIN": namespaces "nowhere" ' \
           "not found" in result.stderr
    kubectl("create", "-f", "-", stdin=json.dumps(pod("p")))
    result = kubectl("create", "-f", "-", stdin=json.dumps(pod("p")), check=False)
    assert 'Error from server (AlreadyExists): error when creating "STDIN": pods "p" already ' \
           "exists" in result.stderr
    result = kubectl("get", "pod", "nope", check=False)
    assert result.stderr.strip() == 'Error from server (NotFound): pods "nope" not found'
    result = kubectl("create", "-f", "-", stdin=json.dumps(pod("Bad_Name")), check=False)
    assert 'The Pod "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a ' \
           "lowercase RFC 1123 subdomain" in result.stderr


def test_kubectl_patch_label_and_selectors(api: ApiServer, kubectl: Kubectl) -> None:
    api.create(pod("a", node="node-1", labels={"app": "web", "tier": "front"}))
    api.create(pod("b", node="node-2", labels={"app": "web"}))
    api.create(pod("c", node="node-1", labels={"app": "db"}))

    def names(*args: str) -> list[str]:
        return kubectl("get", "pods", "-o", "name", *args).stdout.split()

    assert names("-l", "app=web") == ["pod/a", "pod/b"]
    assert names("-l", "app in (web,db),!tier") == ["pod/b", "pod/c"]
    assert names("--field-selector", "spec.nodeName=node-1") == ["pod/a", "pod/c"]
    assert names("--field-selector", "spec.nodeName!=node-1,metadata.name!=b") == []
    result = kubectl("get", "pods", "--field-selector", "spec.image=x", check=False)
    assert "field label not supported: spec.image" in result.stderr

    kubectl("label", "pod", "b", "tier=back")
    kubectl("patch", "pod", "c", "--type=json",
            "-p", '[{"op": "replace", "path": "/metadata/labels/app", "value": "cache"}]')
    kubectl("patch", "pod", "a", "--type=merge", "-p", '{"metadata": {"labels": {"tier": null}}}')
    assert names("-l", "tier") == ["pod/b"]
    assert api.get("pod", "c")["metadata"]["labels"] == {"app": "cache"}
    kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(pod("d")))
    assert api.get("pod", "d")["spec"]["containers"][0]["image"] == "busybox:1.36"


# ---- the kubernetes Python client


def test_python_client_list_then_watch_from_the_list_resource_version(
    api: ApiServer, core: client.CoreV1Api,
) -> None:
    api.create(pod("old"))
    listed = core.list_pod_for_all_namespaces()
    assert [p.metadata.name for p in listed.items] == ["old"]
    rv = listed.metadata.resource_version

    api.create(pod("new", namespace="kube-system"))
    changed = api.get("pods", "old")
    changed["status"] = {"phase": "Running", "podIP": "10.244.0.7"}
    api.update(changed)
    api.delete("pods", "old")

    api.create(pod("marker"))
    stream = watch.Watch().stream(core.list_pod_for_all_namespaces, resource_version=rv,
                                  timeout_seconds=10)
    seen = [(e["type"], e["object"].metadata.name, e["object"].status.phase)
            for e in _take(stream, 4)]
    assert seen == [("ADDED", "new", "Pending"), ("MODIFIED", "old", "Running"),
                    ("DELETED", "old", "Running"), ("ADDED", "marker", "Pending")]


def test_python_client_resumes_after_dropped_watches_without_losing_events(
    api: ApiServer, core: client.CoreV1Api,
) -> None:
    rv = core.list_namespaced_pod("default").metadata.resource_version
    seen: queue.Queue[tuple[str, str, str] | Exception] = queue.Queue()

    def consume() -> None:
        try:
            for e in watch.Watch().stream(core.list_namespaced_pod, "default",
                                          resource_version=rv, timeout_seconds=30):
                obj = e["object"]
                seen.put((e["type"], obj.metadata.name, obj.metadata.resource_version))
        except Exception as exc:  # the abrupt close reaches the client as an error
            seen.put(exc)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    api.create(pod("p1"))
    kind, name, last_rv = seen.get(timeout=10)  # type: ignore[misc]
    assert (kind, name) == ("ADDED", "p1")

    api.drop_watches()
    dropped = seen.get(timeout=10)
    assert isinstance(dropped, Exception) and "ended prematurely" in str(dropped)
    thread.join(5)
    api.create(pod("p2"))
    api.create(pod("p3"))
    api.delete("pods", "p1")
    api.create(pod("p4"))  # after the watch resumes: the first event that is not a missed one

    resumed = [(e["type"], e["object"].metadata.name) for e in _take(watch.Watch().stream(
        core.list_namespaced_pod, "default", resource_version=last_rv, timeout_seconds=10), 4)]
    assert resumed == [("ADDED", "p2"), ("ADDED", "p3"), ("DELETED", "p1"), ("ADDED", "p4")]


def test_python_client_gets_410_expired_after_compaction(
    api: ApiServer, core: client.CoreV1Api,
) -> None:
    old_rv = core.list_pod_for_all_namespaces().metadata.resource_version
    api.create(pod("p1"))
    api.compact()
    with pytest.raises(ApiException) as e:
        list(watch.Watch().stream(core.list_pod_for_all_namespaces, resource_version=old_rv,
                                  timeout_seconds=1))
    assert e.value.status == 410
    assert e.value.reason == (f"Expired: too old resource version: {old_rv} "
                              f"({api.resource_version})")

    # The wire form: HTTP 200, then one ERROR event carrying the 410 Status.
    events = _raw_watch(api, "/api/v1/pods", old_rv)
    assert events == [{"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"too old resource version: {old_rv} ({api.resource_version})",
        "reason": "Expired", "code": 410}}]

    # Relisting gives a fresh resourceVersion to watch from.
    rv = core.list_pod_for_all_namespaces().metadata.resource_version
    api.delete("pods", "p1")
    assert [e["type"] for e in _take(watch.Watch().stream(
        core.list_pod_for_all_namespaces, resource_version=rv, timeout_seconds=10), 1)] == [
        "DELETED"]


def test_python_client_errors_are_real_status_objects(
    api: ApiServer, core: client.CoreV1Api,
) -> None:
    core.create_namespaced_pod("default", pod("p"))
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod("default", pod("p"))
    assert e.value.status == 409
    assert json.loads(e.value.body) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'pods "p" already exists', "reason": "AlreadyExists",
        "details": {"name": "p", "kind": "pods"}, "code": 409}

    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod("missing", pod("p", namespace="missing"))
    assert e.value.status == 404
    assert json.loads(e.value.body)["details"] == {"name": "missing", "kind": "namespaces"}

    stale = core.read_namespaced_pod("p", "default")
    core.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"x": "1"}}})
    stale.metadata.labels = {"x": "2"}
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_pod("p", "default", stale)
    assert e.value.status == 409 and json.loads(e.value.body)["reason"] == "Conflict"

    api.forbid("watch", "pods", namespace="default")
    with pytest.raises(ApiException) as e:
        list(watch.Watch().stream(core.list_namespaced_pod, "default", timeout_seconds=1))
    assert e.value.status == 403
    assert json.loads(e.value.body)["message"] == (
        'pods is forbidden: User "kubernetes-admin" cannot watch resource "pods" in API group ""'
        ' in the namespace "default"')


def test_python_client_status_subresource_and_selectors(
    api: ApiServer, core: client.CoreV1Api,
) -> None:
    api.create(pod("a", node="node-1", labels={"app": "web"}))
    api.create(pod("b", node="node-2", labels={"app": "web"}))
    running = core.patch_namespaced_pod_status("a", "default", {"status": {"phase": "Running"}})
    assert running.status.phase == "Running"
    # a write to the main resource cannot change the status
    core.patch_namespaced_pod("a", "default", {"status": {"phase": "Failed"},
                                               "metadata": {"labels": {"v": "2"}}})
    assert api.get("pods", "a")["status"]["phase"] == "Running"

    on_node = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-1")
    assert [p.metadata.name for p in on_node.items] == ["a"]
    running = core.list_namespaced_pod("default", field_selector="status.phase=Running",
                                       label_selector="app=web,v=2")
    assert [p.metadata.name for p in running.items] == ["a"]

    page = core.list_namespaced_pod("default", limit=1)
    assert [p.metadata.name for p in page.items] == ["a"]
    assert page.metadata.remaining_item_count == 1
    rest = core.list_namespaced_pod("default", limit=1, _continue=page.metadata._continue)
    assert [p.metadata.name for p in rest.items] == ["b"] and not rest.metadata._continue


def test_python_client_watch_with_initial_events_and_bookmarks(api: ApiServer) -> None:
    api.create(pod("a"))
    url = (f"{api.url}/api/v1/namespaces/default/pods?watch=true&sendInitialEvents=true"
           "&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=10")
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Transfer-Encoding"] == "chunked"
        first = json.loads(response.readline())
        bookmark = json.loads(response.readline())
        api.create(pod("b"))
        api.send_bookmarks()
        rest = [json.loads(response.readline()) for _ in range(2)]
    assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "a")
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in rest] == [
        ("ADDED", "b"), ("BOOKMARK", None)]
    assert rest[1]["object"]["metadata"]["resourceVersion"] == api.resource_version


def test_python_dynamic_client_uses_legacy_discovery(api: ApiServer, tmp_path: Path) -> None:
    kubeconfig = api.kubeconfig(tmp_path / "kc")
    dyn = dynamic.DynamicClient(config.new_client_from_config(config_file=str(kubeconfig)))
    daemonsets = dyn.resources.get(api_version="apps/v1", kind="DaemonSet")
    assert (daemonsets.name, daemonsets.namespaced, daemonsets.short_names) == (
        "daemonsets", True, ["ds"])
    roles = dyn.resources.get(api_version="rbac.authorization.k8s.io/v1", kind="ClusterRole")
    assert roles.namespaced is False
    ds = next(d for d in yaml.safe_load_all(MANIFEST) if d["kind"] == "DaemonSet")
    ds["metadata"]["namespace"] = "default"
    created = daemonsets.create(body=ds, namespace="default")
    assert created.metadata.generation == 1
    assert [d.metadata.name for d in daemonsets.get(namespace="default").items] == [
        "shark-daemon"]


def _raw_watch(api: ApiServer, path: str, rv: str) -> list[dict[str, Any]]:
    """The events a watch from ``rv`` replays, read with plain urllib: the server sends a
    BOOKMARK, asked for once the watch is open, after what it had to replay."""
    sep = "&" if "?" in path else "?"
    url = f"{api.url}{path}{sep}watch=true&resourceVersion={rv}&allowWatchBookmarks=true"
    events = []
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            api.send_bookmarks()
            for line in response:
                event = json.loads(line)
                if event["type"] == "BOOKMARK":
                    break
                events.append(event)
    except urllib.error.HTTPError as e:
        raise AssertionError(e.read()) from e
    return events


def _take(stream: Iterator[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The first ``n`` events of a watch stream (then the stream is closed)."""
    events = []
    for event in stream:
        events.append(event)
        if len(events) == n:
            break
    return events


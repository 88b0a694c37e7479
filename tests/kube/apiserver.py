"""A stand-in Kubernetes API server that the real ``kubectl`` and the ``kubernetes`` client drive.

No kube-apiserver can be installed on the project's machines (see RECIPES.md, "Kubernetes"),
so the tests that need a cluster talk to this: a real HTTP/1.1 server on ``127.0.0.1`` (a free
port, a background thread, plain HTTP) with an in-memory store, an etcd-like global
resourceVersion and an event log that watches replay from.

    with ApiServer() as api:
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
        subprocess.run(["kubectl", "apply", "-f", "objects.yaml"],
                       env={**os.environ, "KUBECONFIG": str(kubeconfig)}, check=True)
        assert api.get("daemonsets", "shark", "shark")["spec"]["template"]["spec"]["hostNetwork"]

Resources served (apiVersion, namespaced or not, verbs, short names and categories as in a
v1.32 cluster): v1 namespaces, pods, services, serviceaccounts, secrets, configmaps, nodes,
events; apps/v1 daemonsets; discovery.k8s.io/v1 endpointslices; rbac.authorization.k8s.io/v1
clusterroles, clusterrolebindings, roles, rolebindings.

Faithful to the real apiserver (what clients can observe):

- Discovery: ``/version``, ``/api``, ``/apis``, ``/api/v1``, ``/apis/<group>[/<version>]`` in
  the legacy format (APIVersions, APIGroupList, APIGroup, APIResourceList) and, when the
  ``Accept`` header asks for it (as kubectl 1.32 does), aggregated discovery
  (``apidiscovery.k8s.io/v2`` APIGroupDiscoveryList, answered with its own content type).
- OpenAPI v3 (``/openapi/v3`` and one document per group-version), built from the official
  Kubernetes 1.32 schemas that kubernetes-validate ships, with paths whose operations carry
  ``x-kubernetes-group-version-kind`` and the ``fieldValidation`` parameter, so kubectl sends
  ``fieldValidation=Strict`` and leaves validation to the server, which checks every object it
  is sent against those schemas (unknown field: 400 BadRequest ``strict decoding error``;
  missing required field: 422 Invalid; wrong type: 400 BadRequest). Without that parameter
  unknown fields are kept and reported in a ``Warning`` header, as the server's default
  ``Warn`` does (the real server drops them). ``kubectl explain`` and ``kubectl apply`` work
  with their default ``--validate``.
- get, list, watch, create, update (PUT), patch, delete, deletecollection; ``dryRun=All``.
  Lists carry ``metadata.resourceVersion`` and items without apiVersion/kind (as the real
  server sends them); ``labelSelector`` (``=``, ``==``, ``!=``, ``in``, ``notin``, exists,
  ``!key``) and ``fieldSelector`` (``metadata.name``, ``metadata.namespace`` and the
  per-resource fields the real server indexes, such as ``spec.nodeName`` and ``status.phase``
  for pods; other fields are a 400 ``field label not supported``); ``limit`` and ``continue``
  page in key order (namespace, name) with ``remainingItemCount``, and a continue token from
  before :meth:`ApiServer.compact` is 410 Expired.
- Watch (``?watch=true`` or the ``/watch/`` paths): newline-delimited JSON events in a chunked
  response; ``resourceVersion`` unset or ``"0"`` starts with synthetic ADDED events for what
  exists, ``resourceVersion=N`` replays the log after N, a resourceVersion older than the last
  compaction answers HTTP 200 and one ERROR event holding a 410 ``Expired`` Status (``too old
  resource version: N (M)``), as the watch cache does; ``sendInitialEvents=true`` ends the
  initial events with a BOOKMARK annotated ``k8s.io/initial-events-end``;
  ``allowWatchBookmarks`` (BOOKMARK events on :meth:`ApiServer.send_bookmarks`);
  ``timeoutSeconds`` ends the stream cleanly. With a selector, an object that starts or stops
  matching arrives as ADDED or DELETED, as the watch cache sends it.
- Writes: the server sets uid, resourceVersion, creationTimestamp, namespace (from the URL),
  generateName suffixes, generation (daemonsets), a few defaults (namespace phase, finalizer
  and ``kubernetes.io/metadata.name`` label; pod restartPolicy, dnsPolicy, phase Pending;
  service type and clusterIP; secret type and ``stringData`` folded into ``data``) and a
  ``default`` serviceaccount in every new namespace. Names are validated (RFC 1123 subdomain
  or label, DNS-1035 for services, path segments for RBAC). Objects whose status has its own
  subresource keep their status on writes to the main resource and only change their status
  on writes to ``/status``. A no-op update is not written (no new resourceVersion, no event).
  An update with a stale ``metadata.resourceVersion`` is a 409 Conflict.
- Patch types: JSON merge patch, JSON patch, strategic merge patch (lists merged by the
  ``x-kubernetes-patch-merge-key`` of the official schemas; ``$patch``, ``$setElementOrder``,
  ``$retainKeys`` and ``$deleteFromPrimitiveList`` directives understood or ignored) and
  server-side apply (``application/apply-patch+yaml``) as create-or-merge.
- Errors are ``Status`` objects with the real messages, reasons, codes and details: NotFound,
  AlreadyExists, Conflict, Forbidden, Invalid, BadRequest, MethodNotAllowed, NotAcceptable,
  UnsupportedMediaType, Expired, Unauthorized (a bearer token that was never registered).
- A namespace deleted over HTTP turns ``Terminating`` (MODIFIED), refuses new content (403
  ``because it is being terminated``) and is emptied and removed, each object with its
  DELETED event, once no write has reached the server for ``namespace_finalize_delay``
  seconds (the namespace controller's lag), so ``kubectl delete -f`` of a file that starts
  with the namespace still finds the rest, and ``kubectl delete namespace`` waits for it.
- Request bodies in JSON, YAML and, for the kinds kubectl's ``create`` subcommands send typed
  (``kubectl create namespace|configmap|secret|serviceaccount|clusterrole|
  clusterrolebinding|role|rolebinding``), Kubernetes protobuf, decoded with the field numbers
  of the official ``generated.proto`` files (:attr:`Request.body` holds the decoded object);
  any other protobuf body is a 415 that names what could not be decoded. A missing
  Content-Type is JSON, as for the real server (the Python client sends none).
- Users: a bearer token registered by :meth:`ApiServer.kubeconfig` (the Python client sends
  it; an unknown one is 401) or ``Impersonate-User`` (``kubectl --as``), else
  :attr:`ApiServer.user`. kubectl 1.32 sends no kubeconfig token over plain HTTP, so a kubectl
  test picks its user with ``api.user`` or ``--as``.

Simplified or missing:

- No TLS, no HTTP/2, no client certificates, no RBAC evaluation (no
  ``SelfSubjectAccessReview``, so no ``kubectl auth can-i``): everything is allowed unless
  :meth:`ApiServer.forbid` says otherwise; impersonation needs no permission.
- Responses are JSON only (every client accepts it): no protobuf or CBOR responses, no
  server-side Table printing (``kubectl get`` falls back to its own NAME/AGE columns, and
  ``-o json``/``yaml``/``name``/``jsonpath`` are unaffected), no ``/openapi/v2`` (404:
  kubectl 1.32 uses v3 for apply, explain and validation).
- No controllers, scheduler or kubelet: pods stay Pending until a test changes them, a deleted
  pod goes at once (as an unscheduled pod does), ``propagationPolicy`` and finalizers other
  than the namespace's are not honoured, and no managedFields are kept.
- Server-side apply is create-or-merge: no field ownership and no conflicts.
- ``limit``/``continue`` pages read the current state, not a snapshot at the first page's
  resourceVersion; lists ignore ``resourceVersion``/``resourceVersionMatch``.
- No subresources other than ``status`` (and the namespace ``finalize``): no
  ``pods/portforward``, ``pods/exec``, ``pods/log``, ``pods/eviction``, proxy or scale.
- Admission is what tests ask for: :meth:`ApiServer.reject_create` answers a given Status
  (:func:`pod_security_status` builds a PodSecurity one), :meth:`ApiServer.warn` adds a
  ``Warning`` header; nothing is evaluated against namespace labels.
- A watch from a resourceVersion newer than the server's waits for it instead of failing
  after a few seconds with ``Too large resource version``.

In-process API for tests: :meth:`ApiServer.create`, :meth:`~ApiServer.update`,
:meth:`~ApiServer.get`, :meth:`~ApiServer.list`, :meth:`~ApiServer.delete` (a namespace is
emptied and removed at once), :meth:`~ApiServer.drop_watches`, :meth:`~ApiServer.compact`,
:meth:`~ApiServer.forbid`, :meth:`~ApiServer.reject_create`, :meth:`~ApiServer.warn`,
:meth:`~ApiServer.send_bookmarks`, :meth:`~ApiServer.revoke_token` and
:attr:`~ApiServer.requests`, the record of every HTTP request received (method, path, query,
body, headers).
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import copy
import functools
import hashlib
import importlib.resources
import itertools
import json
import re
import secrets as _secrets
import select
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

KUBE_VERSION = "v1.32.0"
"""The Kubernetes version this stand-in answers as (``/version``, schemas)."""

Obj = dict[str, Any]

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
STATUS_VERBS = ("get", "patch", "update")
AGGREGATED_DISCOVERY = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceType:
    """One served resource, described as the real discovery documents describe it."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    subresources: tuple[str, ...] = ()
    field_selectors: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``pods``, ``daemonsets.apps``: how error messages name the resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The URL path of a collection or of one object."""
        path = self.prefix
        if self.namespaced and namespace is not None:
            path += f"/namespaces/{namespace}"
        path += f"/{self.plural}"
        return f"{path}/{name}" if name is not None else path


_POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)
_BOOL_FIELDS = frozenset({"spec.hostNetwork", "spec.unschedulable"})

RESOURCES: tuple[ResourceType, ...] = (
    ResourceType(
        group="", version="v1", plural="namespaces", singular="namespace", kind="Namespace",
        namespaced=False, short_names=("ns",),
        verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
        subresources=("finalize", "status"), field_selectors=("status.phase",),
    ),
    ResourceType(
        group="", version="v1", plural="pods", singular="pod", kind="Pod", namespaced=True,
        short_names=("po",), categories=("all",), subresources=("status",),
        field_selectors=_POD_FIELDS,
    ),
    ResourceType(
        group="", version="v1", plural="services", singular="service", kind="Service",
        namespaced=True, short_names=("svc",), categories=("all",), subresources=("status",),
        field_selectors=("spec.clusterIP", "spec.type"),
    ),
    ResourceType(
        group="", version="v1", plural="serviceaccounts", singular="serviceaccount",
        kind="ServiceAccount", namespaced=True, short_names=("sa",),
    ),
    ResourceType(
        group="", version="v1", plural="secrets", singular="secret", kind="Secret",
        namespaced=True, field_selectors=("type",),
    ),
    ResourceType(
        group="", version="v1", plural="configmaps", singular="configmap", kind="ConfigMap",
        namespaced=True, short_names=("cm",),
    ),
    ResourceType(
        group="", version="v1", plural="nodes", singular="node", kind="Node", namespaced=False,
        short_names=("no",), subresources=("status",), field_selectors=("spec.unschedulable",),
    ),
    ResourceType(
        group="", version="v1", plural="events", singular="event", kind="Event",
        namespaced=True, short_names=("ev",), field_selectors=_EVENT_FIELDS,
    ),
    ResourceType(
        group="apps", version="v1", plural="daemonsets", singular="daemonset", kind="DaemonSet",
        namespaced=True, short_names=("ds",), categories=("all",), subresources=("status",),
    ),
    ResourceType(
        group="discovery.k8s.io", version="v1", plural="endpointslices",
        singular="endpointslice", kind="EndpointSlice", namespaced=True,
    ),
    ResourceType(
        group="rbac.authorization.k8s.io", version="v1", plural="clusterroles",
        singular="clusterrole", kind="ClusterRole", namespaced=False,
    ),
    ResourceType(
        group="rbac.authorization.k8s.io", version="v1", plural="clusterrolebindings",
        singular="clusterrolebinding", kind="ClusterRoleBinding", namespaced=False,
    ),
    ResourceType(
        group="rbac.authorization.k8s.io", version="v1", plural="roles", singular="role",
        kind="Role", namespaced=True,
    ),
    ResourceType(
        group="rbac.authorization.k8s.io", version="v1", plural="rolebindings",
        singular="rolebinding", kind="RoleBinding", namespaced=True,
    ),
)

_INITIAL_NAMESPACES = ("default", "kube-node-lease", "kube-public", "kube-system")


def _group_versions() -> list[tuple[str, str]]:
    """(group, version) pairs in discovery order: the core group first."""
    seen: list[tuple[str, str]] = []
    for rt in RESOURCES:
        if (rt.group, rt.version) not in seen:
            seen.append((rt.group, rt.version))
    return seen


# --------------------------------------------------------------------------------------------
# Status objects and errors


class ApiError(Exception):
    """A request that the server answers with a failure ``Status``."""

    def __init__(self, status: Obj) -> None:
        super().__init__(status.get("message", ""))
        self.status = status

    @property
    def code(self) -> int:
        return int(self.status["code"])

    @property
    def reason(self) -> str:
        return str(self.status.get("reason", ""))


def status_failure(code: int, reason: str, message: str, details: Obj | None = None) -> Obj:
    """A ``Status`` as the apiserver sends for a failed request."""
    status: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
    }
    if reason:
        status["reason"] = reason
    if details is not None:
        status["details"] = details
    status["code"] = code
    return status


def _details(rt: ResourceType, name: str | None = None, **extra: Any) -> Obj:
    details: Obj = {}
    if name is not None:
        details["name"] = name
    if rt.group:
        details["group"] = rt.group
    details["kind"] = rt.plural
    details.update(extra)
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        status_failure(404, "NotFound", f'{rt.qualified} "{name}" not found', _details(rt, name))
    )


def _resource_not_found() -> ApiError:
    return ApiError(
        status_failure(404, "NotFound", "the server could not find the requested resource", {})
    )


def bad_request(message: str) -> ApiError:
    return ApiError(status_failure(400, "BadRequest", message))


def invalid(rt: ResourceType, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """422 Invalid, from (field, message) pairs."""
    text = "; ".join(f"{fld}: {msg}" for fld, msg in causes)
    if len(causes) > 1:
        text = f"[{', '.join(f'{fld}: {msg}' for fld, msg in causes)}]"
    details: Obj = {"name": name}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = rt.kind
    details["causes"] = [
        {"reason": _cause_reason(msg), "message": msg, "field": fld} for fld, msg in causes
    ]
    message = f'{rt.kind} "{name}" is invalid: {text}'
    return ApiError(status_failure(422, "Invalid", message, details))


def _cause_reason(message: str) -> str:
    for prefix, reason in (
        ("Required value", "FieldValueRequired"),
        ("Invalid value", "FieldValueInvalid"),
        ("Unsupported value", "FieldValueNotSupported"),
        ("Forbidden", "FieldValueForbidden"),
    ):
        if message.startswith(prefix):
            return reason
    return "FieldValueInvalid"


def forbidden_status(
    user: str, verb: str, rt: ResourceType, namespace: str | None, name: str | None = None,
    subresource: str | None = None,
) -> Obj:
    """RBAC's denial, word for word: ``pods is forbidden: User "u" cannot list resource "pods"
    in API group "" in the namespace "default"``."""
    resource = f"{rt.plural}/{subresource}" if subresource else rt.plural
    subject = f'{rt.qualified} "{name}"' if name else rt.qualified
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    message = (
        f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
        f'in API group "{rt.group}" {scope}'
    )
    return status_failure(403, "Forbidden", message, _details(rt, name))


def pod_security_status(
    name: str, violations: Iterable[str], level: str = "baseline", version: str = "latest",
) -> Obj:
    """The Status the PodSecurity admission plugin answers when it rejects a pod, e.g.
    ``pods "x" is forbidden: violates PodSecurity "baseline:latest": host namespaces
    (hostNetwork=true), hostPath volumes (volume "proc")``. Give the violations in the
    plugin's words, one string each."""
    message = (
        f'pods "{name}" is forbidden: violates PodSecurity "{level}:{version}": '
        f"{', '.join(violations)}"
    )
    return status_failure(403, "Forbidden", message, {"name": name, "kind": "pods"})


def pod_security_warning(violations: Iterable[str], level: str = "baseline",
                         version: str = "latest") -> str:
    """The warning PodSecurity adds to a workload (a DaemonSet, a Deployment) whose pod
    template it would reject: the workload itself is admitted."""
    return f'would violate PodSecurity "{level}:{version}": {", ".join(violations)}'


# --------------------------------------------------------------------------------------------
# Small helpers


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
        obj["metadata"] = meta
    return meta


def _dig(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _name_errors(rt: ResourceType, name: str) -> list[str]:
    """The apiserver's name validation for this resource (messages as it words them)."""
    if rt.group == "rbac.authorization.k8s.io":
        if name in (".", ".."):
            return [f'may not be \'{name}\'']
        return [f"may not contain '{c}'" for c in "/%" if c in name]
    if rt.plural == "namespaces":
        regex, maximum, text = _LABEL, 63, (
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
            "'-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
            "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        )
    elif rt.plural == "services":
        regex, maximum, text = _DNS1035, 63, (
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start "
            "with an alphabetic character, and end with an alphanumeric character (e.g. "
            "'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
        )
    else:
        regex, maximum, text = _SUBDOMAIN, 253, (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
            "'-' or '.', and must start and end with an alphanumeric character (e.g. "
            "'example.com', regex used for validation is "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        )
    errors = []
    if len(name) > maximum:
        errors.append(f"must be no more than {maximum} characters")
    if not regex.fullmatch(name):
        errors.append(text)
    return errors


# --------------------------------------------------------------------------------------------
# Selectors


@dataclass(frozen=True, slots=True)
class _Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        if self.op == "exists":
            return present
        return not present


_LABEL_TERM = re.compile(
    r"\s*(?:(?P<not>!)\s*(?P<nkey>[^\s,=!()]+)"
    r"|(?P<key>[^\s,=!()]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[^\s,=!()]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?)\s*(?:,|$)"
)


def parse_label_selector(text: str) -> list[_Requirement]:
    """``a=b,c!=d,e in (f,g),h notin (i),j,!k``; raises 400 BadRequest when it cannot."""
    requirements: list[_Requirement] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _LABEL_TERM.match(text, pos)
        if not m or m.end() == pos:
            raise bad_request(f'unable to parse requirement: found \'{text[pos:]}\'')
        pos = m.end()
        if m["nkey"]:
            requirements.append(_Requirement(m["nkey"], "!"))
        elif m["op"]:
            op = "!=" if m["op"] == "!=" else "="
            requirements.append(_Requirement(m["key"], op, (m["value"],)))
        elif m["setop"]:
            values = tuple(v.strip() for v in m["values"].split(",") if v.strip())
            requirements.append(_Requirement(m["key"], m["setop"], values))
        else:
            requirements.append(_Requirement(m["key"], "exists"))
    return requirements


def parse_field_selector(rt: ResourceType, text: str) -> list[tuple[str, str, str]]:
    """``metadata.name=x,spec.nodeName!=y`` as (field, op, value); only fields the real
    server supports for this resource."""
    terms: list[tuple[str, str, str]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"([^=!]+?)\s*(==|=|!=)\s*(.*)", part)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        fld, op, value = m[1], "!=" if m[2] == "!=" else "=", m[3]
        if fld not in ("metadata.name", "metadata.namespace", *rt.field_selectors):
            raise bad_request(f'field label not supported: {fld}')
        terms.append((fld, op, value))
    return terms


def _field_value(obj: Obj, fld: str) -> str:
    if fld == "source" and obj.get("kind", "Event") == "Event":
        value = _dig(obj, "source.component")
    else:
        value = _dig(obj, fld)
    if fld in _BOOL_FIELDS:
        return "true" if value else "false"
    return "" if value is None else str(value)


@dataclass(frozen=True, slots=True)
class _Filter:
    namespace: str | None
    labels: tuple[_Requirement, ...]
    fields: tuple[tuple[str, str, str], ...]

    def matches(self, obj: Obj) -> bool:
        meta = obj.get("metadata", {})
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        labels = meta.get("labels") or {}
        if not all(r.matches(labels) for r in self.labels):
            return False
        for fld, op, value in self.fields:
            if (_field_value(obj, fld) == value) != (op == "="):
                return False
        return True


# --------------------------------------------------------------------------------------------
# Official schemas (from kubernetes-validate) and the OpenAPI v3 documents built from them


@functools.cache
def _schema_dir(strict: bool) -> Path:
    root = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    wanted = tuple(int(x) for x in KUBE_VERSION.lstrip("v").split(".")[:2])
    best: tuple[tuple[int, int], str] | None = None
    for entry in root.iterdir():
        m = re.fullmatch(r"v(\d+)\.(\d+)\.\d+-local(-strict)?", entry.name)
        if not m or bool(m[3]) != strict:
            continue
        version = (int(m[1]), int(m[2]))
        if version <= wanted and (best is None or version > best[0]):
            best = (version, entry.name)
    if best is None:
        raise RuntimeError("kubernetes-validate ships no schemas for this version")
    return Path(str(root / best[1]))


@functools.cache
def _definitions(strict: bool = False) -> dict[str, Obj]:
    with open(_schema_dir(strict) / "_definitions.json", encoding="utf-8") as f:
        defs: dict[str, Obj] = json.load(f)["$defs"]
    return defs


@functools.cache
def _definition_name(group: str, version: str, kind: str) -> str:
    for name, schema in _definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind", ()):
            if (gvk["group"], gvk["version"], gvk["kind"]) == (group, version, kind) and (
                not name.startswith("io.k8s.apimachinery")
            ):
                return name
    raise KeyError(kind)


@functools.cache
def _validator(group: str, version: str, kind: str, strict: bool) -> Any:
    import jsonschema

    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": f"#/$defs/{_definition_name(group, version, kind)}",
        "$defs": _definitions(strict),
    }
    return jsonschema.Draft202012Validator(schema)


def _json_path(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _validate(rt: ResourceType, obj: Obj, mode: str) -> list[str]:
    """Check ``obj`` against the official schema. Raises 400/422 as the real server does;
    returns the warnings (unknown fields) to send when ``mode`` is ``Warn``."""
    name = _meta(obj).get("name") or _meta(obj).get("generateName") or ""
    problems = []
    for error in _validator(rt.group, rt.version, rt.kind, False).iter_errors(obj):
        problems.append(error)
    required = [e for e in problems if e.validator == "required"]
    if required:
        causes = []
        for e in required:
            missing = re.findall(r"'([^']+)' is a required property", e.message)
            where = _json_path(e.absolute_path)
            for m in missing:
                causes.append((f"{where}.{m}" if where else m, "Required value"))
        raise invalid(rt, name, causes)
    if problems:
        e = problems[0]
        raise bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
            f"{_json_path(e.absolute_path)}: {e.message}"
        )
    if mode == "Ignore":
        return []
    unknown = []
    for error in _validator(rt.group, rt.version, rt.kind, True).iter_errors(obj):
        if error.validator == "additionalProperties":
            where = _json_path(error.absolute_path)
            for extra in re.findall(r"'([^']+)' was unexpected", error.message):
                unknown.append(f"{where}.{extra}" if where else extra)
    if unknown and mode == "Strict":
        quoted = ", ".join(f'unknown field "{u}"' for u in sorted(unknown))
        raise bad_request(f"strict decoding error: {quoted}")
    return [f'unknown field "{u}"' for u in sorted(unknown)]


def _openapi_schema(schema: Any, top_kind: bool = False) -> Any:
    """One JSON-schema (2020-12, as kubernetes-validate ships it) definition back in the
    OpenAPI 3.0 form the apiserver publishes: single types, ``allOf``-wrapped references into
    ``#/components/schemas``, int-or-string and quantity as strings."""
    if isinstance(schema, list):
        return [_openapi_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    one_of = schema.get("oneOf")
    if one_of and {t for s in one_of for t in s.get("type", ())} >= {"string", "integer"}:
        return {"type": "string", "format": "int-or-string"}
    if one_of and {t for s in one_of for t in s.get("type", ())} >= {"string", "number"}:
        return {"type": "string"}
    out: Obj = {}
    for key, value in schema.items():
        if key == "$ref":
            continue
        if key == "type" and isinstance(value, list):
            value = next((t for t in value if t != "null"), "object")
        elif key == "properties":
            value = {k: _openapi_schema(v) for k, v in value.items()}
            if top_kind:
                for typemeta in ("apiVersion", "kind"):
                    if typemeta in value:
                        value[typemeta].pop("enum", None)
        elif key in ("items", "additionalProperties", "allOf", "anyOf", "oneOf", "not"):
            value = _openapi_schema(value)
        out[key] = value
    if "$ref" in schema:
        ref = schema["$ref"].replace("#/$defs/", "#/components/schemas/")
        if len(schema) == 1:
            return {"$ref": ref}
        out["allOf"] = [{"$ref": ref}]
    return out


def _refs(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str):
                yield value.rsplit("/", 1)[-1]
            else:
                yield from _refs(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _refs(value)


def _operation(rt: ResourceType, action: str, op_id: str, params: list[Obj],
               body: str | None, response: str) -> Obj:
    op: Obj = {
        "tags": [f"{rt.group or 'core'}_{rt.version}"],
        "operationId": op_id,
        "parameters": params,
        "responses": {
            "200": {
                "description": "OK",
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{response}"}
                    }
                },
            },
            "401": {"description": "Unauthorized"},
        },
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {
            "group": rt.group, "version": rt.version, "kind": rt.kind,
        },
    }
    if body is not None:
        content_types = (
            ("application/json-patch+json", "application/merge-patch+json",
             "application/strategic-merge-patch+json", "application/apply-patch+yaml")
            if action == "patch" else ("*/*",)
        )
        op["requestBody"] = {
            "content": {
                ct: {"schema": {"$ref": f"#/components/schemas/{body}"}} for ct in content_types
            },
            "required": True,
        }
    return op


def _query(name: str, description: str, schema_type: str = "string") -> Obj:
    return {
        "name": name, "in": "query", "description": description,
        "schema": {"type": schema_type, "uniqueItems": True},
    }


_WRITE_PARAMS = [
    _query("dryRun", "When present, indicates that modifications should not be persisted."),
    _query("fieldManager", "fieldManager is a name associated with the actor or entity that "
           "is making these changes."),
    _query("fieldValidation", "fieldValidation instructs the server on how to handle objects "
           "in the request containing unknown or duplicate fields. Valid values are: Ignore, "
           "Warn (the default), Strict."),
]
_LIST_PARAMS = [
    _query(n, n) for n in (
        "labelSelector", "fieldSelector", "resourceVersion", "resourceVersionMatch", "continue",
    )
] + [
    _query("limit", "limit", "integer"),
    _query("timeoutSeconds", "timeoutSeconds", "integer"),
    _query("watch", "watch", "boolean"),
    _query("allowWatchBookmarks", "allowWatchBookmarks", "boolean"),
    _query("sendInitialEvents", "sendInitialEvents", "boolean"),
]


def _path_param(name: str, description: str) -> Obj:
    return {"name": name, "in": "path", "description": description, "required": True,
            "schema": {"type": "string", "uniqueItems": True}}


@functools.cache
def _openapi_v3_document(group: str, version: str) -> bytes:
    """The OpenAPI v3 document of one group-version, as ``/openapi/v3/apis/<g>/<v>`` serves."""
    paths: Obj = {}
    wanted: set[str] = {
        "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
        "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
        "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
    }
    core = "Core" if not group else "".join(p.title() for p in group.split(".")[0:1])
    for rt in RESOURCES:
        if (rt.group, rt.version) != (group, version):
            continue
        kind_def = _definition_name(rt.group, rt.version, rt.kind)
        list_def = _definition_name(rt.group, rt.version, rt.kind + "List")
        wanted.update((kind_def, list_def))
        scope = "Namespaced" if rt.namespaced else ""
        tag = f"{core}{rt.version.title()}"
        ns_param = [_path_param("namespace", "object name and auth scope, such as for teams "
                                "and projects")] if rt.namespaced else []
        name_param = [_path_param("name", f"name of the {rt.kind}")]
        collection = rt.path("{namespace}") if rt.namespaced else rt.path()
        item = f"{collection}/{{name}}"
        paths[collection] = {
            "get": _operation(rt, "list", f"list{tag}{scope}{rt.kind}", ns_param + _LIST_PARAMS,
                              None, list_def),
            "post": _operation(rt, "post", f"create{tag}{scope}{rt.kind}",
                               ns_param + _WRITE_PARAMS, kind_def, kind_def),
        }
        if "deletecollection" in rt.verbs:
            paths[collection]["delete"] = _operation(
                rt, "deletecollection", f"deleteCollection{tag}{scope}{rt.kind}",
                ns_param + _LIST_PARAMS, "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
                "io.k8s.apimachinery.pkg.apis.meta.v1.Status")
        paths[item] = {
            "get": _operation(rt, "get", f"read{tag}{scope}{rt.kind}", ns_param + name_param,
                              None, kind_def),
            "put": _operation(rt, "put", f"replace{tag}{scope}{rt.kind}",
                              ns_param + name_param + _WRITE_PARAMS, kind_def, kind_def),
            "patch": _operation(rt, "patch", f"patch{tag}{scope}{rt.kind}",
                                ns_param + name_param + [*_WRITE_PARAMS, _query("force", "force",
                                                                                "boolean")],
                                "io.k8s.apimachinery.pkg.apis.meta.v1.Patch", kind_def),
            "delete": _operation(rt, "delete", f"delete{tag}{scope}{rt.kind}",
                                 ns_param + name_param + _WRITE_PARAMS[:1],
                                 "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
                                 "io.k8s.apimachinery.pkg.apis.meta.v1.Status"),
        }
        if rt.namespaced:
            paths[rt.path()] = {
                "get": _operation(rt, "list", f"list{tag}{rt.kind}ForAllNamespaces",
                                  _LIST_PARAMS, None, list_def),
            }
        if "status" in rt.subresources:
            paths[f"{item}/status"] = {
                "get": _operation(rt, "get", f"read{tag}{scope}{rt.kind}Status",
                                  ns_param + name_param, None, kind_def),
                "put": _operation(rt, "put", f"replace{tag}{scope}{rt.kind}Status",
                                  ns_param + name_param + _WRITE_PARAMS, kind_def, kind_def),
                "patch": _operation(rt, "patch", f"patch{tag}{scope}{rt.kind}Status",
                                    ns_param + name_param + _WRITE_PARAMS,
                                    "io.k8s.apimachinery.pkg.apis.meta.v1.Patch", kind_def),
            }
    defs = _definitions()
    schemas: Obj = {}
    todo = sorted(wanted)
    while todo:
        name = todo.pop()
        if name in schemas:
            continue
        source = defs[name]
        schemas[name] = _openapi_schema(source, top_kind="x-kubernetes-group-version-kind"
                                        in source)
        todo.extend(r for r in _refs(source) if r not in schemas)
    document = {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBE_VERSION},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "BearerToken": {"type": "apiKey", "description": "Bearer Token authentication",
                                "name": "authorization", "in": "header"},
            },
        },
    }
    return json.dumps(document, separators=(",", ":")).encode()


def _openapi_v3_key(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


# --------------------------------------------------------------------------------------------
# Protobuf request bodies (kubectl's typed clients send them, e.g. ``kubectl create namespace``)

# Field numbers from the Kubernetes ``generated.proto`` files: message -> number -> (JSON name,
# kind, message type). Kinds: s string, b bytes, i integer, t bool, m message, ss / sb map of
# string to string / to bytes, S repeated string, M repeated message, T Time.
_PROTO: dict[str, dict[int, tuple[str, str, str]]] = {
    "ObjectMeta": {
        1: ("name", "s", ""), 2: ("generateName", "s", ""), 3: ("namespace", "s", ""),
        4: ("selfLink", "s", ""), 5: ("uid", "s", ""), 6: ("resourceVersion", "s", ""),
        7: ("generation", "i", ""),
        8: ("creationTimestamp", "T", ""), 9: ("deletionTimestamp", "T", ""),
        10: ("deletionGracePeriodSeconds", "i", ""), 11: ("labels", "ss", ""),
        12: ("annotations", "ss", ""), 13: ("ownerReferences", "M", "OwnerReference"),
        14: ("finalizers", "S", ""),
    },
    "OwnerReference": {
        1: ("kind", "s", ""), 3: ("name", "s", ""), 4: ("uid", "s", ""),
        5: ("apiVersion", "s", ""), 6: ("controller", "t", ""),
        7: ("blockOwnerDeletion", "t", ""),
    },
    "Namespace": {1: ("metadata", "m", "ObjectMeta"), 2: ("spec", "m", "NamespaceSpec"),
                  3: ("status", "m", "NamespaceStatus")},
    "NamespaceSpec": {1: ("finalizers", "S", "")},
    "NamespaceStatus": {1: ("phase", "s", "")},
    "ConfigMap": {1: ("metadata", "m", "ObjectMeta"), 2: ("data", "ss", ""),
                  3: ("binaryData", "sb", ""), 4: ("immutable", "t", "")},
    "Secret": {1: ("metadata", "m", "ObjectMeta"), 2: ("data", "sb", ""), 3: ("type", "s", ""),
               4: ("stringData", "ss", ""), 5: ("immutable", "t", "")},
    "ServiceAccount": {1: ("metadata", "m", "ObjectMeta"),
                       2: ("secrets", "M", "ObjectReference"),
                       3: ("imagePullSecrets", "M", "LocalObjectReference"),
                       4: ("automountServiceAccountToken", "t", "")},
    "ObjectReference": {1: ("kind", "s", ""), 2: ("namespace", "s", ""), 3: ("name", "s", ""),
                        4: ("uid", "s", ""), 5: ("apiVersion", "s", ""),
                        6: ("resourceVersion", "s", ""), 7: ("fieldPath", "s", "")},
    "LocalObjectReference": {1: ("name", "s", "")},
    "ClusterRole": {1: ("metadata", "m", "ObjectMeta"), 2: ("rules", "M", "PolicyRule")},
    "Role": {1: ("metadata", "m", "ObjectMeta"), 2: ("rules", "M", "PolicyRule")},
    "PolicyRule": {1: ("verbs", "S", ""), 2: ("apiGroups", "S", ""), 3: ("resources", "S", ""),
                   4: ("resourceNames", "S", ""), 5: ("nonResourceURLs", "S", "")},
    "ClusterRoleBinding": {1: ("metadata", "m", "ObjectMeta"), 2: ("subjects", "M", "Subject"),
                           3: ("roleRef", "m", "RoleRef")},
    "RoleBinding": {1: ("metadata", "m", "ObjectMeta"), 2: ("subjects", "M", "Subject"),
                    3: ("roleRef", "m", "RoleRef")},
    "Subject": {1: ("kind", "s", ""), 2: ("apiGroup", "s", ""), 3: ("name", "s", ""),
                4: ("namespace", "s", "")},
    "RoleRef": {1: ("apiGroup", "s", ""), 2: ("kind", "s", ""), 3: ("name", "s", "")},
    "Unknown": {1: ("typeMeta", "m", "TypeMeta"), 2: ("raw", "b", ""),
                3: ("contentEncoding", "s", ""), 4: ("contentType", "s", "")},
    "TypeMeta": {1: ("apiVersion", "s", ""), 2: ("kind", "s", "")},
    "Time": {1: ("seconds", "i", ""), 2: ("nanos", "i", "")},
    "MapEntry": {1: ("key", "b", ""), 2: ("value", "b", "")},
}
PROTOBUF = "application/vnd.kubernetes.protobuf"


class _Unsupported(Exception):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _Unsupported("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _proto_fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, value
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise _Unsupported("truncated field")
            yield number, data[pos:pos + length]
            pos += length
        else:
            raise _Unsupported(f"wire type {wire}")


def _proto_decode(data: bytes, message: str) -> Obj:
    """Decode one message into its JSON form (zero values left out, as ``omitempty`` does);
    a field this table does not know is :class:`_Unsupported`, never silently dropped."""
    fields = _PROTO[message]
    out: Obj = {}
    for number, value in _proto_fields(data):
        if number not in fields:
            if value in (0, b""):  # gogo-protobuf writes zero values too
                continue
            raise _Unsupported(f"field {number} of {message}")
        name, kind, sub = fields[number]
        if kind == "s" and isinstance(value, bytes):
            if value:
                out[name] = value.decode()
        elif kind == "b" and isinstance(value, bytes):
            out[name] = value
        elif kind in ("i", "t") and isinstance(value, int):
            if kind == "t":
                out[name] = bool(value)
            elif value:
                out[name] = value - (1 << 64) if value >= 1 << 63 else value
        elif kind == "m" and isinstance(value, bytes):
            out[name] = _proto_decode(value, sub)
        elif kind == "T" and isinstance(value, bytes):
            seconds = _proto_decode(value, "Time").get("seconds", 0)
            if seconds:
                out[name] = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        elif kind in ("ss", "sb") and isinstance(value, bytes):
            entry = _proto_decode(value, "MapEntry")
            raw = entry.get("value", b"")
            out.setdefault(name, {})[entry.get("key", b"").decode()] = (
                raw.decode() if kind == "ss" else base64.b64encode(raw).decode()
            )
        elif kind == "S" and isinstance(value, bytes):
            out.setdefault(name, []).append(value.decode())
        elif kind == "M" and isinstance(value, bytes):
            out.setdefault(name, []).append(_proto_decode(value, sub))
        else:
            raise _Unsupported(f"field {number} of {message} has the wrong wire type")
    return out


def decode_protobuf_body(data: bytes) -> Obj:
    """The JSON form of a ``application/vnd.kubernetes.protobuf`` request body (the ``k8s\\0``
    envelope around a ``runtime.Unknown``), for the kinds kubectl's ``create`` subcommands
    send. Raises :class:`_Unsupported` for any other kind or an unknown field."""
    if not data.startswith(b"k8s\x00"):
        raise _Unsupported("no k8s protobuf magic")
    unknown = _proto_decode(data[4:], "Unknown")
    type_meta = unknown.get("typeMeta", {})
    kind = type_meta.get("kind", "")
    if kind not in _PROTO or "metadata" not in {f[0] for f in _PROTO[kind].values()}:
        raise _Unsupported(f"kind {kind!r}")
    obj = _proto_decode(unknown.get("raw", b""), kind)
    return {"apiVersion": type_meta.get("apiVersion", ""), "kind": kind, **obj}


# --------------------------------------------------------------------------------------------
# Patches


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"invalid JSON pointer: {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(target: Any, operations: list[Obj]) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    doc = copy.deepcopy(target)

    def parent(parts: list[str]) -> tuple[Any, str]:
        node = doc
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node, parts[-1]

    def get(parts: list[str]) -> Any:
        node = doc
        for part in parts:
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node

    def remove(parts: list[str]) -> Any:
        node, last = parent(parts)
        return node.pop(int(last)) if isinstance(node, list) else node.pop(last)

    def add(parts: list[str], value: Any) -> None:
        nonlocal doc
        if not parts:
            doc = value
            return
        node, last = parent(parts)
        if isinstance(node, list):
            node.insert(len(node) if last == "-" else int(last), value)
        else:
            node[last] = value

    try:
        for op in operations:
            kind, parts = op.get("op"), _pointer(op.get("path", ""))
            if kind == "add":
                add(parts, copy.deepcopy(op["value"]))
            elif kind == "remove":
                remove(parts)
            elif kind == "replace":
                remove(parts)
                add(parts, copy.deepcopy(op["value"]))
            elif kind in ("move", "copy"):
                source = _pointer(op["from"])
                value = remove(source) if kind == "move" else copy.deepcopy(get(source))
                add(parts, value)
            elif kind == "test":
                if get(parts) != op.get("value"):
                    raise ApiError(status_failure(422, "Invalid", "the server rejected our "
                                                  "request due to an error in our request"))
            else:
                raise bad_request(f"Unexpected kind: {kind}")
    except (KeyError, IndexError, ValueError, TypeError) as e:
        raise ApiError(status_failure(
            422, "Invalid", f"the server rejected our request due to an error in our request: {e}"
        )) from e
    return doc


def _resolve(schema: Obj | None) -> Obj | None:
    """Follow ``$ref`` (bare or in ``allOf``) within the official definitions."""
    defs = _definitions()
    while isinstance(schema, dict):
        ref = schema.get("$ref")
        if ref is None and len(schema.get("allOf", ())) == 1:
            ref = schema["allOf"][0].get("$ref")
        if ref is None:
            return schema
        merged = {k: v for k, v in schema.items() if k not in ("$ref", "allOf")}
        schema = {**defs[ref.rsplit("/", 1)[-1]], **merged}
    return schema


def strategic_merge_patch(target: Any, patch: Any, schema: Obj | None) -> Any:
    """Strategic merge patch guided by the official schema: lists whose schema says
    ``x-kubernetes-patch-strategy: merge`` merge by ``x-kubernetes-patch-merge-key`` (or as a
    set of primitives); every other list is replaced; maps merge as in a merge patch."""
    schema = _resolve(schema)
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    props = (schema or {}).get("properties", {})
    for key, value in patch.items():
        if key.startswith(("$setElementOrder/", "$deleteFromPrimitiveList/")) or key in (
            "$retainKeys", "$patch",
        ):
            if key.startswith("$deleteFromPrimitiveList/"):
                name = key.split("/", 1)[1]
                result[name] = [v for v in result.get(name) or [] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
            continue
        sub = _resolve(props.get(key)) or (
            _resolve((schema or {}).get("additionalProperties"))
            if isinstance((schema or {}).get("additionalProperties"), dict) else None
        )
        if isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, sub)
        else:
            merged = strategic_merge_patch(result.get(key), value, sub)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    return result


def _merge_list(current: Any, patch: list[Any], schema: Obj | None) -> list[Any]:
    strategy = (schema or {}).get("x-kubernetes-patch-strategy", "")
    if "merge" not in strategy.split(",") or not isinstance(current, list):
        return [item for item in copy.deepcopy(patch)
                if not (isinstance(item, dict) and item.get("$patch"))]
    key = (schema or {}).get("x-kubernetes-patch-merge-key")
    if key is None:
        merged = list(current)
        merged.extend(v for v in patch if v not in merged)
        return merged
    item_schema = (schema or {}).get("items")
    result = [copy.deepcopy(item) for item in current]
    for item in patch:
        if not isinstance(item, dict):
            continue
        index = next((i for i, old in enumerate(result)
                      if isinstance(old, dict) and old.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
        elif index is None:
            result.append(strategic_merge_patch({}, item, item_schema))
        else:
            result[index] = strategic_merge_patch(result[index], item, item_schema)
    return result


# --------------------------------------------------------------------------------------------
# The store


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request the server received. ``body`` is the parsed JSON (or YAML) when it
    parses, else the raw bytes; ``query`` keeps the last value of each parameter."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class _Event:
    rv: int
    type: str
    rt: ResourceType
    obj: Obj
    old: Obj | None


@dataclass(eq=False, slots=True)
class _Watch:
    sock: socket.socket
    bookmarks: bool
    dropped: bool = False
    bookmark_requested: bool = False


@dataclass(slots=True)
class _Rule:
    verb: str
    rt: ResourceType
    namespace: str | None
    status: Obj | None = None
    text: str = ""


@dataclass(slots=True)
class _State:
    objects: dict[tuple[str, str, str, str], Obj] = field(default_factory=dict)
    log: list[_Event] = field(default_factory=list)


class ApiServer:
    """The stand-in apiserver. Use it as a context manager; see the module docstring."""

    def __init__(
        self,
        *,
        user: str = "kubernetes-admin",
        namespace_finalize_delay: float = 0.5,
        initial_namespaces: Iterable[str] = _INITIAL_NAMESPACES,
    ) -> None:
        self.user = user
        """Whom requests without a bearer token act as (in Forbidden messages). kubectl 1.32
        sends no kubeconfig token over plain HTTP, so this (or ``kubectl --as``) is how a
        kubectl test picks its user."""
        self.namespace_finalize_delay = namespace_finalize_delay
        """How long the API must see no write before a terminating namespace is emptied and
        removed (the namespace controller's lag; a quiet period rather than a fixed delay, so
        ``kubectl delete -f`` gets through the rest of its file first)."""
        self._last_write = time.monotonic()
        self._cond = threading.Condition()
        self._state = _State()
        self._rv = 100
        self._compacted_rv = 0
        self._watches: set[_Watch] = set()
        self._requests: builtins.list[Request] = []
        self._rules: builtins.list[_Rule] = []
        self._tokens: dict[str, str] = {}
        self._ips = itertools.count(1)
        self._finalizers: builtins.list[threading.Thread] = []
        self._stopping = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for name in initial_namespaces:
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    # ---- lifecycle

    def start(self) -> ApiServer:
        handler = type("_BoundHandler", (_Handler,), {"api": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1},
            name="kube-apiserver-standin", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            finalizers, self._finalizers = self._finalizers, []
            self._cond.notify_all()
        for thread in finalizers:
            thread.join(timeout=5)
        self.drop_watches()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the server is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def kubeconfig(
        self, path: str | Path, namespace: str = "default", context: str = "standin",
        token: str | None = None, user: str | None = None,
    ) -> Path:
        """Write a kubeconfig for this server (plain HTTP) and return its path. With ``token``
        the context authenticates with it as ``user`` (default: :attr:`user`)."""
        user_entry: Obj = {}
        if token is not None:
            with self._cond:
                self._tokens[token] = user or self.user
            user_entry["token"] = token
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": user_entry}],
            "contexts": [{"name": context, "context": {
                "cluster": context, "user": context, "namespace": namespace,
            }}],
            "current-context": context,
            "preferences": {},
        }
        path = Path(path)
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        path.chmod(0o600)
        return path

    # ---- in-process API

    @property
    def requests(self) -> builtins.list[Request]:
        """Every HTTP request received so far, in order (a copy)."""
        with self._cond:
            return list(self._requests)

    def revoke_token(self, token: str) -> None:
        """Forget a bearer token: requests with it are now 401 Unauthorized."""
        with self._cond:
            self._tokens.pop(token, None)

    def clear_requests(self) -> None:
        with self._cond:
            self._requests.clear()

    @property
    def resource_version(self) -> str:
        """The current (latest) resourceVersion."""
        with self._cond:
            return str(self._rv)

    def create(self, obj: Obj) -> Obj:
        """Create ``obj`` as a client would (the server fills in metadata); returns it."""
        rt = self.resource(f"{obj.get('kind')}.{obj.get('apiVersion')}")
        namespace = _meta(obj).get("namespace") or ("default" if rt.namespaced else None)
        with self._cond:
            return copy.deepcopy(self._create(rt, namespace, copy.deepcopy(obj)))

    def update(self, obj: Obj) -> Obj:
        """Replace an object whole, status included (as a controller writing both would)."""
        rt = self.resource(f"{obj.get('kind')}.{obj.get('apiVersion')}")
        meta = _meta(obj)
        namespace = meta.get("namespace") or ("default" if rt.namespaced else None)
        with self._cond:
            return copy.deepcopy(self._update(rt, namespace, meta.get("name", ""),
                                              copy.deepcopy(obj), "*"))

    def get(self, kind_or_resource: str, name: str, namespace: str | None = None) -> Obj:
        """One object (raises :class:`ApiError` 404 when there is none)."""
        rt = self.resource(kind_or_resource)
        ns = (namespace or "default") if rt.namespaced else None
        with self._cond:
            return copy.deepcopy(self._get(rt, ns, name))

    def list(
        self, resource: str, namespace: str | None = None, *, label_selector: str = "",
        field_selector: str = "",
    ) -> builtins.list[Obj]:
        """Objects of one resource (every namespace unless ``namespace``), in key order."""
        rt = self.resource(resource)
        filt = _Filter(namespace if rt.namespaced else None,
                       tuple(parse_label_selector(label_selector)),
                       tuple(parse_field_selector(rt, field_selector)))
        with self._cond:
            return [copy.deepcopy(o) for o in self._select(rt, filt)]

    def delete(self, kind_or_resource: str, name: str, namespace: str | None = None) -> Obj:
        """Delete one object at once; a namespace goes with everything in it (DELETED events
        for each, the namespace's last)."""
        rt = self.resource(kind_or_resource)
        ns = (namespace or "default") if rt.namespaced else None
        with self._cond:
            if rt.plural == "namespaces":
                last = copy.deepcopy(self._get(rt, None, name))
                self._finalize_namespace(name)
                return last
            return copy.deepcopy(self._delete(rt, ns, name))

    def drop_watches(self) -> None:
        """Cut every open watch stream abruptly (no end chunk), as a restarting apiserver or a
        broken connection would: clients must resume from their last resourceVersion."""
        with self._cond:
            watches, self._watches = self._watches, set()
            for w in watches:
                w.dropped = True
                with contextlib.suppress(OSError):
                    w.sock.shutdown(socket.SHUT_RDWR)
            self._cond.notify_all()

    def compact(self) -> None:
        """Compact history as etcd does: every resourceVersion older than the current one is
        now too old to watch from (an ERROR event with a 410 Expired Status), and continue
        tokens issued before now expire."""
        with self._cond:
            self._compacted_rv = self._rv
            self._state.log.clear()

    def send_bookmarks(self) -> None:
        """Send a BOOKMARK (current resourceVersion) on every watch that allowed them."""
        with self._cond:
            for w in self._watches:
                w.bookmark_requested = w.bookmarks
            self._cond.notify_all()

    def forbid(self, verb: str, resource: str, namespace: str | None = None) -> None:
        """Deny ``verb`` (``get``, ``list``, ``watch``, ``create``, ..., or ``*``) on a resource
        (in one namespace, or everywhere) with RBAC's 403 Forbidden."""
        with self._cond:
            self._rules.append(_Rule(verb, self.resource(resource), namespace))

    def reject_create(self, resource: str, status: Obj, namespace: str | None = None) -> None:
        """Answer every create request for ``resource`` (POST, or a server-side apply that
        creates) with ``status`` (a ``Status`` dict, e.g. from :func:`pod_security_status`), as
        a rejecting admission plugin would. The in-process :meth:`create` is not affected."""
        with self._cond:
            self._rules.append(_Rule("reject", self.resource(resource), namespace, status))

    def warn(self, verb: str, resource: str, text: str) -> None:
        """Add ``Warning: 299 - "text"`` to the responses to ``verb`` on ``resource`` (e.g. a
        PodSecurity ``would violate`` warning on creating a DaemonSet)."""
        with self._cond:
            self._rules.append(_Rule(f"warn:{verb}", self.resource(resource), None, text=text))

    def reset_rules(self) -> None:
        """Forget every :meth:`forbid`, :meth:`reject_create` and :meth:`warn`."""
        with self._cond:
            self._rules.clear()

    @staticmethod
    def resource(name: str) -> ResourceType:
        """The resource named by a plural, singular, short name, kind, ``plural.group`` or
        ``Kind.apiVersion`` (``pods``, ``po``, ``Pod``, ``daemonsets.apps``, ``Pod.v1``)."""
        lowered = name.lower()
        for rt in RESOURCES:
            names = {rt.plural, rt.singular, rt.kind.lower(), *rt.short_names}
            if lowered in names or lowered in (
                f"{rt.plural}.{rt.group}", f"{rt.kind.lower()}.{rt.api_version}",
            ):
                return rt
        raise KeyError(f"unknown resource {name!r}")

    # ---- the store (all under self._cond)

    def _key(self, rt: ResourceType, namespace: str | None, name: str) -> tuple[str, str, str, str]:
        return (rt.group, rt.plural, namespace or "", name)

    def _get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self._state.objects.get(self._key(rt, namespace, name))
        if obj is None:
            raise not_found(rt, name)
        return obj

    def _select(self, rt: ResourceType, filt: _Filter) -> builtins.list[Obj]:
        found = [
            obj for (g, p, _, _), obj in sorted(self._state.objects.items())
            if (g, p) == (rt.group, rt.plural) and filt.matches(obj)
        ]
        return found

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _record(self, type_: str, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        self._state.log.append(_Event(int(obj["metadata"]["resourceVersion"]), type_, rt, obj,
                                      old))
        self._cond.notify_all()

    def _check_namespace(self, rt: ResourceType, namespace: str | None, name: str) -> None:
        if not rt.namespaced:
            return
        ns_rt = RESOURCES[0]
        ns = self._state.objects.get(self._key(ns_rt, None, namespace or ""))
        if ns is None:
            raise not_found(ns_rt, namespace or "")
        if ns["metadata"].get("deletionTimestamp"):
            raise ApiError(status_failure(
                403, "Forbidden",
                f'{rt.qualified} "{name}" is forbidden: unable to create new content in '
                f"namespace {namespace} because it is being terminated",
                _details(rt, name, causes=[{
                    "reason": "NamespaceTerminating",
                    "message": f"namespace {namespace} is being terminated",
                    "field": "metadata.namespace",
                }]),
            ))

    def _check_type(self, rt: ResourceType, obj: Obj, namespace: str | None) -> None:
        if obj.get("apiVersion") not in (None, "", rt.api_version):
            raise bad_request(
                f"the API version in the data ({obj['apiVersion']}) does not match the expected "
                f"API version ({rt.api_version})"
            )
        if obj.get("kind") not in (None, "", rt.kind):
            raise bad_request(
                f'{obj["kind"]} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                f"the kind in the data ({obj['kind']}) does not match the expected kind "
                f"({rt.kind})"
            )
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta = _meta(obj)
        if rt.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)

    def _create(self, rt: ResourceType, namespace: str | None, obj: Obj, *,
                dry_run: bool = False) -> Obj:
        self._check_type(rt, obj, namespace)
        meta = _meta(obj)
        if not meta.get("name") and meta.get("generateName"):
            suffix = "".join(_secrets.choice(_GENERATE_ALPHABET) for _ in range(5))
            meta["name"] = meta["generateName"] + suffix
        name = meta.get("name") or ""
        if not name:
            raise invalid(rt, "", [("metadata.name", "Required value: name or generateName is "
                                    "required")])
        causes = [("metadata.name", f'Invalid value: "{name}": {e}')
                  for e in _name_errors(rt, name)]
        if causes:
            raise invalid(rt, name, causes)
        self._check_namespace(rt, namespace, name)
        if self._key(rt, namespace, name) in self._state.objects:
            raise ApiError(status_failure(409, "AlreadyExists",
                                          f'{rt.qualified} "{name}" already exists',
                                          _details(rt, name)))
        for key in ("resourceVersion", "uid", "deletionTimestamp", "selfLink"):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        if rt.plural == "daemonsets":
            meta["generation"] = 1
        _defaults(rt, obj, self._ips)
        if dry_run:
            meta["resourceVersion"] = str(self._rv)
            return obj
        meta["resourceVersion"] = str(self._next_rv())
        self._state.objects[self._key(rt, namespace, name)] = obj
        self._record("ADDED", rt, obj, None)
        if rt.plural == "namespaces":
            self._create(self.resource("serviceaccounts"), name, {
                "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"},
            })
        return obj

    def _update(self, rt: ResourceType, namespace: str | None, name: str, obj: Obj,
                part: str, *, dry_run: bool = False) -> Obj:
        """Write ``obj`` over the stored object. ``part``: ``main`` (the status is kept when
        the resource has a status subresource), ``status`` (only the status changes) or ``*``
        (everything, for the in-process API)."""
        old = self._get(rt, namespace, name)
        self._check_type(rt, obj, namespace)
        meta = _meta(obj)
        if meta.get("name") not in (None, "", name):
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name "
                              f"on the URL ({name})")
        wanted_rv = meta.get("resourceVersion")
        if wanted_rv not in (None, "") and wanted_rv != old["metadata"]["resourceVersion"]:
            raise ApiError(status_failure(
                409, "Conflict",
                f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
                _details(rt, name),
            ))
        if part == "status":
            new = copy.deepcopy(old)
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
        else:
            new = obj
            meta = _meta(new)
            meta["name"] = name
            for key in ("uid", "creationTimestamp", "deletionTimestamp", "generation"):
                if key in old["metadata"]:
                    meta[key] = old["metadata"][key]
                else:
                    meta.pop(key, None)
            if part == "main" and "status" in rt.subresources:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
            if rt.plural == "secrets" and "stringData" in new:
                _defaults(rt, new, self._ips)
            if rt.plural == "daemonsets" and new.get("spec") != old.get("spec"):
                meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        _meta(new)["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old or dry_run:
            return new if dry_run else old
        _meta(new)["resourceVersion"] = str(self._next_rv())
        self._state.objects[self._key(rt, namespace, name)] = new
        self._record("MODIFIED", rt, new, old)
        return new

    def _delete(self, rt: ResourceType, namespace: str | None, name: str, *,
                dry_run: bool = False, preconditions: Obj | None = None) -> Obj:
        old = self._get(rt, namespace, name)
        for key in ("uid", "resourceVersion"):
            wanted = (preconditions or {}).get(key)
            if wanted and wanted != old["metadata"][key]:
                label = "UID" if key == "uid" else "ResourceVersion"
                raise ApiError(status_failure(
                    409, "Conflict",
                    f"Precondition failed: {label} in precondition: {wanted}, {label} in object "
                    f"meta: {old['metadata'][key]}",
                    _details(rt, name),
                ))
        if dry_run:
            return old
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self._next_rv())
        del self._state.objects[self._key(rt, namespace, name)]
        self._record("DELETED", rt, gone, old)
        return gone

    def _terminate_namespace(self, name: str) -> Obj:
        """HTTP DELETE of a namespace: Terminating now, emptied and removed a little later."""
        rt = RESOURCES[0]
        old = self._get(rt, None, name)
        if old["metadata"].get("deletionTimestamp"):
            return old
        new = copy.deepcopy(old)
        new["metadata"]["deletionTimestamp"] = _now()
        new["metadata"]["deletionGracePeriodSeconds"] = 0
        new.setdefault("status", {})["phase"] = "Terminating"
        new["metadata"]["resourceVersion"] = str(self._next_rv())
        self._state.objects[self._key(rt, None, name)] = new
        self._record("MODIFIED", rt, new, old)
        thread = threading.Thread(target=self._finalize_later, args=(name,), daemon=True,
                                  name=f"namespace-finalizer-{name}")
        self._finalizers.append(thread)
        thread.start()
        return new

    def _finalize_later(self, name: str) -> None:
        with self._cond:
            while not self._stopping:
                quiet = time.monotonic() - self._last_write
                if quiet >= self.namespace_finalize_delay:
                    ns = self._state.objects.get(self._key(RESOURCES[0], None, name))
                    if ns is not None and ns["metadata"].get("deletionTimestamp"):
                        self._finalize_namespace(name)
                    return
                self._cond.wait(self.namespace_finalize_delay - quiet)

    def _finalize_namespace(self, name: str) -> None:
        for key in sorted(self._state.objects):
            group, plural, namespace, obj_name = key
            if namespace == name:
                rt = next(r for r in RESOURCES if (r.group, r.plural) == (group, plural))
                self._delete(rt, namespace, obj_name)
        with contextlib.suppress(ApiError):
            self._delete(RESOURCES[0], None, name)

    # ---- HTTP

    def _handle(self, h: _Handler) -> None:
        split = urlsplit(h.path)
        path = unquote(split.path).rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        content_type = h.headers.get("Content-Type", "")
        body: Any = None
        if raw:
            try:
                if content_type.startswith(PROTOBUF):
                    body = decode_protobuf_body(raw)
                else:
                    body = yaml.safe_load(raw) if "yaml" in content_type else json.loads(raw)
            except (ValueError, yaml.YAMLError, UnicodeDecodeError, _Unsupported):
                body = raw
        with self._cond:
            self._requests.append(Request(h.command, path, query, body, dict(h.headers.items())))
            if h.command != "GET":
                self._last_write = time.monotonic()
        try:
            user = self._authenticate(h.headers.get("Authorization", ""))
            user = h.headers.get("Impersonate-User") or user
            parts = path.strip("/").split("/")
            resource_path = (parts[0] == "api" and len(parts) >= 3) or (
                parts[0] == "apis" and len(parts) >= 4
            )
            if not resource_path:
                if h.command != "GET":
                    raise ApiError(status_failure(405, "MethodNotAllowed", "the server does not "
                                                  "allow this method on the requested resource",
                                                  {}))
                self._serve_meta(h, path)
                return
            self._serve_resource(h, path, query, body, raw, content_type, user)
        except ApiError as e:
            h.send_json(e.code, e.status)
        except Exception as e:  # a bug here: answer as the apiserver does, and show it
            traceback.print_exc()
            h.send_json(500, status_failure(500, "InternalError",
                                            f"Internal error occurred: {e!r}", {}))

    def _authenticate(self, header: str) -> str:
        if not header:
            return self.user
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token not in self._tokens:
            raise ApiError(status_failure(401, "Unauthorized", "Unauthorized"))
        return self._tokens[token]

    def _serve_meta(self, h: _Handler, path: str) -> None:
        accept = h.headers.get("Accept", "")
        if path == "/version":
            major, minor, _ = KUBE_VERSION.lstrip("v").split(".")
            h.send_json(200, {
                "major": major, "minor": minor, "gitVersion": KUBE_VERSION,
                "gitCommit": "0" * 40, "gitTreeState": "clean",
                "buildDate": "2024-12-11T17:56:45Z", "goVersion": "go1.23.3", "compiler": "gc",
                "platform": "linux/amd64",
            })
        elif path in ("/healthz", "/livez", "/readyz"):
            h.send_bytes(200, b"ok", "text/plain; charset=utf-8")
        elif path in ("/api", "/apis"):
            if "as=APIGroupDiscoveryList" in accept and "v=v2;" in accept.replace(" ", "") + ";":
                h.send_json(200, _aggregated_discovery(core=path == "/api"),
                            content_type=AGGREGATED_DISCOVERY)
            elif path == "/api":
                h.send_json(200, {"kind": "APIVersions", "versions": ["v1"],
                                  "serverAddressByClientCIDRs": [{
                                      "clientCIDR": "0.0.0.0/0",
                                      "serverAddress": h.server_address_text(),
                                  }]})
            else:
                h.send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                    _api_group(g) for g, _ in _group_versions() if g
                ]})
        elif m := re.fullmatch(r"/apis/([^/]+)", path):
            if m[1] not in {g for g, _ in _group_versions()}:
                raise _resource_not_found()
            h.send_json(200, {"kind": "APIGroup", "apiVersion": "v1", **_api_group(m[1])})
        elif m := re.fullmatch(r"/api/(v1)|/apis/([^/]+)/([^/]+)", path):
            group, version = (m[2] or "", m[3]) if m[2] else ("", m[1])
            if (group, version) not in _group_versions():
                raise _resource_not_found()
            h.send_json(200, _api_resource_list(group, version))
        elif path == "/openapi/v3":
            h.send_json(200, {"paths": {
                _openapi_v3_key(g, v): {
                    "serverRelativeURL": f"/openapi/v3/{_openapi_v3_key(g, v)}?hash="
                    + hashlib.sha512(_openapi_v3_document(g, v)).hexdigest()[:128].upper()
                } for g, v in _group_versions()
            }})
        elif path.startswith("/openapi/v3/"):
            key = path.removeprefix("/openapi/v3/")
            for g, v in _group_versions():
                if key == _openapi_v3_key(g, v):
                    h.send_bytes(200, _openapi_v3_document(g, v), "application/json",
                                 {"Cache-Control": "public, immutable"})
                    return
            raise _resource_not_found()
        else:
            raise _resource_not_found()

    def _parse_path(self, path: str) -> tuple[ResourceType, str | None, str | None, str | None,
                                              bool]:
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise _resource_not_found()
        served = {rt.plural: rt for rt in RESOURCES if (rt.group, rt.version) == (group, version)}
        watch = False
        if rest[0] == "watch":
            watch, rest = True, rest[1:]
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in served and served[
            rest[2]
        ].namespaced:
            namespace, rest = rest[1], rest[2:]
        if not rest or rest[0] not in served or len(rest) > 3:
            raise _resource_not_found()
        rt = served[rest[0]]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if (name is not None and rt.namespaced and namespace is None) or (
            sub is not None and sub not in rt.subresources
        ):
            raise _resource_not_found()
        return rt, namespace, name, sub, watch

    def _check_rules(self, user: str, verb: str, rt: ResourceType, namespace: str | None,
                     name: str | None, sub: str | None) -> None:
        for rule in self._rules:
            if rule.rt is rt and rule.verb in (verb, "*") and rule.namespace in (None, namespace):
                raise ApiError(forbidden_status(user, verb, rt, namespace, name, sub))

    def _check_admission(self, rt: ResourceType, namespace: str | None) -> None:
        for rule in self._rules:
            if rule.verb == "reject" and rule.rt is rt and rule.namespace in (None, namespace):
                raise ApiError(copy.deepcopy(rule.status or {}))

    def _warnings(self, verb: str, rt: ResourceType) -> builtins.list[str]:
        return [r.text for r in self._rules if r.rt is rt and r.verb in (f"warn:{verb}", "warn:*")]

    def _serve_resource(self, h: _Handler, path: str, query: dict[str, str], body: Any,
                        raw: bytes, content_type: str, user: str) -> None:
        rt, namespace, name, sub, watch = self._parse_path(path)
        watch = watch or _true(query.get("watch"))
        method = h.command
        verb = {
            ("GET", False): "list", ("GET", True): "get", ("POST", False): "create",
            ("PUT", True): "update", ("PATCH", True): "patch", ("DELETE", True): "delete",
            ("DELETE", False): "deletecollection",
        }.get((method, name is not None))
        if (verb == "list" and watch) or (verb == "get" and watch):
            verb = "watch"
        if verb is None or (verb not in rt.verbs and verb != "watch") or (
            sub is not None and verb not in STATUS_VERBS and not (
                sub == "finalize" and verb == "update")
        ):
            raise ApiError(status_failure(405, "MethodNotAllowed",
                                          "the server does not allow this method on the "
                                          "requested resource", {}))
        accept = h.headers.get("Accept", "*/*")
        if not any(t in accept for t in ("json", "*/*", "application/*", "yaml")):
            raise ApiError(status_failure(406, "NotAcceptable", "only the following media "
                                          "types are accepted: application/json, "
                                          "application/yaml", {}))
        with self._cond:
            self._check_rules(user, verb, rt, namespace, name, sub)
            warnings = self._warnings(verb, rt)
        if verb in ("list", "watch"):
            filt = _Filter(
                namespace,
                tuple(parse_label_selector(query.get("labelSelector", ""))),
                tuple(parse_field_selector(rt, query.get("fieldSelector", ""))
                      + ([("metadata.name", "=", name)] if name else [])),
            )
            if verb == "watch":
                self._serve_watch(h, rt, filt, query)
            else:
                h.send_json(200, self._list_response(rt, filt, query))
            return
        media = content_type.split(";")[0].strip().lower()
        if verb in ("create", "update") and media == PROTOBUF:
            if not isinstance(body, dict):
                try:
                    decode_protobuf_body(raw)
                except (_Unsupported, UnicodeDecodeError) as e:
                    raise ApiError(status_failure(
                        415, "UnsupportedMediaType", "the stand-in apiserver cannot decode this "
                        f"protobuf body ({e}): send JSON", {})) from e
        elif verb in ("create", "update") and media not in ("", "application/json",
                                                             "application/yaml"):
            raise ApiError(status_failure(
                415, "UnsupportedMediaType", "the body of the request was in an unknown format "
                "- accepted media types include: application/json, application/yaml, "
                "application/vnd.kubernetes.protobuf", {}))
        dry_run = query.get("dryRun") == "All"
        validation = query.get("fieldValidation", "Warn")
        if validation not in ("Ignore", "Warn", "Strict"):
            raise bad_request(f'Invalid fieldValidation: {validation}')
        if verb in ("create", "update", "patch") and not isinstance(body, dict) and not (
            verb == "patch" and isinstance(body, list)
        ):
            raise bad_request(f"Object 'Kind' is missing in '{raw[:200].decode(errors='replace')}'"
                              if raw else "the body of the request was in an unknown format")
        with self._cond:
            if verb == "get":
                h.send_json(200, self._get(rt, namespace, name or ""))
                return
            if verb == "create":
                self._check_admission(rt, namespace)
                obj = copy.deepcopy(body)
                warnings += _validate(rt, obj, validation)
                created = self._create(rt, namespace, obj, dry_run=dry_run)
                h.send_json(201, created, warnings=warnings)
                return
            if verb == "update":
                obj = copy.deepcopy(body)
                warnings += _validate(rt, obj, validation)
                part = "status" if sub == "status" else "main"
                if sub == "finalize":
                    part = "*"
                h.send_json(200, self._update(rt, namespace, name or "", obj, part,
                                              dry_run=dry_run), warnings=warnings)
                return
            if verb == "patch":
                code, result, more = self._patch(rt, namespace, name or "", sub, body,
                                                 content_type, validation, dry_run, query)
                h.send_json(code, result, warnings=warnings + more)
                return
            options = body if isinstance(body, dict) else {}
            if verb == "delete":
                if rt.plural == "namespaces":
                    h.send_json(200, self._terminate_namespace(name or ""), warnings=warnings)
                    return
                gone = self._delete(rt, namespace, name or "", dry_run=dry_run,
                                    preconditions=options.get("preconditions"))
                h.send_json(200, gone if rt.plural == "pods" else {
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {**_details(rt, name), "uid": gone["metadata"]["uid"]},
                }, warnings=warnings)
                return
            filt = _Filter(namespace, tuple(parse_label_selector(query.get("labelSelector", ""))),
                           tuple(parse_field_selector(rt, query.get("fieldSelector", ""))))
            items = []
            for obj in self._select(rt, filt):
                meta = obj["metadata"]
                items.append(self._delete(rt, meta.get("namespace"), meta["name"],
                                          dry_run=dry_run))
            h.send_json(200, self._list_body(rt, items, str(self._rv)), warnings=warnings)

    def _patch(self, rt: ResourceType, namespace: str | None, name: str, sub: str | None,
               body: Any, content_type: str, validation: str, dry_run: bool,
               query: dict[str, str]) -> tuple[int, Obj, builtins.list[str]]:
        media = content_type.split(";")[0].strip()
        key = self._key(rt, namespace, name)
        current = self._state.objects.get(key)
        if media == "application/apply-patch+yaml":
            if not isinstance(body, dict):
                raise bad_request("the body of an apply patch must be an object")
            if "fieldManager" not in query:
                raise bad_request("PATCH requests of type application/apply-patch+yaml must "
                                  "specify a fieldManager")
            if current is None:
                self._check_admission(rt, namespace)
                obj = copy.deepcopy(body)
                _meta(obj).setdefault("name", name)
                warnings = _validate(rt, obj, validation)
                return 201, self._create(rt, namespace, obj, dry_run=dry_run), warnings
            patched = merge_patch(current, body)
        elif current is None:
            raise not_found(rt, name)
        elif media == "application/json-patch+json":
            if not isinstance(body, list):
                raise bad_request("json: cannot unmarshal object into Go value of type "
                                  "jsonpatch.Patch")
            patched = json_patch(current, body)
        elif media == "application/merge-patch+json":
            patched = merge_patch(current, body)
        elif media == "application/strategic-merge-patch+json":
            schema = _definitions()[_definition_name(rt.group, rt.version, rt.kind)]
            patched = strategic_merge_patch(current, body, schema)
        else:
            raise ApiError(status_failure(415, "UnsupportedMediaType",
                                          'the body of the request was in an unknown format - '
                                          'accepted media types include: '
                                          'application/json-patch+json, '
                                          'application/merge-patch+json, '
                                          'application/apply-patch+yaml', {}))
        if not isinstance(patched, dict):
            raise bad_request("the patched object is not an object")
        patched = copy.deepcopy(patched)
        if _meta(patched).get("resourceVersion") == current["metadata"]["resourceVersion"]:
            _meta(patched).pop("resourceVersion", None)
        warnings = _validate(rt, patched, validation)
        part = "status" if sub == "status" else "main"
        return 200, self._update(rt, namespace, name, patched, part, dry_run=dry_run), warnings

    def _list_body(self, rt: ResourceType, items: builtins.list[Obj], rv: str,
                   extra_meta: Obj | None = None) -> Obj:
        bare = []
        for obj in items:
            item = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
            bare.append(item)
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": rv, **(extra_meta or {})},
            "items": bare,
        }

    def _list_response(self, rt: ResourceType, filt: _Filter, query: dict[str, str]) -> Obj:
        with self._cond:
            items = self._select(rt, filt)
            rv = self._rv
            token = query.get("continue", "")
            if token:
                try:
                    state = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
                    start, rv = tuple(state["start"]), int(state["rv"])
                except (ValueError, KeyError, TypeError) as e:
                    raise bad_request(f"continue key is not valid: {e}") from e
                if rv < self._compacted_rv:
                    raise ApiError(status_failure(410, "Expired", _CONTINUE_EXPIRED, {}))
                items = [o for o in items if _sort_key(o) > start]
            extra: Obj = {}
            limit = int(query.get("limit") or 0)
            if 0 < limit < len(items):
                rest = len(items) - limit
                items = items[:limit]
                state = {"rv": rv, "start": list(_sort_key(items[-1]))}
                extra["continue"] = base64.urlsafe_b64encode(
                    json.dumps(state).encode()).decode().rstrip("=")
                extra["remainingItemCount"] = rest
            return copy.deepcopy(self._list_body(rt, items, str(rv), extra))

    def _serve_watch(self, h: _Handler, rt: ResourceType, filt: _Filter,
                     query: dict[str, str]) -> None:
        rv_param = query.get("resourceVersion", "")
        send_initial = _true(query.get("sendInitialEvents"))
        bookmarks = _true(query.get("allowWatchBookmarks"))
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        if send_initial and (not bookmarks or query.get("resourceVersionMatch") != "NotOlderThan"):
            raise invalid(rt, "", [("sendInitialEvents", "Forbidden: sendInitialEvents requires "
                                    "setting allowWatchBookmarks=true and "
                                    "resourceVersionMatch=NotOlderThan")])
        try:
            start = int(rv_param) if rv_param not in ("", "0") else None
        except ValueError as e:
            raise invalid(rt, "", [("resourceVersion",
                                    f'Invalid value: "{rv_param}": must be an integer')]) from e
        watch = _Watch(h.connection, bookmarks)
        with self._cond:
            if self._stopping:
                raise ApiError(status_failure(503, "ServiceUnavailable", "shutting down", {}))
            expired = start is not None and start < self._compacted_rv
            initial: builtins.list[Obj] = []
            if send_initial or start is None:
                initial = list(self._select(rt, filt))
                last = self._rv if start is None or send_initial else start
                if send_initial and start is not None:
                    last = max(start, self._rv)
            else:
                last = start
            self._watches.add(watch)
            compacted = self._compacted_rv
        deadline = time.monotonic() + timeout if timeout is not None else None
        try:
            h.start_stream()
            if expired:
                h.send_event({"type": "ERROR", "object": status_failure(
                    410, "Expired", f"too old resource version: {start} ({compacted})")})
                h.end_stream()
                return
            for obj in initial:
                h.send_event({"type": "ADDED", "object": obj})
            if send_initial:
                h.send_event(self._bookmark(rt, str(last), initial_end=True))
            while True:
                with self._cond:
                    while True:
                        events = self._events_after(last)
                        if events or watch.dropped or watch.bookmark_requested or self._stopping:
                            break
                        wait = 0.25
                        if deadline is not None:
                            wait = min(wait, deadline - time.monotonic())
                            if wait <= 0:
                                break
                        self._cond.wait(wait)
                        if _peer_closed(watch.sock):
                            return
                    bookmark = watch.bookmark_requested
                    watch.bookmark_requested = False
                    current = self._rv
                if watch.dropped:
                    h.close_connection = True
                    return
                for event in events:
                    last = event.rv
                    if event.rt is not rt:
                        continue
                    out = _filtered_event(event, filt)
                    if out is not None:
                        h.send_event(out)
                if bookmark:
                    h.send_event(self._bookmark(rt, str(max(last, current))))
                    last = max(last, current)
                if self._stopping or (deadline is not None and time.monotonic() >= deadline):
                    if not self._stopping:
                        h.end_stream()
                    h.close_connection = True
                    return
        except OSError:
            h.close_connection = True
        finally:
            with self._cond:
                self._watches.discard(watch)

    def _events_after(self, rv: int) -> builtins.list[_Event]:
        log = self._state.log
        lo, hi = 0, len(log)
        while lo < hi:
            mid = (lo + hi) // 2
            if log[mid].rv <= rv:
                lo = mid + 1
            else:
                hi = mid
        return log[lo:]

    @staticmethod
    def _bookmark(rt: ResourceType, rv: str, initial_end: bool = False) -> Obj:
        meta: Obj = {"resourceVersion": rv, "creationTimestamp": None}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version,
                                               "metadata": meta}}


_CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted between "
    "the time the first chunk was returned and now may show up in the list."
)


def _true(value: str | None) -> bool:
    """A boolean query parameter as Go's ``strconv.ParseBool`` reads it."""
    return value in ("1", "t", "T", "true", "TRUE", "True")


def _sort_key(obj: Obj) -> tuple[str, str]:
    meta = obj["metadata"]
    return (meta.get("namespace") or "", meta["name"])


def _filtered_event(event: _Event, filt: _Filter) -> Obj | None:
    """The event a watch with this filter sees: an object that starts matching arrives as
    ADDED and one that stops matching as DELETED, as the watch cache does it."""
    now = filt.matches(event.obj)
    if event.type == "MODIFIED":
        before = event.old is not None and filt.matches(event.old)
        if now and before:
            return {"type": "MODIFIED", "object": event.obj}
        if now:
            return {"type": "ADDED", "object": event.obj}
        if before:
            return {"type": "DELETED", "object": event.obj}
        return None
    return {"type": event.type, "object": event.obj} if now else None


def _peer_closed(sock: socket.socket) -> bool:
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def _defaults(rt: ResourceType, obj: Obj, ips: Iterator[int]) -> None:
    """The few defaults the real server fills in that clients commonly read back."""
    meta = _meta(obj)
    if rt.plural == "namespaces":
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj["status"] = {"phase": "Active"}
    elif rt.plural == "pods":
        _pod_spec_defaults(obj.setdefault("spec", {}))
        obj.setdefault("status", {}).setdefault("phase", "Pending")
        obj["status"].setdefault("qosClass", "BestEffort")
    elif rt.plural == "daemonsets":
        spec = obj.setdefault("spec", {})
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {
            "maxUnavailable": 1, "maxSurge": 0}})
        _pod_spec_defaults(spec.setdefault("template", {}).setdefault("spec", {}))
        obj.setdefault("status", {
            "currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0,
            "numberReady": 0,
        })
    elif rt.plural == "services":
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec["type"] != "ExternalName":
            if "clusterIP" not in spec:
                n = next(ips)
                spec["clusterIP"] = f"10.96.{(n >> 8) & 255}.{n & 255}"
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
        obj.setdefault("status", {"loadBalancer": {}})
    elif rt.plural == "secrets":
        obj.setdefault("type", "Opaque")
        string_data = obj.pop("stringData", None) or {}
        if string_data:
            data = obj.setdefault("data", {})
            for key, value in string_data.items():
                data[key] = base64.b64encode(str(value).encode()).decode()


def _pod_spec_defaults(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("securityContext", {})
    for container in itertools.chain(spec.get("containers") or [],
                                     spec.get("initContainers") or []):
        image = str(container.get("image", ""))
        tag = image.rsplit("/", 1)[-1]
        latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
        container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})


def _api_group(group: str) -> Obj:
    versions = [{"groupVersion": f"{g}/{v}", "version": v} for g, v in _group_versions()
                if g == group]
    return {"name": group, "versions": versions, "preferredVersion": versions[0]}


def _api_resource_list(group: str, version: str) -> Obj:
    resources: list[Obj] = []
    for rt in RESOURCES:
        if (rt.group, rt.version) != (group, version):
            continue
        entry: Obj = {"name": rt.plural, "singularName": rt.singular,
                      "namespaced": rt.namespaced, "kind": rt.kind, "verbs": list(rt.verbs)}
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        resources.append(entry)
        for sub in rt.subresources:
            resources.append({"name": f"{rt.plural}/{sub}", "singularName": "",
                              "namespaced": rt.namespaced, "kind": rt.kind,
                              "verbs": ["update"] if sub == "finalize" else list(STATUS_VERBS)})
    out: Obj = {"kind": "APIResourceList", "groupVersion": f"{group}/{version}" if group
                else version, "resources": resources}
    if group:
        out["apiVersion"] = "v1"
    return out


def _aggregated_discovery(core: bool) -> Obj:
    items = []
    for group in dict.fromkeys(g for g, _ in _group_versions()):
        if (group == "") != core:
            continue
        versions = []
        for g, v in _group_versions():
            if g != group:
                continue
            resources = []
            for rt in RESOURCES:
                if (rt.group, rt.version) != (g, v):
                    continue
                kind = {"group": rt.group, "version": rt.version, "kind": rt.kind}
                entry: Obj = {
                    "resource": rt.plural, "responseKind": kind,
                    "scope": "Namespaced" if rt.namespaced else "Cluster",
                    "singularResource": rt.singular, "verbs": list(rt.verbs),
                }
                if rt.short_names:
                    entry["shortNames"] = list(rt.short_names)
                if rt.categories:
                    entry["categories"] = list(rt.categories)
                if rt.subresources:
                    entry["subresources"] = [{
                        "subresource": sub, "responseKind": kind,
                        "verbs": ["update"] if sub == "finalize" else list(STATUS_VERBS),
                    } for sub in rt.subresources]
                resources.append(entry)
            versions.append({"version": v, "resources": resources, "freshness": "Current"})
        meta: Obj = {"creationTimestamp": None}
        if group:
            meta["name"] = group
        items.append({"metadata": meta, "versions": versions})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {}, "items": items}


# --------------------------------------------------------------------------------------------
# The HTTP handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-apiserver-standin"
    api: ClassVar[ApiServer]

    def do_GET(self) -> None:
        self.api._handle(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def server_address_text(self) -> str:
        host, port = self.api._server.server_address[:2] if self.api._server else ("", 0)
        return f"{host!s}:{port}"

    def send_bytes(self, code: int, data: bytes, content_type: str,
                   headers: dict[str, str] | None = None, warnings: Iterable[str] = ()) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Audit-Id", str(uuid.uuid4()))
        for warning in warnings:
            escaped = warning.replace("\\", "\\\\").replace('"', '\\"')
            self.send_header("Warning", f'299 - "{escaped}"')
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def send_json(self, code: int, obj: Any, *, content_type: str = "application/json",
                  warnings: Iterable[str] = ()) -> None:
        data = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        self.send_bytes(code, data, content_type, warnings=warnings)

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.flush()

    def send_event(self, event: Obj) -> None:
        data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


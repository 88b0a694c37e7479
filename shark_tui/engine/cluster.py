"""Which pods a cluster-aware daemon (``--kube``) captures, and where.

The pods come from the watches (`kube.KubeWatcher` keeps the `PodMap` current): every pod that
holds an address, on this node (``--node``, from the downward API's ``NODE_NAME``; without one,
any pod whose address is found in a namespace of this host), matching the targets — a regex on
pod names and a set of namespaces, both changed live (`wire.SetTargets`). Each targeted pod is
captured inside its own network namespace, found by its address among the namespaces of this
host's processes (`podnet.scan`): its ``eth0``, and also its ``lo`` when a sidecar proxy
(Envoy, linkerd2-proxy) runs there, since the app ↔ sidecar hop is plaintext on ``lo``.

Interfaces of the host named with ``--iface`` get a kernel BPF filter built from the targeted
pods' addresses (`host_filter`); past `MAX_BPF_HOSTS` addresses the filter would cost more per
packet than it saves and is left out (the host interfaces then record every TCP packet); with
no pod targeted they record nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from shark_tui.engine.podmap import PodMap
from shark_tui.engine.podnet import NetNs, find

__all__ = ["MAX_BPF_HOSTS", "NOTHING", "PodSource", "Targets", "host_filter", "plan", "targeted"]

MAX_BPF_HOSTS = 64
#: A BPF expression no packet matches (no pod targeted: the host interfaces record nothing).
NOTHING = "less 1"


@dataclass(frozen=True, slots=True)
class Targets:
    """``pods``: a regex searched in pod names ("" every pod); ``namespaces``: empty, all."""

    pods: str = ""
    namespaces: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            re.compile(self.pods)
        except re.error as exc:
            raise ValueError(f"bad pod regex {self.pods!r}: {exc}") from None

    def matches(self, ns: str, name: str) -> bool:
        if self.namespaces and ns not in self.namespaces:
            return False
        return not self.pods or re.search(self.pods, name) is not None

    def describe(self) -> dict[str, object]:
        return {"pods": self.pods, "namespaces": list(self.namespaces)}


@dataclass(frozen=True, slots=True)
class PodSource:
    """A targeted pod found on this host: where to capture it."""

    ns: str
    name: str
    ips: tuple[str, ...]
    path: str  # /proc/PID/ns/net of one of its processes
    inode: int  # the namespace's identity (the path's pid may go; the inode stays)
    sidecar: str | None  # "envoy", "linkerd" or None: capture its lo too

    @property
    def label(self) -> str:
        return f"{self.ns}/{self.name}"


def targeted(
    names: PodMap, node: str | None, targets: Targets
) -> list[tuple[str, str, tuple[str, ...]]]:
    """``(namespace, name, addresses)`` of the pods to capture: on ``node`` (any node when
    None), matching ``targets``."""
    return sorted(
        (ns, name, ips)
        for ns, name, pod_node, ips in names.live_pods()
        if (node is None or pod_node == node) and targets.matches(ns, name)
    )


def plan(
    pods: Iterable[tuple[str, str, tuple[str, ...]]], namespaces: list[NetNs]
) -> dict[str, PodSource]:
    """The pods among ``pods`` whose network namespace is on this host, by label."""
    out: dict[str, PodSource] = {}
    for ns, name, ips in pods:
        for ip in ips:
            found = find(ip, namespaces)
            if found is not None and not found.host:
                src = PodSource(ns, name, ips, found.path, found.inode, found.sidecar)
                out[src.label] = src
                break
    return out


def host_filter(ips: Iterable[str]) -> str:
    """``host A or host B …`` for the targeted pods' addresses; `NOTHING` when there are none;
    "" (no narrowing) past `MAX_BPF_HOSTS`."""
    unique = sorted(set(ips))
    if not unique:
        return NOTHING
    if len(unique) > MAX_BPF_HOSTS:
        return ""
    return " or ".join(f"host {ip}" for ip in unique)

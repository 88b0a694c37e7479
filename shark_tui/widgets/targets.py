"""Live retargeting (`:target REGEX [-n NS]...`): which pods the ``--kube`` daemons capture.

No Textual here. Every connected daemon whose status has a ``kube`` part (it runs with
``--kube``) is sent `wire.SetTargets`; when none is known to, every connected one is asked, so
that a daemon without ``--kube`` says why not (it refuses: "no pods to target: this daemon runs
without --kube"), as `P` does with a daemon that does not capture. Each answer is one line for
a notice."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from shark_tui.engine.client import ClientError

__all__ = ["Outcome", "describe", "retarget"]


class Targetable(Protocol):
    node: str
    up: bool

    async def set_targets(self, pods: str, namespaces: list[str]) -> dict[str, Any]: ...


#: (the notice's text, True when the daemon took the targets)
Outcome = tuple[str, bool]


def describe(pods: str, namespaces: Sequence[str]) -> str:
    """``pods ~ REGEX in NS, NS`` as a notice says it."""
    who = f"pods ~ {pods}" if pods else "every pod"
    return f"{who} in {', '.join(namespaces)}" if namespaces else f"{who} in every namespace"


async def _one(link: Targetable, pods: str, namespaces: list[str]) -> Outcome:
    try:
        st = await link.set_targets(pods, namespaces)
    except ClientError as exc:
        return f"{link.node}: {exc}", False
    now = st.get("kube", {}).get("targets", {"pods": pods, "namespaces": namespaces})
    return f"{link.node}: capturing {describe(now['pods'], now['namespaces'])}", True


async def retarget(
    links: Sequence[Targetable],
    stats: Mapping[str, Mapping[str, Any]],
    pods: str,
    namespaces: list[str],
) -> list[Outcome]:
    """Send the targets (see the module docstring); one outcome per daemon asked, in the
    links' order (none connected: one saying so)."""
    up = [link for link in links if link.up]
    if not up:
        return [("not connected: no daemon to target", False)]
    kube = [link for link in up if "kube" in stats.get(link.node, {})]
    return list(await asyncio.gather(*(_one(link, pods, namespaces) for link in kube or up)))

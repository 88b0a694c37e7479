"""`:target REGEX [-n NS]...`: live retargeting of the ``--kube`` daemons from the TUI, with
Pilot over real daemon sockets (in-process `Server`s): what was sent to which daemon, what each
answered (a daemon without ``--kube`` refuses, and the refusal is a notice), and the mistakes
the bar catches before anything is sent."""

from __future__ import annotations

import asyncio

import pytest

from shark_tui.app import SharkApp
from shark_tui.engine import wire
from shark_tui.widgets.command_bar import CommandError, parse, target_args
from shark_tui.widgets.help import HelpScreen
from tests.widgets.appfixture import fixture_daemon, notes, wait_for
from tests.widgets.storedaemon import StoreDaemon


def _targets(link) -> list[wire.Message]:  # type: ignore[no-untyped-def]
    return [m for m in link.sent if isinstance(m, wire.SetTargets)]


def test_target_args() -> None:
    assert target_args("^api-") == ("^api-", [])
    assert target_args("^api- -n shop -n db") == ("^api-", ["shop", "db"])
    assert target_args("-n shop web") == ("web", ["shop"])
    assert target_args("--namespace db") == ("", ["db"])
    assert parse(":target  .* ") == ("target", ".*")
    for bad, why in [
        ("target", "needs REGEX"),
        ("target a b", "one pod regex"),
        ("target api -n", "-n needs a namespace"),
        ("target (", "bad pod regex"),
    ]:
        with pytest.raises(CommandError, match=why):
            parse(bad)


def test_target_is_sent_to_the_kube_daemons_only_and_answered() -> None:
    """Two daemons, one with --kube: only that one is sent SetTargets; it answers with its
    status, which says the targets in force, and the notice says so."""

    async def main() -> None:
        with (
            StoreDaemon(2, node="node-k", kube=True) as k,
            StoreDaemon(1, node="file", first=4) as f,
        ):
            app = SharkApp([(k.address, k.token), (f.address, f.token)])
            async with app.run_test(size=(180, 30)) as pilot:
                await wait_for(lambda: len(app.header.stats) == 2 and len(app.store) == 12)
                lk, lf = app.links
                await pilot.press("colon", *"target ^api- -n shop -n db", "enter")
                await wait_for(lambda: any("node-k: capturing" in n for n in notes(app)))
                assert _targets(lk) == [wire.SetTargets(pods="^api-", namespaces=["shop", "db"])]
                assert [(t.pods, t.namespaces) for t in k.targets] == [("^api-", ("shop", "db"))]
                assert "node-k: capturing pods ~ ^api- in shop, db" in notes(app)
                assert not _targets(lf)  # not a --kube daemon: not asked
                assert not app.command_bar.display
                # the status it answered with is the header's now
                assert app.header.stats["node-k"]["kube"]["targets"] == {
                    "pods": "^api-", "namespaces": ["shop", "db"]}  # fmt: skip
                await pilot.press("colon", *"target -n db", "enter")
                await wait_for(lambda: len(k.targets) == 2)
                assert _targets(lk)[-1] == wire.SetTargets(pods="", namespaces=["db"])
                await wait_for(lambda: "node-k: capturing every pod in db" in notes(app))
                assert len(app.store) == 12  # the list is not touched

    asyncio.run(main())


def test_target_on_a_daemon_without_kube_shows_its_refusal() -> None:
    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 16 and "fixture" in app.header.stats)
                link = app.links[0]
                await pilot.press("colon", *"target ^api-", "enter")
                await wait_for(lambda: bool(_targets(link)) and bool(notes(app)))
                assert _targets(link) == [wire.SetTargets(pods="^api-", namespaces=[])]
                await wait_for(lambda: len(notes(app)) == 1)
                (note,) = notes(app)
                assert note == "fixture: no pods to target: this daemon runs without --kube"
                assert "\n" not in note
                assert app._notifications and all(
                    n.severity == "warning" for n in app._notifications)  # fmt: skip

    asyncio.run(main())


def test_target_mistakes_stay_in_the_bar_and_nothing_is_sent() -> None:
    async def main() -> None:
        with StoreDaemon(1, kube=True) as k:
            app = SharkApp([(k.address, k.token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 4 and "fixture" in app.header.stats)
                n = len(app.links[0].sent)
                await pilot.press("colon", *"target (", "enter")
                assert app.command_bar.display
                assert "bad pod regex" in str(app.query_one("#command-error").render())
                await pilot.press("ctrl+u", *"target api -n", "enter")
                assert "-n needs a namespace" in str(app.query_one("#command-error").render())
                await pilot.pause(0.2)
                assert len(app.links[0].sent) == n and not k.targets
                # the help lists it
                await pilot.press("escape", "question_mark")
                assert isinstance(app.screen, HelpScreen)
                tables = [w.content for w in app.screen.query(".help-keys")]
                cells = [c for t in tables for col in t.columns[:1] for c in col.cells]
                assert ":target REGEX [-n NS]..." in cells

    asyncio.run(main())

"""`p`: the pods and addresses seen in the rows, fuzzy searched; choosing one narrows the
filter the daemon runs."""

from __future__ import annotations

import asyncio

from shark_tui.app import SharkApp
from shark_tui.engine import wire
from shark_tui.widgets.pod_picker import PodPicker, candidates
from tests.widgets.appfixture import fixture_daemon, wait_for


def _filters(link) -> list[str]:  # type: ignore[no-untyped-def]
    return [m.filter for m in link.sent if isinstance(m, wire.Subscribe)]


def test_candidates_from_endpoints() -> None:
    seen = {"default/api-7d9", "shop/api-7d9", "default/web", "10.0.0.2:4000", "10.0.0.10:80",
            "10.0.0.2:4001", "[fd00::1]:443", "?", "lonely-pod"}  # fmt: skip
    got = [(c.kind, c.name, c.ns, c.term) for c in candidates(seen)]
    assert got == [
        ("pod", "api-7d9", "default", 'pod == "api-7d9"'),
        ("pod", "api-7d9", "shop", 'pod == "api-7d9"'),
        ("pod", "lonely-pod", "", 'pod == "lonely-pod"'),
        ("pod", "web", "default", 'pod == "web"'),
        ("ip", "10.0.0.2", "", 'ip == "10.0.0.2"'),
        ("ip", "10.0.0.10", "", 'ip == "10.0.0.10"'),
        ("ip", "fd00::1", "", 'ip == "fd00::1"'),
    ]


def test_pick_an_address_then_a_pod() -> None:
    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                link = app.links[0]
                await wait_for(lambda: len(app.store) == 16)
                await pilot.press("p")
                assert isinstance(app.screen, PodPicker)
                names = [c.name for c in app.screen.shown]
                assert names == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.1.0.1"]

                # fuzzy: letters in order; enter takes the best
                await pilot.press(*"0.0.3")
                assert [c.name for c in app.screen.shown] == ["10.0.0.3"]
                await pilot.press("enter")
                await wait_for(lambda: len(_filters(link)) == 2)
                assert _filters(link)[-1] == 'ip == "10.0.0.3"'
                await wait_for(lambda: len(app.store) == 4)
                assert {r.src for r in app.store.rows} == {"10.0.0.3:40002"}

                # the addresses seen before the filter are still offered; arrows move
                await pilot.press("escape")
                await wait_for(lambda: len(app.store) == 16)
                app.store.seen.add("default/api-7d9")  # as if the daemon knew a pod
                await pilot.press("p")
                assert app.screen.shown[0].name == "api-7d9"
                await pilot.press(*"10", "down", "enter")
                await wait_for(lambda: len(_filters(link)) == 4)
                assert _filters(link)[-1] == 'ip == "10.0.0.2"'

                # a pod, on top of the filter in force
                await pilot.press("p", *"api", "enter")
                await wait_for(lambda: len(_filters(link)) == 5)
                assert _filters(link)[-1] == '(ip == "10.0.0.2") and pod == "api-7d9"'

                # esc closes without choosing
                await pilot.press("p", "escape")
                await pilot.pause()
                assert not isinstance(app.screen, PodPicker)
                assert len(_filters(link)) == 5

    asyncio.run(main())

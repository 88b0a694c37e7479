"""`p`: the pods and addresses seen in the rows, fuzzy searched; choosing one narrows the
filter the daemon runs — to that pod in its namespace, not every pod of that name."""

from __future__ import annotations

import asyncio

from shark_tui.app import SharkApp
from shark_tui.engine import wire
from shark_tui.engine.filter import compile_filter
from shark_tui.engine.podmap import PodMap
from shark_tui.widgets.pod_picker import PodPicker, candidates
from tests.engine import fixtures_pcap as fx
from tests.engine.test_pod_names import pod
from tests.widgets.appfixture import fixture_daemon, serve_capture, wait_for


def _filters(link) -> list[str]:  # type: ignore[no-untyped-def]
    return [m.filter for m in link.sent if isinstance(m, wire.Subscribe)]


def test_candidates_from_endpoints() -> None:
    seen = {"default/api-7d9", "shop/api-7d9", "default/web", "10.0.0.2:4000", "10.0.0.10:80",
            "10.0.0.2:4001", "[fd00::1]:443", "?", "lonely-pod"}  # fmt: skip
    got = [(c.kind, c.name, c.ns, c.term) for c in candidates(seen)]
    assert got == [
        ("pod", "api-7d9", "default", '((src.pod == "api-7d9" and src.ns == "default") or '
                                      '(dst.pod == "api-7d9" and dst.ns == "default"))'),
        ("pod", "api-7d9", "shop", '((src.pod == "api-7d9" and src.ns == "shop") or '
                                   '(dst.pod == "api-7d9" and dst.ns == "shop"))'),
        ("pod", "lonely-pod", "", 'pod == "lonely-pod"'),  # no namespace known: the name alone
        ("pod", "web", "default", '((src.pod == "web" and src.ns == "default") or '
                                  '(dst.pod == "web" and dst.ns == "default"))'),
        ("ip", "10.0.0.2", "", 'ip == "10.0.0.2"'),
        ("ip", "10.0.0.10", "", 'ip == "10.0.0.10"'),
        ("ip", "fd00::1", "", 'ip == "fd00::1"'),
    ]  # fmt: skip


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
                assert _filters(link)[-1] == (
                    '(ip == "10.0.0.2") and ((src.pod == "api-7d9" and src.ns == "default") '
                    'or (dst.pod == "api-7d9" and dst.ns == "default"))')  # fmt: skip

                # esc closes without choosing
                await pilot.press("p", "escape")
                await pilot.pause()
                assert not isinstance(app.screen, PodPicker)
                assert len(_filters(link)) == 5

    asyncio.run(main())


# -- a pod name in two namespaces ---------------------------------------------------------------

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
WEB, API_SHOP, API_DEFAULT = "10.244.1.5", "10.244.2.7", "10.244.3.9"


def call(t: int, sport: int, server: str, path: str) -> list[tuple[int, bytes]]:
    """One HTTP/1.1 GET from WEB:``sport`` to ``server``:8080, handshake to FIN."""
    req = f"GET {path} HTTP/1.1\r\nHost: api\r\n\r\n".encode()
    res = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    c, s = 1000, 5000
    out = []
    for dt, up, seq, ack, fl, data in [
        (0, True, c, 0, fx.SYN, b""),
        (1, False, s, c + 1, fx.SYN | fx.ACK, b""),
        (2, True, c + 1, s + 1, fx.ACK, b""),
        (3, True, c + 1, s + 1, fx.PSH | fx.ACK, req),
        (5, False, s + 1, c + 1 + len(req), fx.PSH | fx.ACK, res),
        (6, True, c + 1 + len(req), s + 1 + len(res), fx.FIN | fx.ACK, b""),
        (7, False, s + 1 + len(res), c + 2 + len(req), fx.FIN | fx.ACK, b""),
        (8, True, c + 2 + len(req), s + 2 + len(res), fx.ACK, b""),
    ]:
        a, b = ((WEB, sport), (server, 8080)) if up else ((server, 8080), (WEB, sport))
        out.append((t + dt * 1_000_000, fx.eth_ipv4_tcp(a[0], b[0], a[1], b[1], seq, ack, fl,
                                                        data)))  # fmt: skip
    return out


def two_api_0s(pm: PodMap) -> None:
    """web-0 in shop; a pod called api-0 in shop and another in default."""
    for name, ip, ns in (("web-0", WEB, "shop"), ("api-0", API_SHOP, "shop"),
                         ("api-0", API_DEFAULT, "default")):  # fmt: skip
        pm.observe("Pod", pod(name, ip, ns=ns, uid=f"uid-{ns}-{name}"), T0 - 60 * NS)


def test_a_pod_picked_is_pinned_to_its_namespace() -> None:
    """Choosing shop/api-0 shows the calls of shop/api-0, not those of default/api-0."""
    data = fx.pcap_bytes(fx.LINKTYPE_ETHERNET, call(T0, 40000, API_SHOP, "/shop")
                         + call(T0 + NS, 40001, API_DEFAULT, "/default"))  # fmt: skip

    async def main() -> None:
        with serve_capture(data, names=two_api_0s) as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                link = app.links[0]
                await wait_for(lambda: len(app.store) == 2)
                assert {r.dst for r in app.store.rows} == {"shop/api-0", "default/api-0"}
                await pilot.press("p", *"api")
                assert isinstance(app.screen, PodPicker)
                assert [(c.name, c.ns) for c in app.screen.shown] == [
                    ("api-0", "default"), ("api-0", "shop")]  # fmt: skip
                await pilot.press("down", "enter")
                await wait_for(lambda: len(_filters(link)) == 2)
                assert _filters(link)[-1] == (
                    '((src.pod == "api-0" and src.ns == "shop") or '
                    '(dst.pod == "api-0" and dst.ns == "shop"))')  # fmt: skip
                await wait_for(lambda: len(app.store) == 1)
                await asyncio.sleep(0.3)  # nothing more comes
                assert [(r.dst, r.summary) for r in app.store.rows] == [("shop/api-0", "/shop")]

    asyncio.run(main())


def test_the_pinned_term_holds_at_either_end_with_its_own_namespace() -> None:
    """The namespace is tested at the same end as the name: web-0 of shop calling default's
    api-0 is not a call of shop's api-0."""
    (c,) = candidates({"shop/api-0"})
    flt = compile_filter(c.term)

    def end(name: str | None, ns: str | None) -> dict[str, object]:
        return {"ip": "10.0.0.1", "port": 1, "pod": name, "ns": ns}

    def entry(src: dict[str, object], dst: dict[str, object]) -> dict[str, object]:
        return {"proto": "http", "src": src, "dst": dst}

    assert flt(entry(end("web-0", "shop"), end("api-0", "shop")))
    assert flt(entry(end("api-0", "shop"), end("db-0", "db")))
    assert not flt(entry(end("web-0", "shop"), end("api-0", "default")))
    assert not flt(entry(end("api-0", "default"), end("x", "shop")))
    assert not flt(entry(end(None, None), end("api-0", None)))

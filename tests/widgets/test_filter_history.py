"""The filter history outlives the app: $XDG_STATE_HOME/shark-tui/filter_history, bounded,
each filter once, newest last; a bad file is said in one line and ignored."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from shark_tui.app import SharkApp
from shark_tui.engine import wire
from shark_tui.widgets.history import (
    MAX_BYTES,
    MAX_ENTRIES,
    history_path,
    load_history,
    remember,
    save_history,
)
from tests.widgets.appfixture import fixture_daemon, notes, wait_for


def _filters(app: SharkApp) -> list[str]:
    return [m.filter for m in app.links[0].sent if isinstance(m, wire.Subscribe)]


def test_history_path() -> None:
    assert history_path({"XDG_STATE_HOME": "/s"}) == "/s/shark-tui/filter_history"
    assert history_path({"XDG_STATE_HOME": ""}).endswith("/.local/state/shark-tui/filter_history")


def test_remember_dedups_bounds_and_keeps_newest_last() -> None:
    h = remember(remember(remember([], "a"), "b"), "a")
    assert h == ["b", "a"]
    assert remember(h, "  ") == h and remember(h, "x\ny") == h
    h = []
    for i in range(MAX_ENTRIES + 50):
        h = remember(h, f"port == {i}")
    assert len(h) == MAX_ENTRIES
    assert h[0] == "port == 50" and h[-1] == f"port == {MAX_ENTRIES + 49}"


def test_save_and_load(tmp_path: Path) -> None:
    path = str(tmp_path / "state" / "shark-tui" / "filter_history")
    assert load_history(path) == ([], None)  # no file yet: no history, nothing to say
    assert save_history(path, ["http", 'pod ~ "api"']) is None
    assert load_history(path) == (["http", 'pod ~ "api"'], None)
    assert oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == "0o700"
    assert os.listdir(os.path.dirname(path)) == ["filter_history"]  # no temporary left
    # written by hand: blank lines skipped, a repeated filter kept once at its newest place,
    # the newest MAX_ENTRIES kept
    lines = ["a", "", "b", "a"] + [f"n{i}" for i in range(MAX_ENTRIES)]
    Path(path).write_text("\n".join(lines) + "\n")
    got, problem = load_history(path)
    assert problem is None and len(got) == MAX_ENTRIES
    assert got[0] == "n0" and got[-1] == f"n{MAX_ENTRIES - 1}"
    Path(path).write_text("b\na\nb\n")
    assert load_history(path) == (["a", "b"], None)


@pytest.mark.parametrize(
    "content, said",
    [
        (b"http\n\xff\xfe\n", "not UTF-8 text"),
        (b"http\n\0\0\0", "binary data"),
        (b"x" * (MAX_BYTES + 1), "over 1024 KiB"),
        (None, "Is a directory"),
    ],
)
def test_a_bad_file_is_ignored_in_one_line(
    tmp_path: Path, content: bytes | None, said: str
) -> None:
    path = tmp_path / "filter_history"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    got, problem = load_history(str(path))
    assert got == [] and problem is not None
    assert said in problem and str(path) in problem and "\n" not in problem


def test_save_problem_is_said(tmp_path: Path) -> None:
    (tmp_path / "shark-tui").write_text("a file where the directory should be")
    problem = save_history(str(tmp_path / "shark-tui" / "filter_history"), ["http"])
    assert problem is not None and "filter history not saved" in problem


def test_a_filter_typed_in_one_run_is_recalled_in_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    path = tmp_path / "state" / "shark-tui" / "filter_history"

    async def first() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 16)
                await pilot.press("slash", *"status >= 500", "enter")
                await wait_for(lambda: _filters(app)[-1] == "status >= 500")
                await pilot.press("slash", "ctrl+u", *"status >=", "enter")  # invalid: kept out
                await pilot.press("escape")
                await pilot.press("slash", "ctrl+u", *'method == "POST"', "enter")
                await wait_for(lambda: _filters(app)[-1] == 'method == "POST"')
                await pilot.press("q")
            assert app.return_code == 0

    async def second() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 16)
                assert not notes(app)
                bar = app.filter_bar.input
                await pilot.press("slash")
                assert bar.value == ""
                await pilot.press("up")
                assert bar.value == 'method == "POST"'
                await pilot.press("up")
                assert bar.value == "status >= 500"
                await pilot.press("enter")  # recalled, and sent to the daemon
                await wait_for(lambda: _filters(app)[-1] == "status >= 500")
                await wait_for(lambda: len(app.store) == 4)
                assert {r.status for r in app.store.shown} == {"500"}

    asyncio.run(first())
    assert path.read_text() == 'status >= 500\nmethod == "POST"\n'
    asyncio.run(second())
    # sent again: it moves to the newest place, once
    assert path.read_text() == 'method == "POST"\nstatus >= 500\n'


def test_two_apps_keep_both_histories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An app writes the file as it is on disk plus its filter: another app's filters sent
    meanwhile stay."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    path = history_path()

    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 16)
                save_history(path, ["tcp"])  # another app, after this one started
                await pilot.press("slash", *"http", "enter")
                await wait_for(lambda: _filters(app)[-1] == "http")

    asyncio.run(main())
    assert load_history(path) == (["tcp", "http"], None)


def test_a_bad_history_file_is_said_and_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    path = Path(history_path())
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n\0\0")

    async def main() -> None:
        with fixture_daemon() as (address, token):
            app = SharkApp([(address, token)])
            async with app.run_test(size=(160, 30)) as pilot:
                await wait_for(lambda: len(app.store) == 16)
                said = [n for n in notes(app) if "filter history" in n]
                assert said == [f"{path}: not UTF-8 text: filter history not loaded"]
                await pilot.press("slash", "up")
                assert app.filter_bar.input.value == ""
                await pilot.press(*"http", "enter")  # works; this run's history only
                await wait_for(lambda: _filters(app)[-1] == "http")
                await pilot.press("slash", "ctrl+u", "up")
                assert app.filter_bar.input.value == "http"

    asyncio.run(main())
    assert path.read_bytes() == b"\x89PNG\r\n\x1a\n\0\0"  # not written over

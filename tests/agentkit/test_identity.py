"""agentkit.identity: the record round-trips, writes are atomic, a follower sees each
change (and only registered ones), a corrupt file is set aside and waited out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from unittest import mock

import pytest

from agentkit import logs
from agentkit.identity import Identity, IdentityFile, IdentityFollower
from tests.tunnel.agent_helpers import until

REGISTERED = Identity(agent_id="agent-1", cluster_id="c-1", cluster_name="one",
                      cluster_token="tok-" + "a" * 20, state="registered", generation=3)


def test_round_trip_mode_0600_and_no_temp_left(state_dir: Path) -> None:
    file = IdentityFile(state_dir)
    assert file.read() is None
    file.write(REGISTERED)
    assert file.read() == REGISTERED
    assert stat.S_IMODE(file.path.stat().st_mode) == 0o600
    assert [p.name for p in state_dir.iterdir()] == ["identity.json"]
    # written, the token is a secret every log line masks
    assert REGISTERED.cluster_token not in logs.masker.mask(f"x {REGISTERED.cluster_token} y")


def test_records_are_read_leniently_and_the_token_never_shown() -> None:
    identity = Identity.from_record({"agent_id": "a", "cluster_id": 7, "generation": True,
                                     "state": "registered", "unknown": "x",
                                     "cluster_token": "secret-token-value"})
    assert identity == Identity(agent_id="a", state="registered",
                                cluster_token="secret-token-value")
    assert not identity.registered  # no cluster id
    assert "secret-token-value" not in repr(identity)
    assert Identity.from_record({"generation": 4}).generation == 4


def test_evolve_bumps_the_generation_only_on_a_change() -> None:
    assert REGISTERED.evolve(cluster_name="one").generation == 3
    changed = REGISTERED.evolve(cluster_token="tok-new")
    assert changed.generation == 4 and changed.credentials != REGISTERED.credentials


def test_a_crash_before_the_rename_keeps_the_old_identity(state_dir: Path) -> None:
    file = IdentityFile(state_dir)
    file.write(REGISTERED)
    with mock.patch("agentkit.statefile.os.replace", side_effect=OSError("power cut")), \
            pytest.raises(OSError, match="power cut"):
        file.write(REGISTERED.evolve(cluster_token="tok-lost"))
    assert file.read() == REGISTERED
    assert [p.name for p in state_dir.iterdir()] == ["identity.json"]


@contextlib.asynccontextmanager
async def following(file: IdentityFile) -> AsyncIterator[asyncio.Queue[Identity]]:
    seen: asyncio.Queue[Identity] = asyncio.Queue(maxsize=16)

    async def pump() -> None:
        async for identity in file.follow(poll=0.01):
            await seen.put(identity)

    task = asyncio.create_task(pump())
    try:
        yield seen
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_follower_yields_each_new_registered_identity(state_dir: Path) -> None:
    file = IdentityFile(state_dir)
    file.write(Identity(agent_id="agent-1", state="unregistered"))
    async with following(file) as seen:
        file.write(REGISTERED)
        assert await asyncio.wait_for(seen.get(), 10) == REGISTERED
        file.write(REGISTERED.evolve(state="unregistered"))  # re-registering: skipped
        renewed = REGISTERED.evolve(cluster_token="tok-" + "b" * 20)
        file.write(renewed)
        assert await asyncio.wait_for(seen.get(), 10) == renewed
        assert seen.empty()


async def test_a_corrupt_file_is_set_aside_and_the_next_valid_one_followed(
        state_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    file = IdentityFile(state_dir)
    _write_garbage(file.path)
    follower = IdentityFollower(file, poll=0.01)
    task = asyncio.create_task(follower.run())
    try:
        await until(lambda: any("corrupt" in r.getMessage() for r in caplog.records),
                    what="the corrupt file reported")
        assert follower.current is None and not task.done()
        assert _names(state_dir) == {"identity.json.corrupt-"}
        file.write(REGISTERED)
        assert await asyncio.wait_for(follower.wait_ready(), 10) == REGISTERED
        # same credentials, other details: not a change for the siblings
        file.write(REGISTERED.evolve(tunnel_url="wss://elsewhere"))
        file.write(REGISTERED.evolve(cluster_token="tok-" + "c" * 20))
        changed = await asyncio.wait_for(follower.wait_changed(REGISTERED), 10)
        assert changed.cluster_token == "tok-" + "c" * 20
        assert follower.require() is changed
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _write_garbage(path: Path) -> None:
    path.write_text('{"version": 1, "data": {"agent_id": "tru')


def _names(folder: Path) -> set[str]:
    """The files in ``folder``, a set-aside copy's time stamp cut off."""
    return {p.name.split("corrupt-")[0] + "corrupt-" if "corrupt-" in p.name else p.name
            for p in folder.iterdir()}

"""The state file: atomic writes, 0600, corruption detected and moved aside, waiting."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from unittest import mock

import pytest

from agentkit.statefile import StateFile, identity_file


def test_write_read_roundtrip_with_mode_0600(state_dir: Path) -> None:
    state = identity_file(state_dir)
    state.write({"agent_id": "a1", "cluster_id": "c1"})
    assert state.read() == {"agent_id": "a1", "cluster_id": "c1"}
    assert stat.S_IMODE(state.path.stat().st_mode) == 0o600
    assert [p.name for p in state_dir.iterdir()] == ["identity.json"]  # no temp left


def test_crash_between_write_and_rename_keeps_old_content(state_dir: Path) -> None:
    state = identity_file(state_dir)
    state.write({"generation": 1})
    with mock.patch("agentkit.statefile.os.replace", side_effect=OSError("power cut")), \
            pytest.raises(OSError, match="power cut"):
        state.write({"generation": 2})
    assert state.read() == {"generation": 1}
    assert [p.name for p in state_dir.iterdir()] == ["identity.json"]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "tamper", "empty"])
def test_corrupt_file_is_detected_and_moved_aside(
    state_dir: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    state = identity_file(state_dir)
    state.write({"agent_id": "a1", "cluster_id": "c1"})
    raw = state.path.read_bytes()
    if damage == "truncate":
        state.path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        state.path.write_bytes(b"\x00\xff not json")
    elif damage == "empty":
        state.path.write_bytes(b"")
    else:
        document = json.loads(raw)
        document["data"]["cluster_id"] = "someone-else"
        state.path.write_text(json.dumps(document))
    assert state.read() is None
    assert not state.path.exists()
    aside = [p for p in state_dir.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1
    assert "state file is corrupt" in caplog.text
    state.write({"agent_id": "a2"})  # the slot is usable again
    assert state.read() == {"agent_id": "a2"}


async def test_wait_for_appearance_and_change(state_dir: Path) -> None:
    state = StateFile(state_dir / "sub" / "identity.json")
    waiter = asyncio.create_task(state.wait(timeout=5, poll=0.01))
    await asyncio.sleep(0)
    assert not waiter.done()
    await asyncio.to_thread(state.write, {"generation": 1})
    assert await waiter == {"generation": 1}

    changed = asyncio.create_task(state.wait(changed_from={"generation": 1}, timeout=5,
                                             poll=0.01))
    await asyncio.to_thread(state.write, {"generation": 1})  # same content: still waiting
    await asyncio.sleep(0.05)
    assert not changed.done()
    await asyncio.to_thread(state.write, {"generation": 2})
    assert await changed == {"generation": 2}


async def test_wait_times_out(state_dir: Path) -> None:
    with pytest.raises(TimeoutError):
        await identity_file(state_dir).wait(timeout=0.1, poll=0.01)


def test_temp_file_is_private_before_rename(state_dir: Path) -> None:
    seen: list[int] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        seen.append(stat.S_IMODE(os.stat(src).st_mode))
        real_replace(src, dst)

    with mock.patch("agentkit.statefile.os.replace", side_effect=spy):
        identity_file(state_dir).write({"cluster_token": "secret"})
    assert seen == [0o600]

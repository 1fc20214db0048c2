"""The identity file on the shared volume is the siblings' only source: when it is
truncated, corrupted or deleted while everything runs, the registrar writes it again from
its own state within a heartbeat; and a tunnel that starts while it is broken says what
it waits for (its status detail and a log line), then goes on once the file is back."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from agentkit.statefile import identity_file
from tests.helpers import grpcurl, wait_for
from tests.registrar.conftest import StartRegistrar
from tests.registrar.harness import INTERVAL
from tests.tunnel.agent_helpers import TunnelRun, write_identity


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble(path: Path) -> None:
    path.write_text('{"version": 1, "sha256": "0", "data": {"agent_id": "someone-else"}}')


def _delete(path: Path) -> None:
    path.unlink()


# the registrar checks once a heartbeat interval; a loaded machine gets some slack
WITHIN = INTERVAL * 2 + 3.0


@pytest.mark.parametrize("damage", [_truncate, _garble, _delete],
                         ids=["truncated", "corrupted", "deleted"])
def test_identity_file_damaged_while_running_is_restored_within_a_heartbeat(
        start_registrar: StartRegistrar, tmp_path: Path,
        damage: Callable[[Path], None]) -> None:
    registrar = start_registrar(state_dir=tmp_path / "state")
    before = registrar.wait_registered()
    path = tmp_path / "state" / "identity.json"
    damage(path)
    restored = wait_for(lambda: identity_file(tmp_path / "state").read(), WITHIN,
                        what="the identity file written again")
    assert restored == before
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    line = registrar.wait_record(lambda r: "written again from the registrar's state"
                                 in r.get("msg", ""), WITHIN, "the restore line")
    assert line["level"] == "warning" and line["cluster_id"] == before["cluster_id"]
    assert before["cluster_token"] not in json.dumps(registrar.records())


def _describe(tunnel: TunnelRun) -> dict[str, object]:
    address = str(tunnel.wait_started()["grpc"])
    done = grpcurl("-plaintext", "-d", "{}", address, "pipeops.agent.v1.Service/Describe")
    assert done.returncode == 0, done.stderr
    reply: dict[str, object] = json.loads(done.stdout)
    return reply


def test_a_tunnel_started_with_a_corrupt_identity_file_says_what_it_waits_for(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    write_identity(state)
    _truncate(state / "identity.json")
    with TunnelRun("http://127.0.0.1:9", state, forwards={}) as tunnel:
        assert isinstance(tunnel, TunnelRun)
        line = tunnel.wait_record(lambda r: "identity file" in r.get("msg", "")
                                  and "again: it was corrupt" in r.get("msg", ""),
                                  15, "the waiting line")
        assert str(state / "identity.json") in line["msg"]
        detail = wait_for(lambda: (d := str(_describe(tunnel).get("detail", "")))
                          and "corrupt" in d and d, 15, what="the status detail")
        assert "waiting for the registrar to write the identity file" in detail
        write_identity(state)  # the registrar writes it again: the tunnel goes on
        tunnel.wait_record(lambda r: r.get("msg") == "identity read", 15, "identity read")
        wait_for(lambda: "corrupt" not in str(_describe(tunnel).get("detail", "")), 15,
                 what="the detail to move on")

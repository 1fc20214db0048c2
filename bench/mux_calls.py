"""Python calls per 1 KiB round trip through the mux, counted: a load-independent view of
the Python the tunnel runs per message (the CPU figures of bench/tunnel.py move with
whatever else runs on the machine; a count of calls does not).

    .venv/bin/python bench/mux_calls.py [-v]

Everything runs in this one process on uvloop, over ``ws://`` (the TLS layer is C and
the same either way): a control-plane multiplexer and an agent multiplexer over a real
websockets connection, a TCP client, the control plane's listener ``pipe``-ing to a
stream, the agent ``pipe``-ing to a TCP echo server. For 1000 round trips
``sys.setprofile`` counts the Python functions called, by where they live (the mux,
websockets, asyncio, the rest) and the C functions called from Python; ``-v`` lists the
mux's busiest. Then the process CPU per round trip (all four parties, no profiling),
the best of 5 x 2000.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "libs" / "agentkit" / "src"))

from tunnel import echo  # bench/tunnel.py's TCP echo server

ROUNDS = 1000
MESSAGE = b"x" * 1024


def _where(filename: str) -> str:
    for part, name in (("agentkit/mux", "mux"), ("websockets", "websockets"),
                       ("asyncio", "asyncio")):
        if part in filename:
            return name
    return "other"


async def main(verbose: bool) -> None:
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.typing import Subprotocol

    from agentkit.mux import SUBPROTOCOL, Multiplexer, OpenRequest, Role, pipe

    echo_server = await asyncio.start_server(echo, "127.0.0.1", 0)
    echo_port = echo_server.sockets[0].getsockname()[1]
    cp: list[Multiplexer] = []
    ready = asyncio.Event()

    async def on_ws(conn: ServerConnection) -> None:
        cp.append(Multiplexer(conn, Role.CONTROL_PLANE, name="cp"))
        ready.set()
        await cp[0].run()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream = await cp[0].open_stream({"forward": "echo"})
        with contextlib.suppress(Exception):
            await pipe(stream, reader, writer)

    async def on_open(request: OpenRequest) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", echo_port)
        with contextlib.suppress(Exception):
            await pipe(request.accept(), reader, writer)

    listener = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    protocols = [Subprotocol(SUBPROTOCOL)]
    async with serve(on_ws, "127.0.0.1", 0, subprotocols=protocols, compression=None,
                     ping_interval=None) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        async with connect(url, subprotocols=protocols, compression=None,
                           ping_interval=None) as ws, \
                Multiplexer(ws, Role.AGENT, on_open=on_open, name="agent"):
            await ready.wait()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)

            async def rounds(n: int) -> None:
                for _ in range(n):
                    writer.write(MESSAGE)
                    got = 0
                    while got < len(MESSAGE):
                        got += len(await reader.read(1 << 16))

            await rounds(200)  # warm: the stream open, every path taken once
            counts: collections.Counter[str] = collections.Counter()
            mux: collections.Counter[str] = collections.Counter()

            def profile(frame: FrameType, event: str, arg: Any) -> None:
                if event == "call":
                    where = _where(frame.f_code.co_filename)
                    counts[where] += 1
                    if where == "mux":
                        mux[frame.f_code.co_qualname] += 1
                elif event == "c_call":
                    counts["C functions"] += 1

            sys.setprofile(profile)
            await rounds(ROUNDS)
            sys.setprofile(None)
            print(f"Python calls per 1 KiB round trip ({ROUNDS} round trips, both ends, "
                  "client and echo):")
            for name in ("mux", "websockets", "asyncio", "other", "C functions"):
                print(f"  {name}: {counts[name] / ROUNDS:.1f}")
            if verbose:
                for name, n in mux.most_common(40):
                    print(f"    {n / ROUNDS:5.1f} {name}")
            runs = []
            for _ in range(5):
                start = time.process_time()
                await rounds(2000)
                runs.append((time.process_time() - start) / 2000 * 1e3)
            print(f"process CPU per round trip (all four parties, best of 5 x 2000): "
                  f"{min(runs):.4f} ms (runs: {' '.join(f'{r:.4f}' for r in runs)})")
            writer.close()
    listener.close()
    echo_server.close()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main("-v" in sys.argv))

"""What the http-api's process imports at start, in a fresh interpreter: none of what
it was made to leave out (bench/memory_notes.md), while the app is still whole."""

from __future__ import annotations

import json
import subprocess
import sys

# module -> why it must stay out of the http-api's start
LEFT_OUT = {
    "pydantic.v1": "FastAPI only asks whether a type is a v1 model",
    "agentkit.mux": "the tunnel's multiplexer (the http-api only names its subprotocol)",
    "httpcore": "the outbound HTTP clients' transport, built on first use",
    "websockets": "the WebSocket protocol, loaded with the first upgrade",
    "click": "uvicorn's command line",
    "watchfiles": "uvicorn's reloader",
}

PROBE = """
import json, sys
import pipeops_http_api.__main__
from fastapi.openapi.models import OpenAPI
print(json.dumps({"loaded": sorted(m for m in sys.modules if sys.modules[m] is not None),
                  "openapi_built": OpenAPI.__pydantic_complete__}))
"""


def test_the_http_api_starts_without_what_it_does_not_use() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          timeout=60, check=True)
    found = json.loads(done.stdout)
    loaded = set(found["loaded"])
    assert "fastapi" in loaded and "pipeops_http_api.app" in loaded
    stray = {name: why for name, why in LEFT_OUT.items()
             if name in loaded or any(m.startswith(name + ".") for m in loaded)}
    assert not stray, stray
    assert found["openapi_built"] is False  # FastAPI's OpenAPI models: built when asked


def test_the_named_tunnel_protocol_is_the_multiplexers() -> None:
    from agentkit.mux import SUBPROTOCOL
    from pipeops_http_api.podview import TUNNEL_PROTOCOL

    assert TUNNEL_PROTOCOL == SUBPROTOCOL

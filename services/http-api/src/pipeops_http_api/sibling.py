"""Sibling answers as JSON: a reply in proto field names, or what went wrong.

The calls themselves are ``agentkit.grpcclient.Siblings.ask`` (deadline, the status
code of a failure, errors logged once and shown in Describe); this module only renders.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict

from agentkit.grpcclient import Answer

SIBLINGS = ("registrar", "tunnel", "gateway")


def to_dict(message: Any) -> dict[str, Any]:
    out: dict[str, Any] = MessageToDict(message, preserving_proto_field_name=True,
                                        always_print_fields_with_no_presence=True)
    return out


def as_dict(answer: Answer) -> dict[str, Any]:
    """The reply as JSON-ready data, or ``{"error": why}``."""
    return to_dict(answer.reply) if answer.ok else {"error": answer.problem}

"""A reference control plane for ``make run`` and the tests (PROTOCOL.md)."""

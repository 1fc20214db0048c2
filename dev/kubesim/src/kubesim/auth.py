"""Bearer-token authentication and a small RBAC, enough to prove 401s and 403s.

The admin token may do anything (it is `system:masters`). Extra tokens come from the
`--rbac` file or `POST /_kubesim/tokens`, each bound to a ServiceAccount (or a plain
user) and a list of rules:

    tokens:
      - token: reader-token
        serviceAccount: default/reader      # or: user: alice
        rules:
          - apiGroups: [""]                 # "*" for any
            resources: [pods, pods/log]     # "*" for any; subresources as "pods/log"
            verbs: [get, list, watch]       # "*" for any
            namespaces: [default]           # optional: omitted means every namespace
                                            # and cluster-scoped resources

Forbidden requests get the real server's message shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubesim.errors import ApiError


@dataclass(frozen=True)
class Rule:
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    namespaces: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Rule:
        def tup(key: str, default: list[str] | None = None) -> tuple[str, ...]:
            value = raw.get(key, default)
            if not isinstance(value, list):
                raise ValueError(f"rule field {key!r} must be a list: {raw!r}")
            return tuple(str(v) for v in value)

        namespaces = tup("namespaces") if "namespaces" in raw else None
        return cls(tup("apiGroups", [""]), tup("resources"), tup("verbs"), namespaces)

    def allows(self, verb: str, group: str, resource: str, namespace: str | None) -> bool:
        def hit(values: tuple[str, ...], value: str) -> bool:
            return "*" in values or value in values

        if self.namespaces is not None and (namespace is None
                                            or not hit(self.namespaces, namespace)):
            return False
        return (hit(self.verbs, verb) and hit(self.api_groups, group)
                and hit(self.resources, resource))


@dataclass
class Identity:
    user: str
    admin: bool = False
    rules: list[Rule] = field(default_factory=list)

    def allows(self, verb: str, group: str, resource: str, namespace: str | None) -> bool:
        return self.admin or any(r.allows(verb, group, resource, namespace) for r in self.rules)


def identity_from(raw: dict[str, Any]) -> tuple[str, Identity]:
    token = raw.get("token")
    if not isinstance(token, str) or not token:
        raise ValueError("each token entry needs a non-empty 'token'")
    if sa := raw.get("serviceAccount"):
        ns, _, name = str(sa).partition("/")
        if not name:
            raise ValueError("serviceAccount must be 'namespace/name'")
        user = f"system:serviceaccount:{ns}:{name}"
    else:
        user = str(raw.get("user") or "kubesim-user")
    rules = [Rule.parse(r) for r in raw.get("rules") or []]
    return token, Identity(user, bool(raw.get("admin", False)), rules)


class Authenticator:
    def __init__(self, admin_token: str) -> None:
        self.admin_token = admin_token
        self.tokens: dict[str, Identity] = {
            admin_token: Identity("kubesim-admin", admin=True)
        }

    def load_file(self, path: Path) -> None:
        doc = yaml.safe_load(path.read_text()) or {}
        for entry in doc.get("tokens", []):
            self.add(entry)

    def add(self, raw: dict[str, Any]) -> Identity:
        token, ident = identity_from(raw)
        self.tokens[token] = ident
        return ident

    def authenticate(self, authorization: str | None) -> Identity | None:
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.tokens.get(token.strip())


def forbidden(
    ident: Identity,
    verb: str,
    group: str,
    resource: str,
    namespace: str | None,
    name: str | None,
) -> ApiError:
    subject = f'{resource} "{name}"' if name else resource
    if "/" in resource:
        base, sub = resource.split("/", 1)
        subject = f'{base} "{name}"' if name else base
        what = f'resource "{base}/{sub}"'
    else:
        what = f'resource "{resource}"'
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    if group:
        subject = subject.replace(resource.split("/")[0], f"{resource.split('/')[0]}.{group}", 1)
    message = (f'{subject} is forbidden: User "{ident.user}" cannot {verb} {what} '
               f'in API group "{group}" {scope}')
    details: dict[str, Any] = {"kind": resource.split("/")[0]}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    return ApiError(403, "Forbidden", message, details)

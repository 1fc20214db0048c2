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

A token bound to a ServiceAccount (or user) is also granted whatever the Roles,
ClusterRoles and their bindings stored in kubesim give it, matched as the real RBAC
authorizer matches them (verbs, apiGroups, resources with `pods/log` and `*/scale`
forms, resourceNames; subjects by ServiceAccount, User, or the groups
`system:serviceaccounts[:NS]` and `system:authenticated`). So a chart's RBAC can be
tried with a token for its ServiceAccount: `POST /_kubesim/tokens {"token": "t",
"serviceAccount": "ns/name"}` with no rules of its own.

Forbidden requests get the real server's message shape; `kubectl auth can-i` works
through SelfSubjectAccessReview.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubesim.errors import ApiError
from kubesim.store import Store


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
    # (namespace, name) when the token belongs to a ServiceAccount.
    service_account: tuple[str, str] | None = None

    @property
    def groups(self) -> list[str]:
        if self.admin:
            return ["system:masters", "system:authenticated"]
        if self.service_account:
            return ["system:serviceaccounts",
                    f"system:serviceaccounts:{self.service_account[0]}",
                    "system:authenticated"]
        return ["system:authenticated"]

    def allows(self, verb: str, group: str, resource: str, namespace: str | None) -> bool:
        """What the token's own rules (file or admin API) allow; see also rbac_allows."""
        return self.admin or any(r.allows(verb, group, resource, namespace) for r in self.rules)


RBAC_GROUP = "rbac.authorization.k8s.io"


def _subject_matches(ident: Identity, subject: Any, binding_namespace: str) -> bool:
    if not isinstance(subject, dict):
        return False
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "ServiceAccount":
        return ident.service_account == (subject.get("namespace") or binding_namespace, name)
    if kind == "User":
        return name == ident.user
    if kind == "Group":
        return name in ident.groups
    return False


def _rule_matches(rule: Any, verb: str, group: str, resource: str, name: str | None) -> bool:
    """One PolicyRule of a stored Role/ClusterRole, with the real matching rules."""
    if not isinstance(rule, dict):
        return False
    verbs, groups = rule.get("verbs") or [], rule.get("apiGroups") or []
    resources, names = rule.get("resources") or [], rule.get("resourceNames") or []
    if not ("*" in verbs or verb in verbs) or not ("*" in groups or group in groups):
        return False
    sub = resource.partition("/")[2]
    if not ("*" in resources or resource in resources or (sub and f"*/{sub}" in resources)):
        return False
    return not names or (name is not None and name in names)


def rbac_allows(store: Store, ident: Identity, verb: str, group: str, resource: str,
                namespace: str | None, name: str | None) -> bool:
    """What the Roles, ClusterRoles and their bindings stored in kubesim grant `ident`."""
    def role_rules(kind: Any, role_name: Any, role_namespace: str) -> list[Any]:
        if kind == "ClusterRole":
            role = store.get((RBAC_GROUP, "clusterroles"), "", str(role_name))
        elif kind == "Role" and role_namespace:
            role = store.get((RBAC_GROUP, "roles"), role_namespace, str(role_name))
        else:
            role = None
        return list((role or {}).get("rules") or [])

    def granted(binding: Any, binding_namespace: str) -> bool:
        if not any(_subject_matches(ident, s, binding_namespace)
                   for s in binding.get("subjects") or []):
            return False
        ref = binding.get("roleRef") or {}
        return any(_rule_matches(r, verb, group, resource, name)
                   for r in role_rules(ref.get("kind"), ref.get("name"), binding_namespace))

    for binding in store.iterate((RBAC_GROUP, "clusterrolebindings"), None):
        if granted(binding, ""):
            return True
    if namespace:
        for binding in store.iterate((RBAC_GROUP, "rolebindings"), namespace):
            if granted(binding, namespace):
                return True
    return False


def identity_from(raw: dict[str, Any]) -> tuple[str, Identity]:
    token = raw.get("token")
    if not isinstance(token, str) or not token:
        raise ValueError("each token entry needs a non-empty 'token'")
    service_account = None
    if sa := raw.get("serviceAccount"):
        ns, _, name = str(sa).partition("/")
        if not name:
            raise ValueError("serviceAccount must be 'namespace/name'")
        user = f"system:serviceaccount:{ns}:{name}"
        service_account = (ns, name)
    else:
        user = str(raw.get("user") or "kubesim-user")
    rules = [Rule.parse(r) for r in raw.get("rules") or []]
    return token, Identity(user, bool(raw.get("admin", False)), rules, service_account)


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

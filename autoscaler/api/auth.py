"""Who is calling and may they: Kubernetes TokenReview + SubjectAccessReview in a cluster (the
cluster's RBAC decides), static tokens with the same two roles locally."""
from __future__ import annotations

import csv
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from autoscaler.overrides.model import GROUP

__all__ = ["User", "Auth", "KubeAuth", "StaticTokenAuth", "ROLE_VERBS", "TokenFileError", "MISS"]

MISS = object()
"""What a `peek_*` method returns when it would have to block (ask the API server) to answer."""

# The verbs each shipped ClusterRole grants on the API's resources (manifests/rbac/override-*.yaml).
ROLE_VERBS = {
    "viewer": frozenset({"get", "list", "watch"}),
    "operator": frozenset({"get", "list", "watch", "create", "delete", "patch", "update"}),
}


@dataclass(frozen=True)
class User:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())


@runtime_checkable
class Auth(Protocol):
    def authenticate(self, token: str) -> User | None:
        """The user the bearer token belongs to, None if it is not valid. Raises Unavailable."""

    def authorize(self, user: User, verb: str, resource: str, namespace: str | None) -> bool:
        """May `user` do `verb` on `resource` (in `namespace`; None = all namespaces)? Raises Unavailable."""

    # Optional, for the API's event loop: `peek_authenticate(token)` and `peek_authorize(user, verb,
    # resource, namespace)` answer as above without blocking, or return MISS when answering would
    # block; the API then calls the blocking method on a worker thread.


class _TtlCache:
    """Bounded, thread-safe cache of recent answers (as kube-rbac-proxy and the API server's
    webhook authenticator do): revocations take effect within `ttl_s`."""

    def __init__(self, ttl_s: float, size: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self.size, self.clock = ttl_s, size, clock
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def peek(self, key):
        """The cached answer, or MISS (never blocks on anything but this cache's own lock)."""
        now = self.clock()
        with self._lock:
            hit = self._data.get(key)
        return hit[1] if hit is not None and hit[0] > now else MISS

    def get_or(self, key, compute):
        now = self.clock()
        with self._lock:
            hit = self._data.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        value = compute()
        with self._lock:
            self._data[key] = (now + self.ttl_s, value)
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)
        return value


class KubeAuth:
    """TokenReview for authentication, SubjectAccessReview for each (verb, resource, namespace)."""

    def __init__(self, api_client, cache_ttl_s: float = 10.0, audiences: list[str] | None = None) -> None:
        import kubernetes
        self.authn = kubernetes.client.AuthenticationV1Api(api_client)
        self.authz = kubernetes.client.AuthorizationV1Api(api_client)
        self.audiences = audiences or []
        self._tokens = _TtlCache(cache_ttl_s)
        self._decisions = _TtlCache(cache_ttl_s)

    def authenticate(self, token: str) -> User | None:
        digest = hashlib.sha256(token.encode()).hexdigest()
        return self._tokens.get_or(digest, lambda: self._review_token(token))

    def peek_authenticate(self, token: str):
        return self._tokens.peek(hashlib.sha256(token.encode()).hexdigest())

    def _review_token(self, token: str) -> User | None:
        from autoscaler.overrides.kube import call
        spec = {"token": token, **({"audiences": self.audiences} if self.audiences else {})}
        review = call(self.authn.create_token_review, {"apiVersion": "authentication.k8s.io/v1",
                                                       "kind": "TokenReview", "spec": spec})
        status = review.status
        if not status or not status.authenticated or not status.user:
            return None
        extra = tuple(sorted((k, tuple(v)) for k, v in (status.user.extra or {}).items()))
        return User(status.user.username, status.user.uid or "", tuple(status.user.groups or ()), extra)

    def authorize(self, user: User, verb: str, resource: str, namespace: str | None) -> bool:
        key = (user, verb, resource, namespace or "")
        return self._decisions.get_or(key, lambda: self._review_access(user, verb, resource, namespace))

    def peek_authorize(self, user: User, verb: str, resource: str, namespace: str | None):
        return self._decisions.peek((user, verb, resource, namespace or ""))

    def _review_access(self, user: User, verb: str, resource: str, namespace: str | None) -> bool:
        from autoscaler.overrides.kube import call
        attributes = {"group": GROUP, "resource": resource, "verb": verb, "namespace": namespace or ""}
        spec = {"user": user.name, "uid": user.uid, "groups": list(user.groups),
                "extra": {k: list(v) for k, v in user.extra}, "resourceAttributes": attributes}
        review = call(self.authz.create_subject_access_review, {"apiVersion": "authorization.k8s.io/v1",
                                                              "kind": "SubjectAccessReview", "spec": spec})
        return bool(review.status and review.status.allowed)


class TokenFileError(ValueError):
    pass


class StaticTokenAuth:
    """Tokens from a file, one per line: `token,user,role` (role: viewer or operator).
    Lines starting with '#' are comments. The roles grant what the ClusterRoles grant."""

    def __init__(self, tokens: dict[str, tuple[str, str]]) -> None:
        # keyed by digest: a token is never kept in the clear
        self._users = {hashlib.sha256(t.encode()).hexdigest(): (User(user, groups=(f"warmscale:{role}",)), role)
                       for t, (user, role) in tokens.items()}

    @classmethod
    def from_file(cls, path: str | Path) -> "StaticTokenAuth":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise TokenFileError(f"token file {path}: {err.strerror}") from None
        tokens = {}
        for number, row in enumerate(csv.reader(text.splitlines()), start=1):
            if not row or row[0].strip().startswith("#"):
                continue
            if len(row) != 3:
                raise TokenFileError(f"token file {path} line {number}: expected token,user,role, got {len(row)} fields")
            token, user, role = (part.strip() for part in row)
            if role not in ROLE_VERBS:
                raise TokenFileError(f"token file {path} line {number}: role {role!r} is not one of "
                                     f"{', '.join(ROLE_VERBS)}")
            if len(token) < 16:
                raise TokenFileError(f"token file {path} line {number}: token for {user!r} is shorter than 16 characters")
            tokens[token] = (user, role)
        return cls(tokens)

    def authenticate(self, token: str) -> User | None:
        found = self._users.get(hashlib.sha256(token.encode()).hexdigest())
        return found[0] if found else None

    def authorize(self, user: User, verb: str, resource: str, namespace: str | None) -> bool:
        roles = [g.removeprefix("warmscale:") for g in user.groups if g.startswith("warmscale:")]
        return any(verb in ROLE_VERBS.get(role, ()) for role in roles)

    # in memory: never blocks
    peek_authenticate = authenticate
    peek_authorize = authorize

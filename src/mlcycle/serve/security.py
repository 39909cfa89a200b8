"""API keys with roles. Settings hold SHA-256 hashes of keys, never the keys; a key is
checked by hashing it and comparing in constant time against every stored hash."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass

from mlcycle.errors import NotAllowed, NotAuthenticated, SpecError
from mlcycle.serve.core import Reply, refusal

ROLES = ("predict", "admin")


@dataclass(frozen=True)
class ApiKey:
    name: str
    role: str
    sha256: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_keys(raw: str | None) -> list[ApiKey]:
    """`MLCYCLE_API_KEYS`: a JSON list of {"name", "role", "sha256"}."""
    if not raw:
        return []
    try:
        items = json.loads(raw)
        keys = [ApiKey(str(i["name"]), str(i["role"]), str(i["sha256"]).lower()) for i in items]
    except (ValueError, TypeError, KeyError) as err:
        raise SpecError(
            'MLCYCLE_API_KEYS must be a JSON list of {"name", "role", "sha256"} objects'
        ) from err
    for key in keys:
        if key.role not in ROLES:
            raise SpecError(f"API key {key.name!r}: role must be one of {', '.join(ROLES)}")
        if len(key.sha256) != 64:
            raise SpecError(
                f"API key {key.name!r}: sha256 must be 64 hex digits (use `mlcycle hash-key`)"
            )
    return keys


class KeyRing:
    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = keys

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def lookup(self, presented: str | None) -> ApiKey | None:
        if not presented:
            return None
        digest = hash_key(presented)
        match = None
        for key in self.keys:  # no early exit: time does not depend on which key matched
            if hmac.compare_digest(digest, key.sha256):
                match = key
        return match

    def check(self, presented: str | None, role: str) -> int:
        """0 if allowed, else the HTTP status to answer (401 no/bad key, 403 wrong role)."""
        if role == "predict" and not self.enabled:
            return 0
        key = self.lookup(presented)
        if key is None:
            return 401
        if role == "admin" and key.role != "admin":
            return 403
        return 0


def api_key(headers: Mapping[str, str]) -> str | None:
    """The key a request presents: `X-API-Key`, or `Authorization: Bearer <key>`."""
    key = headers.get("x-api-key")
    if key is None:
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            key = auth[7:].strip()
    return key


def denied(keys: KeyRing, headers: Mapping[str, str], role: str) -> Reply | None:
    """The 401/403 to answer, or None when the request may go on (an auth dependency)."""
    status = keys.check(api_key(headers), role)
    if status == 401:
        return refusal(
            NotAuthenticated("missing or invalid API key"), {"www-authenticate": "ApiKey"}
        )
    if status == 403:
        return refusal(NotAllowed(f"this API key lacks the {role!r} role"))
    return None

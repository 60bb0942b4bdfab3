"""API keys -> tenants. HTTP-side only: the domain is handed a tenant string.

Key file (``TAILOR_API_KEYS_FILE``; in Kubernetes the mounted Secret), one key per line::

    # comment
    <key> <tenant>            # a tenant's key: sees only that tenant's adapters and jobs
    <key> <tenant> admin      # an admin key: acts as <tenant>, or as any tenant named by
                              # the X-Tailor-Tenant header

``TAILOR_API_KEYS`` takes the same entries inline, separated by newlines or commas. Keys are
16-256 characters of RFC 6750's token alphabet (letters, digits, ``-._~+/``, trailing ``=``),
e.g. ``python -c 'import secrets; print(secrets.token_urlsafe(32))'``.

Only sha256 digests of the keys are kept; a presented key is hashed and compared with every
digest by ``hmac.compare_digest`` (no early exit). Keys never appear in logs or error
messages: a bad entry is named by its line number.

With no keys configured the service runs open and single-tenant: every caller is tenant
``default`` (``TAILOR_REQUIRE_API_KEYS=true`` refuses to start that way).

Rotation without a restart: the key file is re-read when its content changes (service/
keywatch.py polls it; a Kubernetes Secret update swaps a symlinked directory), and the new
keys replace the old ones in one reference swap (``ReloadingKeyRing``). A malformed new file,
or one with no keys, is refused with a log line naming the line (never the key) and the old
keys stay in force. Open mode never begins or ends at run time: that takes a restart.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from adapters.validation import validate_name
from adapters.errors import TailorError

from .errors import Forbidden, Unauthorized, respond
from .keywatch import FileWatch
from .settings import Settings, SettingsError

log = logging.getLogger("tailor")

DEFAULT_TENANT = "default"
TENANT_HEADER = "x-tailor-tenant"
KEY_RE = re.compile(r"^[A-Za-z0-9._~+/-]+=*$")
MIN_KEY_CHARS, MAX_KEY_CHARS = 16, 256


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant a key belongs to, and whether it may act for others."""

    tenant: str
    admin: bool = False


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    """sha256(key) -> Principal. Empty means open mode."""

    def __init__(self, entries: list[tuple[bytes, Principal]] | None = None):
        self._entries = list(entries or [])

    @property
    def open(self) -> bool:
        return not self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def principals(self) -> list[Principal]:
        return [p for _, p in self._entries]

    @classmethod
    def parse(cls, text: str, source: str, *, commas: bool = False) -> "KeyRing":
        """Entries of ``text``; errors name ``source`` and the line, never the key."""
        entries: list[tuple[bytes, Principal]] = []
        seen: dict[bytes, int] = {}
        lines = re.split(r"[\n,]" if commas else r"\n", text)
        for n, line in enumerate(lines, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            where = f"{source}, entry {n}" if commas else f"{source}, line {n}"
            parts = line.split()
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "admin"):
                raise SettingsError(f"{where}: expected `<key> <tenant>` or `<key> <tenant> admin`")
            key, tenant = parts[0], parts[1]
            if not (MIN_KEY_CHARS <= len(key) <= MAX_KEY_CHARS) or not KEY_RE.match(key):
                raise SettingsError(
                    f"{where}: the key must be {MIN_KEY_CHARS}-{MAX_KEY_CHARS} characters of letters, "
                    "digits and -._~+/ (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
            try:
                validate_name(tenant, "tenant")
            except TailorError as e:
                raise SettingsError(f"{where}: {e.message}") from None
            digest = _digest(key)
            if digest in seen:
                raise SettingsError(f"{where}: the same key as entry {seen[digest]}; give each key "
                                    "one tenant")
            seen[digest] = n
            entries.append((digest, Principal(tenant, admin=len(parts) == 3)))
        return cls(entries)

    def merged(self, other: "KeyRing") -> "KeyRing":
        digests = [d for d, _ in self._entries]
        if any(d in digests for d, _ in other._entries):
            raise SettingsError("the same API key is listed twice (TAILOR_API_KEYS_FILE / "
                                "TAILOR_API_KEYS); give each key one tenant")
        return KeyRing(self._entries + other._entries)

    def lookup(self, key: str) -> Principal | None:
        """The key's principal, or None. Constant time in the key: every digest is compared."""
        presented = _digest(key)
        found = None
        for digest, principal in self._entries:  # one list, even if a reload swaps it meanwhile
            if hmac.compare_digest(presented, digest):
                found = principal
        return found

    def describe(self) -> str:
        ps = self.principals()
        return (f"{len(ps)} keys for {len({p.tenant for p in ps})} tenants "
                f"({sum(p.admin for p in ps)} admin keys)")


class ReloadingKeyRing(KeyRing):
    """The keys of TAILOR_API_KEYS_FILE (plus TAILOR_API_KEYS), replaced whole when the file
    changes. A reload swaps one list reference: a lookup sees the old keys or the new ones,
    never a mix, and takes no lock. ``on_reload(ok, ring)`` (metrics) hears every attempt."""

    def __init__(self, ring: KeyRing, settings: Settings, text: str, *, poll_s: float = 1.0,
                 on_reload: Callable[[bool, KeyRing | None], None] | None = None):
        super().__init__(ring._entries)
        self.settings = settings
        self.on_reload = on_reload
        self.watch = FileWatch(settings.api_keys_file, self.reload, poll_s=poll_s, initial=text)

    @property
    def open(self) -> bool:
        return False  # keys were configured at start-up; a reload never opens the service

    def start(self) -> "ReloadingKeyRing":
        """Watch the key file (idempotent; the first request starts it in each worker)."""
        self.watch.start()
        return self

    def reload(self, text: str) -> bool:
        """Take the keys in ``text`` (the key file's new content) if it parses and holds keys;
        otherwise log why, by line number, and keep the keys in use."""
        source = f"TAILOR_API_KEYS_FILE={self.settings.api_keys_file}"
        try:
            ring = _merge_inline(KeyRing.parse(text, source), self.settings)
            if ring.open:
                raise SettingsError(f"{source}: holds no keys; an empty key file would open the "
                                    "service to everyone (restart with no keys to run open)")
        except SettingsError as e:
            log.error("API key file changed but is refused: %s; keeping the %d keys in use",
                      e, len(self))
            if self.on_reload:
                self.on_reload(False, None)
            return False
        old = {d for d, _ in self._entries}
        new = {d for d, _ in ring._entries}
        self._entries = ring._entries  # the swap
        log.info("API keys reloaded from %s: %s (%d added, %d removed)", source, ring.describe(),
                 len(new - old), len(old - new))
        if self.on_reload:
            self.on_reload(True, ring)
        return True


def _read_key_file(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SettingsError(f"TAILOR_API_KEYS_FILE={path}: cannot read it ({type(e).__name__}: "
                            f"{getattr(e, 'strerror', None) or 'not UTF-8 text'})") from None


def _merge_inline(ring: KeyRing, settings: Settings) -> KeyRing:
    if settings.api_keys is None:
        return ring
    return ring.merged(KeyRing.parse(settings.api_keys.get_secret_value(), "TAILOR_API_KEYS",
                                     commas=True))


def load_keyring(settings: Settings, *, poll_s: float = 1.0,
                 on_reload: Callable[[bool, KeyRing | None], None] | None = None) -> KeyRing:
    """The configured keys (start-up). Raises SettingsError naming the setting when the file
    is unreadable or malformed, or when keys are required and none are configured. Warns
    loudly when the service will run open. With a key file that holds keys, the ring reloads
    it when it changes (``ReloadingKeyRing``; watching starts with the first request) and
    tells ``on_reload`` (metrics) of every attempt."""
    ring = KeyRing()
    text = None
    if settings.api_keys_file is not None:
        path = Path(settings.api_keys_file)
        text = _read_key_file(path)
        ring = KeyRing.parse(text, f"TAILOR_API_KEYS_FILE={path}")
    ring = _merge_inline(ring, settings)
    if text is not None and not ring.open:
        ring = ReloadingKeyRing(ring, settings, text, poll_s=poll_s, on_reload=on_reload)
    if ring.open:
        if settings.require_api_keys:
            raise SettingsError("TAILOR_REQUIRE_API_KEYS=true but the configured API key sources "
                                "hold no keys; add `<key> <tenant> [admin]` lines to "
                                "TAILOR_API_KEYS_FILE")
        log.warning("NO API KEYS CONFIGURED: Tailor runs OPEN and single-tenant; every caller "
                    "is tenant %r and can read, predict with and delete every adapter. Set "
                    "TAILOR_API_KEYS_FILE (and TAILOR_REQUIRE_API_KEYS=true) to require keys",
                    DEFAULT_TENANT)
    else:
        log.info("API keys: %s%s", ring.describe(),
                 "; the key file is re-read when it changes" if isinstance(ring, ReloadingKeyRing)
                 else "")
    return ring


def authenticate(ring: KeyRing, headers: dict[bytes, bytes]) -> str:
    """The tenant a request acts as. Raises Unauthorized (401), Forbidden (403) or
    InvalidName (422, a malformed X-Tailor-Tenant)."""
    return principal_of(ring, headers).tenant


def principal_of(ring: KeyRing, headers: dict[bytes, bytes]) -> Principal:
    """Who the request acts as: the tenant (the key's, or for an admin key the one named by
    X-Tailor-Tenant) and whether the key is an admin key. Raises as ``authenticate``."""
    if ring.open:
        principal = Principal(DEFAULT_TENANT)
    else:
        auth = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, key = auth.strip().partition(" ")
        if not auth or scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("missing API key: send `Authorization: Bearer <key>`",
                               headers={"WWW-Authenticate": 'Bearer realm="tailor"'})
        principal = ring.lookup(key.strip())
        if principal is None:
            raise Unauthorized("invalid API key: it is not one this server knows; check the key "
                               "you were given",
                               headers={"WWW-Authenticate": 'Bearer realm="tailor", error="invalid_token"'})
    wanted = headers.get(TENANT_HEADER.encode())
    if wanted is None:
        return principal
    tenant = wanted.decode("latin-1").strip()
    if tenant == principal.tenant:
        return principal
    if not principal.admin:
        raise Forbidden("X-Tailor-Tenant is honoured only for admin keys; leave it out to act as "
                        "your own tenant")
    return Principal(validate_name(tenant, "tenant"), admin=True)


class Authenticate:
    """ASGI middleware: resolves the caller's tenant into ``scope["tailor.tenant"]`` (and
    ``scope["tailor.admin"]``: an admin key, or the open single-tenant mode) before anything
    reads the body, or answers 401/403 in the usual error envelope. The key ring is
    ``app.state.keyring`` (set by ``create_app``)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        ring = scope["app"].state.keyring
        if isinstance(ring, ReloadingKeyRing):
            ring.start()  # in the serving worker, not in the process that imported the app
        try:
            headers: dict[bytes, bytes] = {}
            for k, v in scope.get("headers", []):
                headers.setdefault(k.lower(), v)
            principal = principal_of(ring, headers)
            scope["tailor.tenant"] = principal.tenant
            scope["tailor.admin"] = principal.admin or ring.open
        except TailorError as e:
            return await respond(e, scope)(scope, receive, send)
        return await self.app(scope, receive, send)

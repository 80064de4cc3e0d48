"""Who may look at the console: HTTP basic authentication and bearer tokens, checked
against salted hashes (the secrets themselves are not kept once the console starts)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from anomon.config import WebConfig


def _hash(secret: str, salt: bytes) -> bytes:
    # scrypt: a leaked hash costs a guesser memory and time; ~5 ms a check here
    return hashlib.scrypt(secret.encode(), salt=salt, n=2**12, r=8, p=1, dklen=32)


@dataclass(frozen=True)
class Credentials:
    """The salted hashes of the configured password and token (None: not configured)."""

    username: str
    salt: bytes
    password: bytes | None
    token: bytes | None

    @classmethod
    def of(cls, config: WebConfig) -> Credentials:
        """Hash the configured secrets with a fresh salt."""
        salt = secrets.token_bytes(16)
        return cls(
            username=config.username,
            salt=salt,
            password=_hash(config.password, salt) if config.password else None,
            token=_hash(config.token, salt) if config.token else None,
        )

    @property
    def required(self) -> bool:
        """Whether a request must authenticate."""
        return self.password is not None or self.token is not None

    def allows(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value lets its request in."""
        if not self.required:
            return True
        scheme, _, given = (authorization or "").partition(" ")
        given = given.strip()
        if scheme.lower() == "bearer" and self.token is not None and given:
            return hmac.compare_digest(_hash(given, self.salt), self.token)
        if scheme.lower() == "basic" and self.password is not None and given:
            try:
                user, sep, password = base64.b64decode(given, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            right_user = hmac.compare_digest(user.encode(), self.username.encode())
            right_password = hmac.compare_digest(_hash(password, self.salt), self.password)
            return bool(sep) and right_user and right_password
        return False


def host_name(netloc: str) -> str | None:
    """The host of a ``host[:port]`` (a ``Host`` header, a URL's netloc), lower case,
    without brackets; None when it is no host."""
    try:
        return urlsplit(f"//{netloc}").hostname
    except ValueError:  # a bad port or bracket
        return None


def trusted_host(netloc: str, external_url: str) -> bool:
    """Whether a request addressed to ``netloc`` (its ``Host``) may reach a console that
    asks for no credentials: a loopback name or address, or the host of ``external_url``
    (a reverse proxy's). Anything else is DNS rebinding: a page of another site whose
    name now points at 127.0.0.1, reading and acting as the local user."""
    name = host_name(netloc)
    if name is None:
        return False
    if name == "localhost" or name.endswith(".localhost"):
        return True
    if external_url and name == host_name(urlsplit(external_url).netloc):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False

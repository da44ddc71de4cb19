"""An independent implementation of the castle SessionManager's token format,
written from its description with nothing but the standard library: the
extension must accept what it produces and produce what it accepts."""
import base64
import hashlib
import secrets
import zlib

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def secret_from(random_part: str) -> str:
    return random_part + str(zlib.crc32(random_part.encode()))


def new_secret(size: int = 64) -> str:
    return secret_from("".join(secrets.choice(ALPHABET) for _ in range(size)))


def token(session_id: int, secret: str, prefix: str = "oat_") -> str:
    return prefix + b64url(str(session_id).encode()) + "." + b64url(secret.encode())


def stored_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split(tok: str, prefix: str = "oat_"):
    """(id, secret) of a token, the way the seed reads it."""
    id_part, secret_part = tok[len(prefix):].split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return (int(base64.urlsafe_b64decode(pad(id_part))),
            base64.urlsafe_b64decode(pad(secret_part)).decode())

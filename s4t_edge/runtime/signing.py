"""Optional signed manifests and engine indexes (HMAC-SHA256 with a key the user provides).

The sha256 of every file in `manifest.json` catches truncation, bit rot and a wrong copy; it does
not stop someone who can rewrite the artifact, because they can rewrite the hashes too.  With a
key configured -- `key=` / `--key-file`, or the file named by ``S4T_EDGE_KEY_FILE`` -- every
manifest and engine index must carry a signature made with that key (`manifest.sig`,
`engines/index.sig`) before anything listed in it is trusted.  The manifest lists every file's
sha256, so signing it covers the graphs and θ as well.  Without a key nothing is checked, and
nothing changes for users who do not need it.

The key is shared by whoever signs (the export host) and whoever verifies (the device); keep
the key file out of the artifact directory.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from s4t_edge.errors import ArtifactError, ConfigError

KEY_ENV = "S4T_EDGE_KEY_FILE"
SUFFIX = ".sig"
MIN_KEY_BYTES = 16
_FORMAT = "s4t-edge-hmac-sha256 "


def resolve_key(key: bytes | str | os.PathLike[str] | bool | None = None) -> bytes | None:
    """The signing key: bytes as given, a key file's contents, else $S4T_EDGE_KEY_FILE's, else None.

    `key=False` means "no signature check", whatever the environment says (used by `sign`).

    Raises:
        ConfigError: the key file is missing or unreadable, or the key is shorter than 16 bytes.
    """
    if key is False:
        return None
    if key is None:
        env = os.environ.get(KEY_ENV)
        if not env:
            return None
        key = env
    if isinstance(key, bytes):
        raw = key
    else:
        path = Path(key)
        try:
            raw = path.read_bytes().strip()
        except OSError as e:
            raise ConfigError(
                f"cannot read the signing key file {str(path)!r}: {e.strerror}; check --key-file "
                f"or ${KEY_ENV}"
            ) from None
    if len(raw) < MIN_KEY_BYTES:
        raise ConfigError(
            f"the signing key has {len(raw)} bytes; use at least {MIN_KEY_BYTES} random bytes "
            "(e.g. `head -c 32 /dev/urandom | base64 > key`)"
        )
    return raw


def signature_path(path: Path) -> Path:
    return path.with_name(path.name.rsplit(".", 1)[0] + SUFFIX)


def _mac(data: bytes, key: bytes) -> str:
    return _FORMAT + hmac.new(key, data, hashlib.sha256).hexdigest() + "\n"


def sign(path: Path, key: bytes) -> Path:
    """Write the signature of `path` next to it (e.g. manifest.json -> manifest.sig)."""
    from s4t_edge.utils import atomic_write

    sig = signature_path(path)
    with atomic_write(sig, "w") as f:
        f.write(_mac(path.read_bytes(), key))
    return sig


def verify_bytes(data: bytes, path: Path, key: bytes, what: str) -> None:
    """Check that `data` (the contents of `path`) carries a valid signature made with `key`.

    Raises:
        ArtifactError: the signature is missing or does not match.
    """
    sig = signature_path(path)
    try:
        recorded = sig.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        raise ArtifactError(
            f"{what} {str(path)!r} is not signed ({sig.name} missing or unreadable) but a signing "
            f"key is configured; sign it with `s4t-edge sign` on the export host, or unset "
            f"${KEY_ENV}"
        ) from None
    if not hmac.compare_digest(recorded.strip(), _mac(data, key).strip()):
        raise ArtifactError(
            f"{what} {str(path)!r} does not match its signature {sig.name} (modified, or signed "
            "with another key); do not use it -- copy the artifact again from a trusted host"
        )

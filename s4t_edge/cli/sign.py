"""`s4t-edge sign ART --key-file K`: sign an artifact's manifest."""

from __future__ import annotations

import click


@click.command("sign")
@click.argument("artifact", type=click.Path(file_okay=False))
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="HMAC key file (at least 16 bytes) [$S4T_EDGE_KEY_FILE].",
)
def command(artifact: str, key_file: str | None) -> None:
    """Sign ARTIFACT's manifest.json with an HMAC-SHA256 key (writes manifest.sig).

    The manifest lists every file's sha256, so the signature covers the graphs and θ.  A device
    with the same key configured (--key-file, $S4T_EDGE_KEY_FILE, or `load(..., key=)`) then
    refuses an artifact that is unsigned or was changed after signing.  The artifact is fully
    verified first: only an intact artifact is signed.  Signing is done on the export host,
    where the artifact is trusted; a signature vouches for exactly the bytes it covers.
    """
    from pathlib import Path

    from s4t_edge.errors import ConfigError
    from s4t_edge.outputs import protect
    from s4t_edge.runtime.artifact import MANIFEST, Artifact
    from s4t_edge.runtime.signing import resolve_key, sign

    protect(key_file, "--key-file")
    key = resolve_key(key_file)
    if key is None:
        raise ConfigError("no signing key: pass --key-file KEY or set $S4T_EDGE_KEY_FILE")
    art = Artifact.load(artifact, verify=True, key=False)  # not signed yet: hashes only
    sig = sign(Path(artifact) / MANIFEST, key)
    click.echo(f"signed {art.root / MANIFEST} -> {sig}")
    click.echo(
        "engines built from now on with this key configured get a signed index; "
        "rebuild existing ones (`s4t-edge build ART --force`) to sign theirs"
    )

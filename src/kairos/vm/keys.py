"""A test SSH keypair, made once per directory and reused."""

from __future__ import annotations

from pathlib import Path

from kairos.run import run

KEY_NAME = "id_ed25519"


def ensure_keypair(directory: Path, name: str = KEY_NAME) -> tuple[Path, Path]:
    """Return (private, public) key paths in `directory`, creating an ed25519 pair if needed.

    No passphrase, so BatchMode ssh can use it unattended.
    """
    directory.mkdir(parents=True, exist_ok=True)
    private = directory / name
    public = directory / f"{name}.pub"
    if not (private.is_file() and public.is_file()):
        private.unlink(missing_ok=True)
        public.unlink(missing_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kairos-test",
             "-f", str(private)])
    private.chmod(0o600)  # ssh refuses a key others can read
    return private, public

"""Deployment settings, read from the environment so the CLI and the app agree.

``AEB_DB``            the DuckDB file (default ``cache/embeddings.duckdb``); the
                      app opens it and the CLI's ``--db`` defaults to it
``AEB_SHARED_MODE``   ``1`` for a public deployment: folders and playback are
                      confined to ``AEB_AUDIO_ROOT`` (plus uploads and the demo)
``AEB_AUDIO_ROOT``    the only folder visitors may import from in shared mode
``AEB_MAX_UPLOAD_MB`` the size limit for one upload
``AEB_MAX_SAMPLES``   each file's decode budget in sample values (frames ×
                      channels, default 2e9); a file above it is refused
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from core.audio import DEFAULT_MAX_SAMPLES
from core.errors import AccessDenied, BadInput
from core.store import DEFAULT_DB


def sample_count(text: str, name: str = "--max-samples") -> int:
    """A positive whole number of sample values, written as ``2000000000``, ``2_000_000_000`` or ``2e9``.

    Raises
    ------
    BadInput
    """
    try:
        value = float(str(text).replace("_", ""))
    except ValueError:
        value = float("nan")
    if not (value == value and 1 <= value < 2**63 and value == int(value)):
        raise BadInput(f"{name} must be a positive whole number of sample values such as 2e9, not {text!r}.")
    return int(value)


@dataclasses.dataclass(frozen=True)
class Settings:
    db: Path
    shared_mode: bool
    audio_root: Path | None
    max_upload_mb: int
    cache: Path
    max_samples: int = DEFAULT_MAX_SAMPLES

    @property
    def uploads(self) -> Path:
        return self.cache / "uploads"

    @property
    def demo(self) -> Path:
        return self.cache / "demo"

    def allowed_roots(self) -> list[Path]:
        roots = [self.uploads.resolve(), self.demo.resolve()]
        if self.audio_root is not None:
            roots.insert(0, self.audio_root.resolve())
        return roots

    def check_readable(self, path: str | Path) -> Path:
        """Resolve a path and, in shared mode, refuse anything outside the allowed roots.

        Symbolic links and ``..`` are resolved first, so neither can lead out
        of the root.
        """
        resolved = Path(path).expanduser().resolve()
        if not self.shared_mode:
            return resolved
        for root in self.allowed_roots():
            if resolved == root or root in resolved.parents:
                return resolved
        raise AccessDenied("This shared app only reads audio under its configured audio folder.")


def db_path() -> Path:
    """The store both the app and the command line open unless told otherwise (``AEB_DB``)."""
    return Path(os.environ.get("AEB_DB") or DEFAULT_DB).expanduser()


def settings() -> Settings:
    from core.models.weights import cache_dir

    shared = os.environ.get("AEB_SHARED_MODE", "").strip().lower() in ("1", "true", "yes", "on")
    root = os.environ.get("AEB_AUDIO_ROOT")
    max_mb = os.environ.get("AEB_MAX_UPLOAD_MB", "200")
    if not max_mb.strip().isdigit():
        raise BadInput(f"AEB_MAX_UPLOAD_MB must be a whole number of megabytes, not {max_mb!r}.")
    return Settings(
        db=db_path(),
        shared_mode=shared,
        audio_root=Path(root).expanduser().resolve() if root else None,
        max_upload_mb=int(max_mb),
        cache=cache_dir(),
        max_samples=sample_count(os.environ.get("AEB_MAX_SAMPLES", str(DEFAULT_MAX_SAMPLES)), "AEB_MAX_SAMPLES"),
    )

"""Deployment settings, read from the environment so the CLI and the app agree.

``AEB_DB``            the DuckDB file (default ``cache/embeddings.duckdb``); the
                      app opens it and the CLI's ``--db`` defaults to it
``AEB_SHARED_MODE``   ``1`` for a public deployment: folders and playback are
                      confined to ``AEB_AUDIO_ROOT`` (plus uploads and the demo)
``AEB_AUDIO_ROOT``    the only folder visitors may import from in shared mode
``AEB_MAX_UPLOAD_MB`` the size limit for one upload
``AEB_MAX_SAMPLES``   each file's decode budget in sample values (frames ×
                      channels, default 2e9); a file above it is refused
``AEB_COLLECTION``    a folder written by ``core publish``: the app opens its
                      store read-only and runs in shared mode
``AEB_UPLOAD_QUOTA_MB`` the total size of every upload kept at once
``AEB_UPLOAD_TTL_S``  how long a visitor's query clips are kept at most
``AEB_QUERY_MAX_SAMPLES`` a query clip's decode budget in shared mode (default
                      60 s of 48 kHz stereo), so a decompression bomb is refused
``AEB_VISITOR_MAX_POINTS`` the most points a visitor's new map may have in shared
                      mode (stored maps are free); computed one at a time
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path, PurePosixPath

from core.audio import DEFAULT_MAX_SAMPLES
from core.errors import AccessDenied, BadInput
from core.store import DEFAULT_DB

#: A published collection's store, inside the folder ``AEB_COLLECTION`` names.
COLLECTION_STORE = "collection.duckdb"

#: A query clip's decode budget in shared mode: 60 s of 48 kHz stereo.
QUERY_MAX_SAMPLES = 60 * 48_000 * 2


def whole_number(text: str, name: str, minimum: int = 1, what: str = "a positive whole number") -> int:
    """A whole number of at least ``minimum``, written as ``2000000000``, ``2_000_000_000`` or ``2e9``: sizes
    this large are easier to type and read that way.

    Raises
    ------
    BadInput
        Saying that ``name`` must be ``what``.
    """
    try:
        value = float(str(text).replace("_", ""))
    except ValueError:
        value = float("nan")
    if not (value == value and minimum <= value < 2**63 and value == int(value)):
        raise BadInput(f"{name} must be {what}, not {text!r}.")
    return int(value)


def sample_count(text: str, name: str = "--max-samples") -> int:
    """A decode budget: a positive whole number of sample values (see :func:`whole_number`)."""
    return whole_number(text, name, 1, "a positive whole number of sample values such as 2e9")


@dataclasses.dataclass(frozen=True)
class Settings:
    db: Path
    shared_mode: bool
    audio_root: Path | None
    max_upload_mb: int
    cache: Path
    max_samples: int = DEFAULT_MAX_SAMPLES
    collection: Path | None = None
    upload_quota_mb: int = 500
    upload_ttl_s: int = 3600
    query_max_samples: int = QUERY_MAX_SAMPLES
    visitor_max_points: int = 20_000

    @property
    def read_only(self) -> bool:
        """A published collection: visitors change nothing in its store."""
        return self.collection is not None

    @property
    def uploads(self) -> Path:
        return self.cache / "uploads"

    @property
    def query_budget(self) -> int:
        """The decode budget of a visitor's query clip: small in shared mode, where strangers upload."""
        return min(self.max_samples, self.query_max_samples) if self.shared_mode else self.max_samples

    @property
    def demo(self) -> Path:
        return self.cache / "demo"

    def allowed_roots(self) -> list[Path]:
        roots = [self.uploads.resolve(), self.demo.resolve()]
        if self.audio_root is not None:
            roots.insert(0, self.audio_root.resolve())
        if self.collection is not None:
            roots.insert(0, self.collection.resolve())
        return roots

    def allows(self, path: str | Path) -> bool:
        """Whether :meth:`check_readable` lets ``path`` (resolved first) through."""
        try:
            self.check_readable(path)
        except AccessDenied:
            return False
        return True

    def visible(self, path: str) -> str:
        """A stored path as a visitor may see it: in shared mode, relative to its root, never absolute.

        Published collections store relative paths, shown as they are; an
        upload shows its own name only (its folder is a digest).
        """
        if not self.shared_mode or not os.path.isabs(path):
            return path
        pure = PurePosixPath(path)
        for root in [r for r in (self.collection, self.audio_root) if r is not None] + [self.demo]:
            if pure.is_relative_to(root):
                return str(pure.relative_to(root))
        return pure.name

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


def _whole(name: str, default: int) -> int:
    return whole_number(os.environ.get(name, str(default)), name, 0, "a whole number")


def settings() -> Settings:
    from core.models.weights import cache_dir

    shared = os.environ.get("AEB_SHARED_MODE", "").strip().lower() in ("1", "true", "yes", "on")
    root = os.environ.get("AEB_AUDIO_ROOT")
    collection = os.environ.get("AEB_COLLECTION")
    db = db_path()
    if collection:
        folder = Path(collection).expanduser().resolve()
        if not (folder / COLLECTION_STORE).is_file():
            raise BadInput(f"AEB_COLLECTION names {folder.name}, which holds no {COLLECTION_STORE}; "
                           "point it at a folder written by `python -m core publish`.")
        db = folder / COLLECTION_STORE
    return Settings(
        db=db,
        shared_mode=shared or bool(collection),
        audio_root=Path(root).expanduser().resolve() if root else None,
        max_upload_mb=_whole("AEB_MAX_UPLOAD_MB", 200),
        cache=cache_dir(),
        max_samples=sample_count(os.environ.get("AEB_MAX_SAMPLES", str(DEFAULT_MAX_SAMPLES)), "AEB_MAX_SAMPLES"),
        collection=folder if collection else None,
        upload_quota_mb=_whole("AEB_UPLOAD_QUOTA_MB", 500),
        upload_ttl_s=_whole("AEB_UPLOAD_TTL_S", 3600),
        query_max_samples=sample_count(os.environ.get("AEB_QUERY_MAX_SAMPLES", str(QUERY_MAX_SAMPLES)),
                                       "AEB_QUERY_MAX_SAMPLES"),
        visitor_max_points=_whole("AEB_VISITOR_MAX_POINTS", 20_000),
    )

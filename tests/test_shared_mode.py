"""Shared mode: a visitor can read audio only under the configured root (plus uploads and the demo)."""

from __future__ import annotations

import pytest
import soundfile as sf
from streamlit.testing.v1 import AppTest

from core.config import AccessDenied, settings
from tests.conftest import PROJECT_ROOT, tone


@pytest.fixture
def shared(tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "music").mkdir(parents=True)
    outside = tmp_path / "private"
    outside.mkdir()
    sf.write(outside / "secret.wav", tone(440, 1.0), 22050)
    (root / "escape").symlink_to(outside)
    monkeypatch.setenv("AEB_SHARED_MODE", "1")
    monkeypatch.setenv("AEB_AUDIO_ROOT", str(root))
    monkeypatch.setenv("AEB_DB", str(tmp_path / "s.duckdb"))
    return root, outside


def test_paths_outside_the_root_are_refused(shared):
    root, outside = shared
    cfg = settings()
    assert cfg.check_readable(root / "music") == (root / "music").resolve()
    for path in (outside / "secret.wav", root / ".." / "private" / "secret.wav", root / "escape" / "secret.wav", "/etc/passwd"):
        with pytest.raises(AccessDenied):
            cfg.check_readable(path)


def test_local_mode_reads_anything(shared, monkeypatch):
    _, outside = shared
    monkeypatch.setenv("AEB_SHARED_MODE", "0")
    assert settings().check_readable(outside / "secret.wav").name == "secret.wav"


def test_extract_page_refuses_a_folder_outside_the_root(shared):
    at = AppTest.from_file(str(PROJECT_ROOT / "pages" / "1_Extract.py"), default_timeout=60)
    at.run()
    at.text_input[0].input("../private").run()
    assert not at.exception
    assert any("only reads audio under its configured audio folder" in e.value for e in at.error)
    assert at.button[0].disabled

"""The pages' shared glue (``ui.py``) where it holds logic of its own: uploads and on-screen names."""

from __future__ import annotations

import pytest
from streamlit.proto.Common_pb2 import FileURLs
from streamlit.runtime.uploaded_file_manager import UploadedFile, UploadedFileRec

import ui
from core.errors import LEVELS, BadInput
from core.reduce import METHODS


def uploaded(name: str, data: bytes) -> UploadedFile:
    """What ``st.file_uploader`` hands a page."""
    return UploadedFile(UploadedFileRec("file-id", name, "audio/wav", data), FileURLs())


def test_uploads_are_kept_once_per_content_under_their_own_name(tmp_path, monkeypatch):
    monkeypatch.setenv("AEB_CACHE", str(tmp_path))
    uploads = tmp_path / "uploads"
    first = ui.save_upload(uploaded("take.wav", b"one"))
    assert first.name == "take.wav" and first.read_bytes() == b"one" and first.parent.parent == uploads
    assert ui.save_upload(uploaded("take.wav", b"one")) == first  # the same file twice is written once
    query = ui.save_upload(uploaded("take.wav", b"two"), "queries")
    assert query.parent.parent == uploads / "queries" and query.read_bytes() == b"two"
    assert first.read_bytes() == b"one"  # one name, other bytes: nothing is overwritten
    assert ui.save_upload(uploaded("../../escape.wav", b"three")).parent.parent == uploads

    monkeypatch.setenv("AEB_SHARED_MODE", "1")
    assert ui.cfg().check_readable(query) == query.resolve()  # shared mode reads what was uploaded

    monkeypatch.setenv("AEB_MAX_UPLOAD_MB", "0")
    with pytest.raises(BadInput, match="big.wav is larger than 0 MB"):
        ui.save_upload(uploaded("big.wav", b"x"))
    assert not list(tmp_path.rglob("big.wav"))


def test_every_reduction_and_level_has_a_name_on_screen():
    assert set(ui.METHOD_LABELS) == set(METHODS)
    assert set(ui.LEVEL_LABELS) == set(LEVELS)
    assert ui.span_label("a.wav", 3, 5.96) == "a.wav · 3.0–6.0 s"

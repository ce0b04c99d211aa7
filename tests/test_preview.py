"""Look before you listen: a segment's waveform and log-mel spectrogram in its context."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from core import preview as pv
from tests.conftest import tone


@pytest.fixture
def clip(tmp_path):
    """10 s at 16 kHz: silence, then a 1 kHz tone from 4 s to 7 s, then silence."""
    y = np.zeros(160_000, dtype=np.float32)
    y[64_000:112_000] = tone(1000, 3.0, sr=16_000)
    path = tmp_path / "tone.wav"
    sf.write(path, y, 16_000)
    return path


def test_context_is_cut_at_the_track_ends():
    assert pv.context_span(4.0, 7.0, 10.0) == (1.0, 10.0)
    assert pv.context_span(1.0, 4.0, 10.0, context_s=2.0) == (0.0, 6.0)


def test_preview_shows_the_segment_inside_its_context(clip):
    p = pv.segment_preview(clip, 4.0, 7.0, columns=200)
    assert (p.view_start_s, p.view_end_s) == (1.0, 10.0)
    assert p.envelope.shape == (200, 2) and p.times[0] > 1.0 and p.times[-1] < 10.0
    inside = (p.times > 4.1) & (p.times < 6.9)
    assert np.abs(p.envelope[inside]).max() > 0.4 and np.abs(p.envelope[p.times < 3.9]).max() < 1e-3
    assert p.log_mel.shape[0] == pv.N_MELS and p.log_mel.max() == 0.0 and p.log_mel.min() >= -pv.TOP_DB
    frames = p.log_mel.shape[1]
    loud_band = np.argmax(p.log_mel[:, frames // 2])  # the middle of the view is inside the tone
    assert 0 < loud_band < pv.N_MELS - 1


def test_spectrogram_png_is_one_pixel_per_bin_low_frequencies_at_the_bottom():
    log_mel = np.full((4, 6), -pv.TOP_DB, dtype=np.float32)
    log_mel[0] = 0.0  # the lowest band is the loudest
    image = np.asarray(Image.open(io.BytesIO(pv.spectrogram_png(log_mel))))
    assert image.shape == (4, 6, 3)
    assert tuple(image[-1, 0]) == (0xFD, 0xE7, 0x25) and tuple(image[0, 0]) == (0x44, 0x01, 0x54)


def test_preview_chart_outlines_the_segment(clip):
    p = pv.segment_preview(clip, 4.0, 7.0)
    full = pv.preview_chart(p, width=500).to_dict()
    assert len(full["vconcat"]) == 2
    compact = pv.preview_chart(p, width=300, compact=True).to_dict()
    assert "vconcat" not in compact and compact["layer"][0]["mark"]["type"] == "image"
    spans = [v for v in compact["datasets"].values() if v and "a" in v[0]]
    assert {"a": 4.0, "b": 7.0} in spans[-1] or any({"a": 4.0, "b": 7.0} in d for d in spans)

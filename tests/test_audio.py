"""Decoding, the mono mix, the segment grid and bounded-memory block reading."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from core import audio
from tests.conftest import tone


def test_grid_rules():
    # whole windows, then a tail kept only when at least half a window long
    assert audio.segment_grid(9.0).tolist() == [[0, 3], [3, 6], [6, 9]]
    assert audio.segment_grid(10.4).tolist() == [[0, 3], [3, 6], [6, 9]]
    assert audio.segment_grid(10.5).tolist() == [[0, 3], [3, 6], [6, 9], [9, 10.5]]
    # a clip shorter than one window is one segment
    assert audio.segment_grid(0.01).tolist() == [[0, 0.01]]
    assert audio.segment_grid(2.0, window_s=3.0).tolist() == [[0, 2.0]]
    # overlapping grid
    assert audio.segment_grid(5.0, window_s=2.0, hop_s=1.0).tolist() == [[0, 2], [1, 3], [2, 4], [3, 5]]
    assert len(audio.segment_grid(0.0)) == 0


@pytest.mark.parametrize("subtype,sr,channels", [
    ("PCM_U8", 8000, 1), ("PCM_16", 22255, 2), ("PCM_24", 44100, 1), ("PCM_32", 96000, 2),
    ("FLOAT", 192000, 1), ("ALAW", 8000, 1), ("ULAW", 16000, 1), ("PCM_16", 48000, 8),
])
def test_wav_variants_decode_to_mono_at_their_own_rate(tmp_path, subtype, sr, channels):
    y = tone(440, 0.5, sr)
    data = np.stack([y * (0.5 + 0.05 * c) for c in range(channels)], axis=1)
    path = tmp_path / f"x_{subtype}_{sr}.wav"
    sf.write(path, data, sr, subtype=subtype)
    mono, rate = audio.load(path)
    assert rate == sr and mono.dtype == np.float32 and mono.ndim == 1 and len(mono) == len(y)
    expected = data.mean(axis=1)
    tol = {"PCM_U8": 0.02, "ALAW": 0.03, "ULAW": 0.03}.get(subtype, 1e-3)
    assert np.max(np.abs(mono - expected)) < tol


@pytest.mark.parametrize("fmt,ext", [("FLAC", ".flac"), ("OGG", ".ogg"), ("AIFF", ".aiff"), ("MP3", ".mp3")])
def test_compressed_and_other_containers(tmp_path, fmt, ext):
    y = tone(330, 1.0, 44100)
    path = tmp_path / f"x{ext}"
    sf.write(path, y, 44100, format=fmt)
    mono, sr = audio.load(path)
    assert sr == 44100 and abs(len(mono) - len(y)) < 2000
    assert np.isfinite(mono).all() and np.abs(mono).max() > 0.3


@pytest.mark.parametrize("content,message", [
    (b"", "empty file"),
    (b"this is a text file, not audio\n" * 10, "not a readable audio file"),
])
def test_bad_files_get_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(audio.AudioError, match=message) as err:
        audio.load(path)
    assert "\n" not in str(err.value)


def test_nan_samples_are_refused(tmp_path):
    y = tone(440, 0.5)
    y[100:110] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, y, 22050, subtype="FLOAT")
    with pytest.raises(audio.AudioError, match="NaN"):
        audio.load(path)


def test_blocks_cover_every_segment_with_context(tmp_path):
    sr = 8000
    y = (np.arange(sr * 50) % 1000 / 1000.0).astype(np.float32)
    path = tmp_path / "long.wav"
    sf.write(path, y, sr, subtype="FLOAT")
    segs = audio.segment_grid(50.0)
    blocks = list(audio.iter_blocks(path, segs, block_samples=10 * sr, context_s=2.0))
    assert len(blocks) > 1
    covered = np.concatenate([b.index for b in blocks])
    assert covered.tolist() == list(range(len(segs)))
    for b in blocks:
        # segments are relative to the block and the audio under them is the file's
        for (s, e), i in zip(b.segments, b.index):
            start = int(round((s + b.offset_s) * sr))
            assert s >= 0 and e * sr <= len(b.audio) + 1
            assert np.allclose(b.audio[int(round(s * sr)) : int(round(s * sr)) + 100], y[start : start + 100])
        assert b.segments[0, 0] >= min(2.0, b.offset_s + b.segments[0, 0]) - 1e-9
        assert len(b.audio) <= (10.0 + 4.0) * sr + 2


def test_excerpt_is_exact_and_not_normalised(tmp_path):
    sr = 16000
    y = tone(440, 4.0, sr, amp=0.1)
    path = tmp_path / "quiet.wav"
    sf.write(path, y, sr)
    import io

    data, rate = sf.read(io.BytesIO(audio.excerpt_wav(path, 1.25, 2.5)))
    assert rate == sr and len(data) == int(1.25 * sr)
    assert np.abs(data).max() == pytest.approx(0.1, abs=2e-3)
    assert np.allclose(data, y[int(1.25 * sr) : int(2.5 * sr)], atol=1e-4)


def test_content_hash_changes_with_content(tmp_path):
    p = tmp_path / "a.bin"
    p.write_bytes(b"abc")
    h1 = audio.content_hash(p)
    p.write_bytes(b"abd")
    assert audio.content_hash(p) != h1


def test_find_audio_files_keeps_explicit_files_and_filters_folders(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.wav", "sub/b.FLAC", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    found, problems = audio.find_audio_files([tmp_path, tmp_path / "notes.txt"])
    assert [f.name for f in found] == ["a.wav", "b.FLAC", "notes.txt"] and problems == []


def test_odd_formats_from_the_real_world(shared_data):
    """MP3 inside .wav, A-law, 8-bit unsigned, 21276/22255 Hz, stereo: all decode."""
    folder = shared_data / "odd_formats"
    for path in sorted(folder.glob("*.wav")):
        y, sr = audio.load(path)
        meta = audio.info(path)
        assert sr == meta.sample_rate and len(y) > 0 and np.isfinite(y).all(), path.name


def test_a_float32_stereo_mix_is_the_float64_mean_rounded_bit_for_bit():
    """The fast two-channel float32 mix equals the float64 mean rounded once, wide and subnormal values included."""
    rng = np.random.default_rng(0)
    tiny = np.finfo(np.float32).tiny
    stereo = np.concatenate([
        rng.standard_normal((100_000, 2)) * 0.3,
        rng.standard_normal((1000, 2)) * np.array([1.0, 1e-9]),  # one channel far quieter than the other
        rng.uniform(-4, 4, (1000, 2)) * tiny,  # results below float32's normal range
        np.array([[tiny, -tiny], [3 * tiny / 2**23, 0.0], [1.0, 2**-24]]),
    ]).astype(np.float32)
    expected = stereo.astype(np.float64).mean(axis=1).astype(np.float32)
    mix = audio.to_mono(stereo, np.float32)
    assert mix.dtype == np.float32
    np.testing.assert_array_equal(mix.view(np.int32), expected.view(np.int32))

"""The demo collection (deterministic, labelled, structured) and the dsp baseline's exact definition."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from core import demo
from core.audio import resample
from core.extract import extract, read_metadata_csv
from core.models.base import load_model
from core.reduce import project
from core.store import Store
from tests.conftest import tone


def test_demo_is_deterministic_labelled_and_varied():
    specs = demo.clip_specs()
    assert specs == demo.clip_specs()
    assert len(specs) >= 120 and len({s["family"] for s in specs}) >= 6
    assert all(2.0 <= s["duration_s"] <= 10.0 for s in specs)
    assert {"family", "pitch", "variant"} <= set(specs[0])
    y1, y2 = demo.render(specs[5]), demo.render(specs[5])
    assert np.array_equal(y1, y2) and np.isfinite(y1).all() and np.abs(y1).max() == pytest.approx(0.8, abs=1e-3)


def test_dsp_is_the_documented_log_mel_statistics():
    adapter = load_model("dsp")
    sr = 22050
    y = tone(440, 6.0, sr) + 0.01 * np.random.default_rng(0).normal(size=6 * sr).astype(np.float32)
    segs = np.array([[0.0, 3.0], [3.0, 6.0], [1.0, 1.01]])
    out = adapter.embed(y, sr, segs)["dsp"]
    assert out.shape == (3, 128) and out.dtype == np.float32 and np.isfinite(out).all()
    y16 = resample(y, sr, 16000)
    mel = librosa.feature.melspectrogram(y=y16, sr=16000, n_fft=1024, hop_length=512, n_mels=64, pad_mode="constant")
    logmel = np.log10(mel + 1e-6).T
    frames = np.arange(len(logmel)) * 512 / 16000
    first = logmel[(frames >= 0) & (frames < 3.0)]
    assert np.allclose(out[0, :64], first.mean(0), atol=1e-4)
    assert np.allclose(out[0, 64:], first.std(0), atol=1e-3)
    # a segment holding no frame centre uses the nearest frame, std 0
    assert np.allclose(out[2, :64], logmel[int(round(1.005 * 16000 / 512))], atol=1e-5)
    assert np.all(out[2, 64:] == 0)
    assert np.array_equal(out, adapter.embed(y, sr, segs)["dsp"])


@pytest.mark.slow
def test_demo_maps_show_structure_by_family(tmp_path):
    folder = tmp_path / "demo"
    csv = demo.build(folder)
    db = tmp_path / "demo.duckdb"
    report = extract([folder], ["dsp"], db=db, metadata=read_metadata_csv(csv, [folder]))
    assert report.stored == len(demo.clip_specs()) and not report.failures
    store = Store(db)
    ids, x = store.vectors("dsp")
    seg = store.segments_frame().set_index("segment_id").loc[ids]
    family = np.asarray(seg["family"].astype(str))
    tracks = np.asarray(seg["track_id"])
    xy, _ = project(x, "pca")
    # 5-NN family accuracy on the 2-D map, never with a segment of the same track on both sides
    acc = cross_val_score(KNeighborsClassifier(5), xy, family, groups=tracks, cv=GroupKFold(5)).mean()
    assert acc > 0.6, acc  # chance is 1/8


@pytest.mark.slow
def test_the_demo_embeds_a_general_model_and_the_baseline(tmp_path):
    db = tmp_path / "demo.duckdb"
    report = demo.load_demo(db, folder=tmp_path / "demo")
    assert report.stored == len(demo.clip_specs()) and not report.failures
    stored = set(Store(db).spaces()["space"])
    assert demo.DEMO_BASELINE in stored and len(stored & set(demo.DEMO_MODELS)) == 1  # Compare opens with two models

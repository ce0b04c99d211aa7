"""The MusiCNN/VGG port against the original musicnn 0.1.0 (../shared/reference/musicnn).

* Network only: the stored exact log-mel patches without ``inf`` against the
  original's outputs for those patches (taggram, logits, penultimate/pool5
  ≤ 1e-4; mean/max pool ≤ 1e-3; intermediate layers of one patch).
* Whole pipeline, from the audio file: every musicnn patch against the float32
  variant ``f32/`` (the exact variant's float16 log-mel overflows on most music).
* Short clips (< 3 s, where musicnn crashes): the front end against the stored
  ``spec``, and the documented repeat-padding.
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from core.audio import load as load_audio
from core.audio import resample, segment_grid
from core.models import musicnn, weights
from core.models.base import ModelError, ModelUnavailable
from tests.conftest import embed_in_blocks

ENTRIES = {e.key: e for e in musicnn.CATALOGUE}
CHECKPOINTS = {"musicnn-msd": "MSD_musicnn", "musicnn-mtt": "MTT_musicnn", "vgg-msd": "MSD_vgg", "vgg-mtt": "MTT_vgg"}
CLIPS_WITH_PATCHES = [
    "2-104168-A-32.flac", "3-132852-A-10.flac", "4-125825-A-46.flac", "4-182395-A-0.flac",
    "guit_harmonics.flac", "perc_bell.flac", "trumpet.ogg", "choice.ogg", "brahms.ogg", "sweetwaltz.ogg",
]
SHORT_CLIPS = ["acoustic_grand_piano_p060_v112.flac", "violin_p069_v112.flac"]
#: The three long OGGs hold 39 of the 47 reference patches; they run in the slow set.
LONG = {"choice.ogg", "brahms.ogg", "sweetwaltz.ogg"}
PATCH_S = musicnn.PATCH_FRAMES * musicnn.HOP / musicnn.SAMPLE_RATE


def decode(path) -> tuple[np.ndarray, int]:
    """What ``core.audio.load`` does (and musicnn's ``librosa.load`` before resampling): mean over channels, float32."""
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return data.mean(axis=1, dtype=np.float32), sr


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def adapters(session_cache):
    """Adapters loaded on first use, shared by the tests of this module."""
    loaded = {}

    def get(key: str):
        if key not in loaded:
            try:
                loaded[key] = musicnn.load(ENTRIES[key], "cpu")
            except ModelUnavailable as exc:
                pytest.skip(str(exc))
        return loaded[key]

    return get


@pytest.fixture(scope="module")
def golden(reference):
    files = {}

    def get(key: str):
        if key not in files:
            files[key] = np.load(reference / "musicnn" / f"{CHECKPOINTS[key]}.npz")
        return files[key]

    return get


# --------------------------------------------------------------------------- catalogue and rules

def test_catalogue_declares_four_taggers_with_a_taggram_space():
    assert list(ENTRIES) == ["musicnn-msd", "musicnn-mtt", "vgg-msd", "vgg-mtt"]
    for key, entry in ENTRIES.items():
        assert entry.family == "musicnn" and entry.sample_rate == 16_000
        assert entry.spaces == {key: 200 if key.startswith("musicnn") else 256, f"{key}/taggram": 50}
        assert "music" in entry.suited_for


def test_availability_reports_the_four_keys_available_without_loading():
    for entry in ENTRIES.values():
        ok, reason = musicnn.availability(entry)
        assert ok, reason
        if weights.installed_package_dir("musicnn") is not None:
            assert reason == ""


def test_segment_patches_follow_the_documented_rules():
    n_frames = 1 + 160_000 // 256  # 10 s at 16 kHz: 626 frames
    patches = musicnn.segment_patches(
        np.array([[0.0, 3.0], [PATCH_S, 2 * PATCH_S], [0.0, 10.0], [9.0, 10.0], [10.0, 10.0], [4.0, 4.01]]),
        n_frames, 10.0,
    )
    assert [p.shape for p in patches] == [(1, 187), (1, 187), (3, 187), (1, 187), (1, 187), (1, 187)]
    np.testing.assert_array_equal(patches[0][0], np.arange(187))  # musicnn's first patch
    np.testing.assert_array_equal(patches[1][0], 187 + np.arange(187))  # musicnn's second patch
    assert patches[2][:, 0].tolist() == [0, 220, 439] and patches[2].max() == n_frames - 1  # spans the segment
    np.testing.assert_array_equal(patches[3][0], 563 + np.arange(187) % 63)  # tail to the end, repeat-padded
    np.testing.assert_array_equal(patches[4][0], np.full(187, n_frames - 1))  # no frame: the nearest one
    assert set(patches[5][0].tolist()) == {250}  # a 10 ms segment holds one frame centre
    short = musicnn.segment_patches(np.array([[0.0, 2.0]]), 126, 2.0)[0]
    np.testing.assert_array_equal(short[0], np.arange(187) % 126)  # every frame of a 2 s clip, tiled


def test_log_mel_stays_finite_where_musicnns_float16_overflows():
    sr = 22_050
    t = np.arange(sr) / sr
    y = (0.9 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    spec = musicnn.log_mel(y, sr)
    assert spec.shape == (1 + 16_000 // 256, 96) and spec.dtype == np.float32
    assert np.isfinite(spec).all()
    mel = (10.0 ** spec.astype(np.float64) - 1) / 10_000
    with np.errstate(over="ignore"):
        assert (np.float16(10_000) * mel.astype(np.float16) == np.inf).any()  # the original's input would hold inf


def test_embed_contract_on_synthetic_audio(adapters):
    adapter = adapters("musicnn-msd")
    sr = 22_050
    rng = np.random.default_rng(0)
    t = np.arange(int(7.3 * sr)) / sr
    y = (0.3 * np.sin(2 * np.pi * (220 + 80 * t) * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    grid = segment_grid(len(y) / sr)
    segments = np.vstack([grid, [[0.0, 7.3], [5.0, 5.005]]])
    first = adapter.embed(y, sr, segments)
    again = adapter.embed(y, sr, segments)
    assert set(first) == set(ENTRIES["musicnn-msd"].spaces)
    for space, dim in ENTRIES["musicnn-msd"].spaces.items():
        assert first[space].shape == (len(segments), dim) and first[space].dtype == np.float32
        assert np.isfinite(first[space]).all()
        np.testing.assert_array_equal(first[space], again[space])
    taggram = first["musicnn-msd/taggram"]
    assert ((taggram > 0) & (taggram < 1)).all()
    alone = adapter.embed(y, sr, grid[:1])["musicnn-msd"]
    np.testing.assert_allclose(alone[0], first["musicnn-msd"][0], atol=1e-4)
    empty = adapter.embed(y, sr, np.zeros((0, 2)))
    assert {k: v.shape for k, v in empty.items()} == {"musicnn-msd": (0, 200), "musicnn-msd/taggram": (0, 50)}
    assert adapter.tag_names == {"musicnn-msd/taggram": adapter.tag_names["musicnn-msd/taggram"]}
    assert len(adapter.tag_names["musicnn-msd/taggram"]) == 50


@pytest.mark.parametrize("sr", [16000, 44100])
def test_blocks_of_a_long_file_embed_as_the_whole_track(adapters, tmp_path, sr):
    """Through the pipeline's block reader with short blocks forced.

    Blocks start at whole seconds, i.e. half a frame off the track's grid in
    every other block, unless they are cut to it.  At 16 kHz the frames are
    then the whole file's bit for bit; at 44.1 kHz soxr restarts at each
    block, which moves the rows by its rounding only.
    """
    adapter = adapters("musicnn-msd")
    rng = np.random.default_rng(5)
    path = tmp_path / "long.wav"
    t = np.arange(14 * sr) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * 330 * t * (1 + t / 14)) + 0.05 * rng.standard_normal(len(t))).astype(np.float32),
             sr, subtype="FLOAT")
    segments = segment_grid(14.0)
    whole, n_whole = embed_in_blocks(adapter, path, segments, 1e9)
    blocked, n_blocks = embed_in_blocks(adapter, path, segments, 5.0)
    assert (n_whole, n_blocks) == (1, 4)
    tolerance = 1e-5 if sr == 16000 else 1e-3
    for space, rows in whole.items():
        np.testing.assert_allclose(blocked[space], rows, rtol=0, atol=tolerance * np.abs(rows).max())


# --------------------------------------------------------------------------- weights

def _fake_extracted_wheel(monkeypatch, tmp_path, files: dict[str, bytes]) -> None:
    """Make ``packaged_file`` find the musicnn files only in an extracted-wheel cache we fill."""
    monkeypatch.setattr(weights, "installed_package_dir", lambda package: None)
    monkeypatch.setenv("AEB_CACHE", str(tmp_path))
    root = tmp_path / "packages" / "musicnn-0.1.0" / "musicnn"
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def _wheel_file(rel: str) -> bytes:
    try:
        return weights.packaged_file("musicnn", "0.1.0", rel, musicnn.WHEEL_SHA256).read_bytes()
    except ModelUnavailable as exc:
        pytest.skip(str(exc))


def test_truncated_checkpoint_is_a_model_error_naming_the_file(monkeypatch, tmp_path):
    files = {rel: _wheel_file(rel) for rel in
             ("MSD_vgg/.index", "MSD_vgg/.data-00000-of-00001", "configuration.py")}
    files["MSD_vgg/.data-00000-of-00001"] = files["MSD_vgg/.data-00000-of-00001"][:1_000_000]
    _fake_extracted_wheel(monkeypatch, tmp_path, files)
    with pytest.raises(ModelError, match=r"MSD_vgg/\.data-00000-of-00001 is truncated"):
        musicnn.load(ENTRIES["vgg-msd"], "cpu")


def test_checkpoint_of_another_architecture_is_a_model_error(monkeypatch, tmp_path):
    files = {"MSD_musicnn/.index": _wheel_file("MSD_vgg/.index"),
             "MSD_musicnn/.data-00000-of-00001": _wheel_file("MSD_vgg/.data-00000-of-00001")}
    _fake_extracted_wheel(monkeypatch, tmp_path, files)
    with pytest.raises(ModelError, match=r"MSD_musicnn/\.index lacks the variable"):
        musicnn.load(ENTRIES["musicnn-msd"], "cpu")


def test_missing_wheel_offline_is_model_unavailable(monkeypatch, tmp_path):
    _fake_extracted_wheel(monkeypatch, tmp_path, {})
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(ModelUnavailable, match=r"MSD_musicnn weights are missing: musicnn==0\.1\.0 is not installed"):
        musicnn.load(ENTRIES["musicnn-msd"], "cpu")


# --------------------------------------------------------------------------- against the original

@pytest.mark.reference
@pytest.mark.parametrize("key", list(ENTRIES))
def test_network_matches_original_on_its_exact_inputs(key, adapters, golden):
    z = golden(key)
    adapter = adapters(key)
    outputs = ["taggram", "logits"] + (["penultimate", "mean_pool", "max_pool"] if key.startswith("musicnn")
                                       else ["pool5_flat"])
    tolerance = {"taggram": 1e-4, "logits": 1e-4, "penultimate": 1e-4, "pool5_flat": 1e-4,
                 "mean_pool": 1e-3, "max_pool": 1e-3}
    checked = 0
    for clip in CLIPS_WITH_PATCHES:
        clean = z[f"{clip}/mel_n_inf"] == 0
        if not clean.any():
            continue
        with torch.inference_mode():
            got = adapter.net(torch.from_numpy(z[f"{clip}/mel"][clean].astype(np.float32)))
        for name in outputs:
            np.testing.assert_allclose(got[name].numpy(), z[f"{clip}/{name}"][clean], rtol=0, atol=tolerance[name],
                                       err_msg=f"{key} {clip} {name}")
        checked += int(clean.sum())
    assert checked == 10  # church_bells 1, keyboard_typing 1, perc_bell 2, brahms 2, sweetwaltz 4

    with torch.inference_mode():
        got = adapter.net(torch.from_numpy(z["perc_bell.flac/mel"][1:2].astype(np.float32)))
    layers = [n for n in z.files if n.startswith("_debug/perc_bell.flac/patch1/")]
    assert len(layers) == (5 if key.startswith("musicnn") else 4)
    for name in layers:
        layer = name.rsplit("/", 1)[1]
        np.testing.assert_allclose(got[layer][0].numpy(), z[name], rtol=0, atol=1e-3, err_msg=f"{key} {layer}")


@pytest.mark.reference
@pytest.mark.parametrize("clip", [pytest.param(c, marks=pytest.mark.slow) if c in LONG else c
                                  for c in CLIPS_WITH_PATCHES])
def test_pipeline_matches_the_float32_original(clip, adapters, golden, reference):
    y, sr = decode(reference / "audio" / clip)
    spec = musicnn.log_mel(y, sr)
    n_16k = len(resample(y, sr, musicnn.SAMPLE_RATE))
    for key in ENTRIES:
        z = golden(key)
        assert len(spec) == z[f"{clip}/n_frames_total"]
        assert n_16k == z[f"{clip}/n_samples_16k"]
        starts = z[f"{clip}/patch_start_frame"] * musicnn.HOP / musicnn.SAMPLE_RATE
        patches = np.stack([starts, starts + PATCH_S], axis=1)
        rows = adapters(key).embed(y, sr, np.vstack([patches, segment_grid(len(y) / sr)[:1]]))
        name = "penultimate" if key.startswith("musicnn") else "pool5_flat"
        ours, theirs = rows[key][:-1], z[f"{clip}/f32/{name}"]
        grid_first = rows[key][-1:]
        cos = cosine(ours, theirs)
        diff_emb = np.abs(ours - theirs).max()
        diff_tags = np.abs(rows[f"{key}/taggram"][:-1] - z[f"{clip}/f32/taggram"]).max()
        print(f"{key:12s} {clip:22s} patches {len(cos):2d}  cosine min {cos.min():.7f}  "
              f"max|diff| {name} {diff_emb:.1e} taggram {diff_tags:.1e}")
        assert cos.min() >= 0.9999, (key, clip, cos)
        assert diff_emb <= 1e-3 and diff_tags <= 1e-4, (key, clip, diff_emb, diff_tags)
        assert cosine(grid_first, theirs[:1])[0] >= 0.99, (key, clip)


@pytest.mark.reference
@pytest.mark.parametrize("clip", SHORT_CLIPS)
def test_short_clip_front_end_and_repeat_padding(clip, adapters, golden, reference):
    y, sr = decode(reference / "audio" / clip)
    spec = musicnn.log_mel(y, sr)
    z = golden("musicnn-msd")
    assert z[f"{clip}/taggram"].shape == (0, 50)  # the original produced nothing (it crashes)
    np.testing.assert_allclose(spec, z[f"{clip}/f32/spec"], rtol=0, atol=1e-5)
    exact = z[f"{clip}/spec"].astype(np.float32)
    finite = np.isfinite(exact)
    np.testing.assert_allclose(spec[finite], exact[finite], rtol=2e-3, atol=2e-3)  # float16 rounding

    padded = spec[np.arange(musicnn.PATCH_FRAMES) % len(spec)][None]
    for key in ENTRIES:
        adapter = adapters(key)
        rows = adapter.embed(y, sr, segment_grid(len(y) / sr))
        with torch.inference_mode():
            expected = {name: value.numpy() for name, value in adapter.network(torch.from_numpy(padded)).items()}
        assert np.isfinite(rows[key]).all()
        np.testing.assert_allclose(rows[key], expected["embedding"], atol=1e-5)
        np.testing.assert_allclose(rows[f"{key}/taggram"], expected["taggram"], atol=1e-6)


@pytest.mark.reference
def test_tag_names_are_musicnns_labels(adapters, golden):
    for key in ENTRIES:
        assert adapters(key).tag_names[f"{key}/taggram"] == [str(s) for s in golden(key)["labels"]]
    assert adapters("musicnn-msd").tag_names["musicnn-msd/taggram"][:2] == ["rock", "pop"]


# --------------------------------------------------------------------------- quality on real data

@pytest.mark.slow
@pytest.mark.integration
def test_esc10_nearest_neighbour_beats_chance(adapters, shared_data):
    """Leave-one-out 1-NN (cosine) over the ESC-10 clips, neighbours from other source recordings only.

    The full figures (all 414 clips, gm_notes across soundfonts, taggrams and
    the dsp baseline) are in the issue note; this keeps a cheap guard in CI.
    """
    meta = pd.read_csv(shared_data / "esc50_subset" / "metadata.csv")
    meta = meta[meta["esc10"]].reset_index(drop=True)
    adapter = adapters("musicnn-msd")
    rows = []
    for rel in meta["path"]:
        y, sr = load_audio(shared_data / "esc50_subset" / rel)
        rows.append(adapter.embed(y, sr, np.array([[0.0, 3.0]]))["musicnn-msd"][0])
    x = np.array(rows)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    similarity = x @ x.T
    src = meta["src_file"].astype(str).to_numpy()
    similarity[src[:, None] == src[None, :]] = -np.inf
    labels = meta["category"].to_numpy()
    accuracy = float((labels[similarity.argmax(axis=1)] == labels).mean())
    print(f"musicnn-msd ESC-10 1-NN accuracy {accuracy:.3f} over {len(meta)} clips (chance 0.1)")
    assert accuracy >= 0.5


def test_patch_items_give_the_blocks_log_mel_frames(adapters):
    """Each item's log-mel, computed from the samples its patch spans, is the whole block's, tiling included."""
    adapter = adapters("musicnn-msd")
    sr = 22_050
    t = np.arange(int(7.3 * sr)) / sr
    y = (0.3 * np.sin(2 * np.pi * (220 + 80 * t) * t)).astype(np.float32)
    segments = np.vstack([segment_grid(len(y) / sr), [[0.0, 7.3], [5.0, 5.005], [7.2, 7.3]]])
    prepared = adapter.preparer(y, sr, segments)
    (inputs, lengths), = prepared.parts
    assert inputs.shape == (prepared.n_items, musicnn.PATCH_SAMPLES) and lengths.min() < musicnn.PATCH_FRAMES
    with torch.inference_mode():
        ours = adapter.frontend(torch.from_numpy(inputs), torch.from_numpy(lengths)).numpy()
    spec = musicnn.log_mel(y, sr)
    frames = np.concatenate(musicnn.segment_patches(segments, len(spec), len(y) / sr))
    np.testing.assert_allclose(ours, spec[frames], rtol=0, atol=1e-6 * spec.max())

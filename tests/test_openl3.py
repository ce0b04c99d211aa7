"""OpenL3 port against openl3 0.4.2's own outputs (../shared/reference/openl3).

The reference weights are random Keras files in the official layout; they are
loaded exactly like official ones, through ``OPENL3_WEIGHTS_DIR`` under the
official file names.  OpenL3 costs 0.1-0.5 s per 1 s window on two CPU cores,
so the quick tests compare selected windows of short clips and the slow ones
a few windows of every clip.

Measured on these clips (errors x max|reference| of the clip and repr):

* resampler: the 48 kHz signal equals openl3's bit for bit in the stored
  heads; sums and sums of squares agree to 1e-14;
* frontend: <= 1.6e-5 dB in every cell, quiet ones included (88-99 % bit-identical);
* network alone, on openl3's own frontend output: <= 4e-6;
* whole pipeline from the file, all 510 stored windows of the 12 clips:
  worst 3.4e-6 (mel128), 3.5e-6 (mel256), 3.8e-6 (linear).

The tests hold everything to the issue's tolerances (1e-3 of the range,
1e-2 dB).  They fail for each of the shortcuts that came close: resampy
>= 0.3's interpolator (1e-3-3e-3 off), numpy's cosine or a float64 window,
torch's MKL FFT, ``hypot`` or a float32 stereo mix (up to 9e-3 off on the
linear frontend, whose quiet cells carry TensorFlow's float32 rounding).
"""

from __future__ import annotations

import gzip
import hashlib
import shutil

import h5py
import numpy as np
import pytest
import soundfile as sf

from core import audio as audio_io
from core.models import openl3, stages
from core.models.base import ModelError, ModelUnavailable
from tests.conftest import embed_in_blocks

REPRS = ("mel128", "mel256", "linear")
SHORT_CLIPS = ("violin_p069_v112.flac", "acoustic_grand_piano_p060_v112.flac", "guit_harmonics.flac",
               "4-182395-A-0.flac", "4-125825-A-46.flac", "2-104168-A-32.flac", "3-132852-A-10.flac",
               "trumpet.ogg", "perc_bell.flac")
LONG_CLIPS = ("choice.ogg", "brahms.ogg", "sweetwaltz.ogg")
FRONTEND_CLIPS = ("trumpet.ogg", "violin_p069_v112.flac")


#: The issue's tolerance on embeddings, x max|reference| of the clip and representation.
TOLERANCE = 1e-3


def decode(path) -> tuple[np.ndarray, int]:
    """What the pipeline hands the OpenL3 adapter: ``core.audio.load`` at its entry's ``input_dtype``."""
    return audio_io.load(path, dtype=openl3.CATALOGUE[0].input_dtype)


def reference_weights(reference, input_repr: str):
    return reference / "openl3" / f"openl3_audio_{input_repr}_music-random.h5"


def entry(input_repr: str, size: int = 512, hop_s: float = 0.1):
    key = f"openl3-{input_repr}-music-{size}" + ("" if hop_s == 0.1 else f"-hop{hop_s:g}")
    return next(e for e in openl3.CATALOGUE if e.key == key)


@pytest.fixture(scope="session")
def weights_dir(reference, tmp_path_factory):
    """The reference files under their official names, as a user would lay them out."""
    folder = tmp_path_factory.mktemp("openl3-weights")
    for input_repr in REPRS:
        (folder / openl3.weight_file_name(input_repr, "music")).symlink_to(reference_weights(reference, input_repr))
    return folder


@pytest.fixture(scope="session")
def adapters(weights_dir):
    """Adapters loaded through ``openl3.load``, shared by the tests (loading reads and hashes 18 MB)."""
    loaded = {}

    def get(input_repr: str, size: int = 512):
        if (input_repr, size) not in loaded:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv(openl3.WEIGHTS_ENV, str(weights_dir))
                loaded[input_repr, size] = openl3.load(entry(input_repr, size), "cpu")
        return loaded[input_repr, size]

    return get


@pytest.fixture(scope="session")
def golden(reference):
    return {r: np.load(reference / "openl3" / f"{r}.npz") for r in REPRS}


# --------------------------------------------------------------------------- catalogue


def test_catalogue_covers_every_representation_content_and_size():
    keys = [e.key for e in openl3.CATALOGUE]
    expected = {f"openl3-{r}-{c}-{s}" for r in REPRS for c in ("music", "env") for s in (512, 6144)}
    assert expected <= set(keys)
    assert len(keys) == len(set(keys)) == len(expected) + 2
    for e in openl3.CATALOGUE:
        assert e.family == "openl3" and e.sample_rate == 48000
        assert e.dim == e.params["embedding_size"]
        assert e.key.startswith(f"openl3-{e.params['input_repr']}-{e.params['content_type']}-{e.dim}")
        assert e.params["hop_s"] == (0.5 if e.key.endswith("-hop0.5") else 0.1)


# --------------------------------------------------------------------------- resampler and framing


def check_resampled(reference, clip):
    audio, sr = decode(reference / "audio" / clip)
    stored = np.load(reference / "openl3" / "audio48k.npz")
    y, first = openl3.resample(audio, sr)
    assert first == 0
    assert y.dtype == np.float64 and len(y) == int(stored[f"{clip}/n_samples"])
    # Bit for bit: the quiet cells of the frontend show even 1-ulp differences.
    np.testing.assert_array_equal(y[:4800].astype(np.float32), stored[f"{clip}/head"])
    assert abs(np.sum(y**2) / stored[f"{clip}/sumsq"] - 1) < 1e-13
    assert abs(np.sum(y) - stored[f"{clip}/sum"]) < 1e-13 * np.abs(y).sum()


@pytest.mark.reference
@pytest.mark.parametrize("clip", SHORT_CLIPS)
def test_resampler_is_resampy_02_kaiser_best(reference, clip):
    check_resampled(reference, clip)


@pytest.mark.reference
@pytest.mark.slow
@pytest.mark.parametrize("clip", LONG_CLIPS)
def test_resampler_is_resampy_02_kaiser_best_long(reference, clip):
    check_resampled(reference, clip)


@pytest.mark.reference
def test_window_count_and_timestamps_follow_openl3(reference, golden):
    stored = np.load(reference / "openl3" / "audio48k.npz")
    for clip in SHORT_CLIPS + LONG_CLIPS:
        n = openl3.window_count(int(stored[f"{clip}/n_samples"]))
        assert n == int(golden["mel128"][f"{clip}/n_windows"])
        np.testing.assert_allclose(np.arange(n) * openl3.DEFAULT_HOP_S, golden["mel128"][f"{clip}/ts"], atol=1e-12)
    assert openl3.window_count(100) == 1
    assert openl3.window_count(24001) == 2


def test_frames_are_centred_and_zero_padded():
    audio = np.arange(1, 60001, dtype=np.float64)
    windows = openl3.frame_windows(audio, np.array([0, 1, 8]))
    assert windows.shape == (3, 48000)
    assert np.all(windows[0, :24000] == 0) and windows[0, 24000] == 1
    assert windows[1, 24000] == audio[4800]
    assert windows[2, 0] == audio[8 * 4800 - 24000] and np.all(windows[2, 60000 - 14400 :] == 0)


# --------------------------------------------------------------------------- frontend and network


@pytest.mark.reference
@pytest.mark.parametrize("input_repr", REPRS)
@pytest.mark.parametrize("clip", FRONTEND_CLIPS)
def test_frontend_matches_kapre(reference, golden, input_repr, clip):
    audio, sr = decode(reference / "audio" / clip)
    windows = openl3.frame_windows(openl3.resample(audio, sr)[0], np.arange(3))
    ours = openl3.frontend(windows, input_repr)[:, 0]
    ref = golden[input_repr][f"{clip}/frontend"][..., 0]
    assert ours.shape == ref.shape
    assert np.all(ours.max(axis=(1, 2)) == 0) and ours.min() >= -80
    assert np.abs(ours - ref).max() <= 1e-2


@pytest.mark.reference
@pytest.mark.parametrize("input_repr", REPRS)
def test_network_matches_keras_on_its_own_input(reference, golden, input_repr):
    """The network and both poolings, fed openl3's own frontend output."""
    import torch

    ref = golden[input_repr]
    clip = "trumpet.ogg"
    net = openl3._network(openl3.read_weights(reference_weights(reference, input_repr)))
    with torch.inference_mode():
        feature_map = net(torch.from_numpy(ref[f"{clip}/frontend"]).permute(0, 3, 1, 2))
    emb512 = openl3.pool_embedding(feature_map, input_repr, 512).numpy()
    emb6144 = openl3.pool_embedding(feature_map, input_repr, 6144).numpy()
    scale = np.abs(ref[f"{clip}/emb512"]).max()
    assert list(ref[f"{clip}/idx"][:3]) == [0, 1, 2] and list(ref[f"{clip}/idx6144"][:2]) == [0, 1]
    assert np.abs(emb512 - ref[f"{clip}/emb512"][:3]).max() <= 1e-4 * scale
    assert np.abs(emb6144[:2] - ref[f"{clip}/emb6144"][:2]).max() <= 1e-4 * scale
    np.testing.assert_array_equal(emb512, emb6144.reshape(3, 4, 3, 512).max(axis=(1, 2)))


# --------------------------------------------------------------------------- whole pipeline


def check_windows(adapters, golden, reference, input_repr, clip, rows, size=512):
    """Embed one-window segments through ``embed`` and compare the chosen reference rows."""
    ref = golden[input_repr]
    idx, key = (f"{clip}/idx", f"{clip}/emb512") if size == 512 else (f"{clip}/idx6144", f"{clip}/emb6144")
    windows = ref[idx][rows]
    audio, sr = decode(reference / "audio" / clip)
    centres = windows * openl3.DEFAULT_HOP_S
    segments = np.stack([centres - 0.05, centres + 0.05], axis=1)
    adapter = adapters(input_repr, size)
    out = adapter.embed(audio, sr, segments)[adapter.entry.key]
    assert out.shape == (len(rows), size) and out.dtype == np.float32
    scale = np.abs(ref[f"{clip}/emb512"]).max()
    assert np.abs(out - ref[key][rows]).max() <= TOLERANCE * scale


@pytest.mark.reference
@pytest.mark.parametrize("input_repr", REPRS)
def test_pipeline_from_file_short_clip(reference, golden, adapters, input_repr):
    clip = "violin_p069_v112.flac"
    check_windows(adapters, golden, reference, input_repr, clip, [0, 3, 4])
    check_windows(adapters, golden, reference, input_repr, clip, [0, 2], size=6144)


@pytest.mark.reference
@pytest.mark.slow
@pytest.mark.parametrize("input_repr", REPRS)
def test_pipeline_from_file_every_clip(reference, golden, adapters, input_repr):
    """A middle stored window and the last one of every clip."""
    for clip in SHORT_CLIPS + LONG_CLIPS:
        n_stored = len(golden[input_repr][f"{clip}/idx"])
        check_windows(adapters, golden, reference, input_repr, clip, [n_stored // 2, n_stored - 1])


@pytest.mark.reference
@pytest.mark.slow
@pytest.mark.parametrize("input_repr", REPRS)
def test_segment_mean_and_window_statistics(reference, golden, adapters, input_repr):
    """All 16 windows of a note: the segment mean, and openl3's max/min over windows."""
    clip = "acoustic_grand_piano_p060_v112.flac"
    ref = golden[input_repr]
    audio, sr = decode(reference / "audio" / clip)
    adapter = adapters(input_repr)
    centres = np.arange(int(ref[f"{clip}/n_windows"])) * openl3.DEFAULT_HOP_S
    one_window_each = np.stack([centres - 0.05, centres + 0.05], axis=1)
    out = adapter.embed(audio, sr, np.vstack([one_window_each, [[0.0, 10.0]]]))[adapter.entry.key]
    windows, mean = out[:-1], out[-1]
    scale = np.abs(ref[f"{clip}/emb512"]).max()
    tol = TOLERANCE * scale
    assert np.abs(mean - ref[f"{clip}/emb512_mean"]).max() <= tol
    assert np.abs(windows.max(axis=0) - ref[f"{clip}/emb512_max"]).max() <= tol
    assert np.abs(windows.min(axis=0) - ref[f"{clip}/emb512_min"]).max() <= tol
    np.testing.assert_allclose(windows.mean(axis=0), mean, rtol=0, atol=1e-5 * scale)


# --------------------------------------------------------------------------- weights built here


def write_keras2(path, layers, as_bytes=True):
    """Write weighted layers in the legacy Keras-2 HDF5 layout, with a weightless layer first."""
    enc = (lambda s: s.encode()) if as_bytes else (lambda s: s)
    names = ["input_1"] + [f"layer_{i}" for i in range(len(layers))]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [enc(n) for n in names]
        f.create_group("input_1").attrs["weight_names"] = np.zeros(0)
        for name, arrays in zip(names[1:], layers):
            group = f.create_group(name)
            weight_names = [f"{name}/w{j}:0" for j in range(len(arrays))]
            group.attrs["weight_names"] = [enc(w) for w in weight_names]
            for weight_name, array in zip(weight_names, arrays):
                group.create_dataset(weight_name, data=array)


def random_layers(seed: int = 0) -> list[list[np.ndarray]]:
    """Arrays in the official shapes: He-scaled kernels, non-trivial biases and batch norms."""
    rng = np.random.default_rng(seed)
    layers = []
    for kind, shapes in openl3._expected_layers():
        if kind == "conv":
            kernel_shape, bias_shape = shapes
            fan_in = np.prod(kernel_shape[:3])
            layers.append([rng.normal(0, np.sqrt(2 / fan_in), kernel_shape), rng.normal(0, 0.1, bias_shape)])
        else:
            (c,) = shapes[0]
            layers.append([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c),
                           rng.normal(0, 0.1, c), rng.uniform(0.5, 1.5, c)])
    return [[a.astype(np.float32) for a in arrays] for arrays in layers]


@pytest.fixture(scope="session")
def synthetic_weights(tmp_path_factory):
    """A weight folder for mel128/music in the official layout, independent of ../shared."""
    folder = tmp_path_factory.mktemp("openl3-synthetic")
    write_keras2(folder / openl3.weight_file_name("mel128", "music"), random_layers())
    return folder


@pytest.fixture(scope="session")
def synthetic_adapter(synthetic_weights):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(openl3.WEIGHTS_ENV, str(synthetic_weights))
        return openl3.load(entry("mel128"), "cpu")


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A cache of this test's own, so that downloads and cache hits leak into no other test."""
    monkeypatch.setenv("AEB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --------------------------------------------------------------------------- segments


def window_embeddings(adapter, audio48: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The embeddings of openl3's windows ``indices`` of 48 kHz audio, through the adapter's stages."""
    parts = adapter.preparer.spectrograms(audio48, indices)
    return stages.run_items(adapter, stages.Prepared(len(indices), parts, None))["embedding"]


def test_segments_pool_window_centres_and_fall_back_to_the_nearest(synthetic_adapter):
    """[start, end) over openl3's timestamps; an empty segment takes the nearest window."""
    adapter = synthetic_adapter
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1  # 1 s at 16 kHz
    windows = window_embeddings(adapter, openl3.resample(audio, 16000)[0], np.arange(6))  # centres 0 .. 0.5 s
    segments = np.array([[0.0, 0.25], [0.25, 0.26], [0.3, 0.5], [5.0, 6.0]])
    out = adapter.embed(audio, 16000, segments)["openl3-mel128-music-512"]
    scale = np.abs(windows).max()
    np.testing.assert_allclose(out[0], windows[:3].mean(axis=0), atol=1e-5 * scale)
    np.testing.assert_allclose(out[1], windows[3], atol=1e-5 * scale)  # midpoint 0.255 s: nearest centre 0.3 s
    np.testing.assert_allclose(out[2], windows[3:5].mean(axis=0), atol=1e-5 * scale)  # 0.5 s is excluded
    np.testing.assert_allclose(out[3], windows[5], atol=1e-5 * scale)  # past the end: the last window
    assert np.all(np.isfinite(out)) and len(np.unique(out[:3], axis=0)) == 3
    np.testing.assert_array_equal(out, adapter.embed(audio, 16000, segments)["openl3-mel128-music-512"])


def test_a_block_resamples_as_the_whole_track_does():
    """Bit for bit away from the block's edges: the time register is carried to the block's start."""
    rng = np.random.default_rng(2)
    track = rng.standard_normal(44100 * 6)
    whole, _ = openl3.resample(track, 44100)
    start, stop = 44100 * 2, 44100 * 5
    block, first = openl3.resample(track[start:stop], 44100, start)
    assert first == 96000
    edge = 100  # the filter reaches 64 input samples past each end
    np.testing.assert_array_equal(block[edge:-edge], whole[first + edge:first + len(block) - edge])


def test_blocks_of_a_long_file_embed_as_the_whole_track(synthetic_weights, tmp_path, monkeypatch):
    """Through the pipeline's own block reader, with blocks forced short."""
    from core.audio import segment_grid

    monkeypatch.setenv(openl3.WEIGHTS_ENV, str(synthetic_weights))
    adapter = openl3.load(entry("mel128", hop_s=0.5), "cpu")
    rng = np.random.default_rng(3)
    path = tmp_path / "long.flac"
    sf.write(path, (rng.standard_normal((44100 * 12, 2)) * 0.1).astype(np.float32), 44100)
    segments = segment_grid(12.0)
    whole, n_whole = embed_in_blocks(adapter, path, segments, 1e9)
    blocked, n_blocks = embed_in_blocks(adapter, path, segments, 5.0)
    assert (n_whole, n_blocks) == (1, 4)
    key = adapter.entry.key
    np.testing.assert_allclose(blocked[key], whole[key], rtol=0, atol=1e-6 * np.abs(whole[key]).max())


def test_faster_variant_frames_every_half_second(synthetic_weights, monkeypatch):
    monkeypatch.setenv(openl3.WEIGHTS_ENV, str(synthetic_weights))
    adapter = openl3.load(entry("mel128", hop_s=0.5), "cpu")
    audio = np.random.default_rng(1).standard_normal(22050).astype(np.float32) * 0.1  # 1 s at 22.05 kHz
    audio48, _ = openl3.resample(audio, 22050)
    assert openl3.window_count(len(audio48), 0.5) == 2
    windows = window_embeddings(adapter, audio48, np.arange(2))
    out = adapter.embed(audio, 22050, np.array([[0.0, 1.0]]))["openl3-mel128-music-512-hop0.5"]
    np.testing.assert_allclose(out[0], windows.mean(axis=0), atol=1e-5 * np.abs(windows).max())


# --------------------------------------------------------------------------- weights


def test_adapter_records_provenance(synthetic_weights, synthetic_adapter):
    path = synthetic_weights / openl3.weight_file_name("mel128", "music")
    assert synthetic_adapter.weights_path == path
    assert synthetic_adapter.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert isinstance(synthetic_adapter.version, str) and synthetic_adapter.tag_names == {}


@pytest.mark.reference
def test_reference_files_have_the_official_layout(reference):
    for input_repr in REPRS:
        layers = openl3.read_weights(reference_weights(reference, input_repr))
        assert len(layers) == 16 and sum(len(arrays) for arrays in layers) == 48
        assert sum(a.size for arrays in layers for a in arrays) == 4_689_860


def test_loader_follows_layer_names_and_accepts_str_attributes(synthetic_weights, tmp_path):
    layers = openl3.read_weights(synthetic_weights / openl3.weight_file_name("mel128", "music"))
    assert [[a.shape for a in arrays] for arrays in layers] == [shapes for _, shapes in openl3._expected_layers()]
    rewritten = tmp_path / "renamed.h5"
    write_keras2(rewritten, layers, as_bytes=False)
    again = openl3.read_weights(rewritten)
    assert all(np.array_equal(a, b) for x, y in zip(layers, again) for a, b in zip(x, y))


def test_wrong_shapes_are_refused_naming_the_file(tmp_path):
    layers = random_layers()
    layers[3] = [layers[3][0][:, :, :, :32], layers[3][1][:32]]
    bad = tmp_path / "openl3_audio_linear_music-v0_4_0.h5"
    write_keras2(bad, layers)
    with pytest.raises(ModelError, match="layer 'layer_3' has arrays of shapes") as err:
        openl3.read_weights(bad)
    assert str(bad) in str(err.value)
    write_keras2(bad, random_layers()[:-1])
    with pytest.raises(ModelError, match=r"it has 15 weighted layers \(46 arrays\)"):
        openl3.read_weights(bad)


def test_truncated_and_foreign_files_are_refused_naming_the_file(synthetic_weights, tmp_path, monkeypatch):
    name = openl3.weight_file_name("mel128", "music")
    truncated = tmp_path / name
    truncated.write_bytes((synthetic_weights / name).read_bytes()[:3_000_000])
    monkeypatch.setenv(openl3.WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(ModelError) as err:
        openl3.load(entry("mel128"), "cpu")
    assert str(truncated) in str(err.value) and not isinstance(err.value, ModelUnavailable)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ModelError, match="no 'layer_names'") as err:
        openl3.read_weights(foreign)
    assert str(foreign) in str(err.value)


def test_weights_are_found_in_documented_order(synthetic_weights, tmp_path, monkeypatch, own_cache):
    source = synthetic_weights / openl3.weight_file_name("mel128", "music")
    monkeypatch.delenv(openl3.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(openl3, "WEIGHTS_URL", "http://127.0.0.1:9/{name}.gz")
    assert openl3.local_weights("mel128", "music") is None

    cached = openl3.cache_dir() / "openl3" / openl3.weight_file_name("mel128", "music")
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.symlink_to(source)
    assert openl3.local_weights("mel128", "music") == cached

    package = tmp_path / "site" / "openl3"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('openl3 must never be imported')\n")
    (package / "openl3_audio_mel128_music.h5").symlink_to(source)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert openl3.local_weights("mel128", "music") == package / "openl3_audio_mel128_music.h5"

    env = tmp_path / "env"
    env.mkdir()
    (env / openl3.weight_file_name("mel128", "music")).symlink_to(source)
    monkeypatch.setenv(openl3.WEIGHTS_ENV, str(env))
    assert openl3.local_weights("mel128", "music") == env / openl3.weight_file_name("mel128", "music")
    assert openl3.availability(entry("mel128")) == (True, "")


def test_offline_without_weights_says_so_in_one_sentence(monkeypatch, own_cache):
    monkeypatch.delenv(openl3.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(openl3, "WEIGHTS_URL", "http://127.0.0.1:9/{name}.gz")
    e = entry("linear", 6144)
    available, reason = openl3.availability(e)
    assert not available
    assert "openl3_audio_linear_music-v0_4_0.h5" in reason and openl3.WEIGHTS_ENV in reason
    assert reason.count(". ") == 0 and "\n" not in reason
    with pytest.raises(ModelUnavailable, match=openl3.WEIGHTS_ENV) as err:
        openl3.load(e, "cpu")
    assert "Traceback" not in str(err.value) and "\n" not in str(err.value)


def test_download_checks_the_gzip_and_records_its_digest(synthetic_weights, tmp_path, monkeypatch, own_cache):
    monkeypatch.delenv(openl3.WEIGHTS_ENV, raising=False)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setattr(openl3, "WEIGHTS_URL", mirror.as_uri() + "/{name}.gz")
    name = openl3.weight_file_name("mel128", "env")
    e = next(x for x in openl3.CATALOGUE if x.key == "openl3-mel128-env-6144")

    (mirror / f"{name}.gz").write_bytes(b"<html>rate limited</html>")
    assert openl3.availability(e)[0]
    with pytest.raises(ModelError, match="not a valid OpenL3 weight file"):
        openl3.load(e, "cpu")

    source = synthetic_weights / openl3.weight_file_name("mel128", "music")
    with open(source, "rb") as src, gzip.open(mirror / f"{name}.gz", "wb", compresslevel=1) as out:
        shutil.copyfileobj(src, out)
    packed = (mirror / f"{name}.gz").read_bytes()
    (mirror / f"{name}.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(ModelError, match="not a valid OpenL3 weight file"):
        openl3.load(e, "cpu")
    assert not list((own_cache / "openl3").iterdir())

    (mirror / f"{name}.gz").write_bytes(packed)
    adapter = openl3.load(e, "cpu")
    assert adapter.weights_path == own_cache / "openl3" / name
    assert adapter.weights_sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    (mirror / f"{name}.gz").unlink()
    assert openl3.load(e, "cpu").weights_path == adapter.weights_path

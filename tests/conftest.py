"""Shared fixtures: synthetic audio for unit tests, ../shared for integration tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = (PROJECT_ROOT.parent / "shared").resolve()  # the store keeps resolved paths, and ../shared may be a link
SHARED_DATA = SHARED / "data"
REFERENCE = SHARED / "reference"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data sets; tests that need them skip, visibly, where ../shared is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present beside the project")
    return SHARED_DATA


@pytest.fixture(scope="session")
def reference() -> Path:
    """Outputs of the original implementations, to check the ports against."""
    if not REFERENCE.is_dir():
        pytest.skip("../shared/reference is not present beside the project")
    return REFERENCE


#: Transformer layers of :func:`save_tiny_mert`'s model: hidden states 0, 1 and 2.
TINY_MERT_LAYERS = 2


def save_tiny_mert(folder, **switches):
    """A HuBERT of a few thousand weights saved as ``m-a-p/MERT-v1-95M`` looks to our loader.

    A config with MERT's own model type and switches, a 24 kHz
    ``Wav2Vec2FeatureExtractor`` and MERT's convolutional feature encoder
    (strides 5·2⁶ = 320, so 75 frames per second), with a few channels and
    :data:`TINY_MERT_LAYERS` transformer layers of 16-D.
    """
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    config = HubertConfig(hidden_size=16, num_hidden_layers=TINY_MERT_LAYERS, num_attention_heads=2,
                          intermediate_size=24, conv_dim=[8] * 7, num_conv_pos_embeddings=16,
                          num_conv_pos_embedding_groups=2)
    torch.manual_seed(0)
    HubertModel(config).eval().save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=24000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(folder)
    fields = json.loads((folder / "config.json").read_text())
    fields.update(model_type="mert_model", architectures=["MERTModel"], auto_map={"AutoModel": "modeling_MERT.MERTModel"},
                  feature_extractor_cqt=False, feature_extractor_cqt_bins=336, deepnorm=False, attention_relax=-1.0,
                  sample_rate=24000)
    fields.update(switches)
    (folder / "config.json").write_text(json.dumps(fields))
    return folder


def tone(freq: float = 440.0, seconds: float = 1.0, sr: int = 22050, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def tone_files(folder: Path, n: int, seconds: float, first_hz: float = 200.0, step_hz: float = 60.0) -> Path:
    """A new folder of ``n`` WAV files (``0.wav`` …) holding tones of distinct pitches, at 22,050 Hz."""
    import soundfile as sf

    folder.mkdir()
    for i in range(n):
        sf.write(folder / f"{i}.wav", tone(first_hz + step_hz * i, seconds), 22050)
    return folder


def embed_in_blocks(adapter, path, segments: np.ndarray, block_s: float) -> tuple[dict[str, np.ndarray], int]:
    """Embed a file block by block as the pipeline does (a small ``block_s`` forces blocks on a short file).

    Returns every space's rows and the number of blocks read.
    """
    from core.audio import info, iter_blocks

    rows = {space: np.zeros((len(segments), dim), np.float32) for space, dim in adapter.entry.spaces.items()}
    meta = info(path)
    block_samples = int(block_s * meta.sample_rate * meta.channels)
    blocks = list(iter_blocks(path, segments, block_samples=block_samples, meta=meta, dtype=adapter.entry.input_dtype))
    for b in blocks:
        for space, values in adapter.embed(b.audio, b.sr, b.segments, b.offset_s).items():
            rows[space][b.index] = values
    return rows, len(blocks)


def import_noisy_copy(db: Path, key: str = "noisy") -> None:
    """Import a copy of a store's dsp vectors with Gaussian noise (one standard deviation) as a second space ``key``.

    Goes through the real export and import, so that two-model pages and
    commands can be tested without a second model's weights.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core.exchange import export_parquet, import_parquet
    from core.store import Store

    store = Store(db)
    exported = db.parent / "dsp.parquet"
    export_parquet(store, "dsp", exported)
    table = pq.read_table(exported)
    vectors = np.stack(table.column("vector").to_numpy(zero_copy_only=False))
    noisy = vectors + np.random.default_rng(0).normal(scale=vectors.std(), size=vectors.shape).astype(np.float32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(noisy.reshape(-1)), noisy.shape[1])
    pq.write_table(table.set_column(table.column_names.index("vector"), "vector", column), exported)
    import_parquet(store, exported, key)


@pytest.fixture(scope="module")
def session_cache(tmp_path_factory):
    """The same cache for module-scoped fixtures, which run before the per-test one below and load weights."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AEB_CACHE", str(tmp_path_factory.getbasetemp() / "aeb-cache"))
        yield


@pytest.fixture(scope="module")
def aisfx_adapter(session_cache):
    """The real aisfx adapter (its weights come from the aisfx wheel), or a visible skip without them."""
    from core.models import aisfx
    from core.models.base import ModelUnavailable

    try:
        return aisfx.load(aisfx.CATALOGUE[0], "cpu")
    except ModelUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Converted weights go to one temporary cache per test session, never into ./cache."""
    cache = tmp_path_factory.getbasetemp() / "aeb-cache"
    cache.mkdir(exist_ok=True)
    monkeypatch.setenv("AEB_CACHE", str(cache))


class WatchedDsp:
    """The real dsp adapter in the staged form, with its CPU stage a test can watch or disturb.

    The pipeline hands each block to ``preparer``; here that is the double
    itself, which calls :meth:`prepare` (override it) for the rows.
    """

    def __init__(self):
        from core.models.base import load_model

        self.inner = load_model("dsp")
        self.entry, self.version = self.inner.entry, self.inner.version
        self.weights_sha256, self.tag_names = self.inner.weights_sha256, self.inner.tag_names
        self.device, self.batch_size, self.equal_lengths = "cpu", 1, False
        self.preparer = self

    def __call__(self, audio, sr, segments, offset_s=0.0):
        from core.models import stages

        return stages.Prepared(0, [], self.prepare(audio, sr, segments, offset_s))

    def prepare(self, audio, sr, segments, offset_s=0.0):
        return self.inner.embed(audio, sr, segments, offset_s)

    def finish(self, plan, outputs):
        return plan


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """One local Ray for the whole test session: 2 CPUs, a small object store, no dashboard.

    Its workers get this session's weight cache, import the project from its root, and use as many
    BLAS threads as this process (Ray's default is one per actor): a sum split over another number
    of threads may round its last bit differently, and the engines are compared bit for bit.
    """
    import os

    import ray

    cache = tmp_path_factory.getbasetemp() / "aeb-cache"
    cache.mkdir(exist_ok=True)
    threads = os.environ.get("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    ray.init(num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"AEB_CACHE": str(cache), "PYTHONPATH": str(PROJECT_ROOT),
                                       "OMP_NUM_THREADS": threads}})
    yield ray
    ray.shutdown()

"""CLAP (LAION): audio and text in one space, through ``transformers``' ``ClapModel``.

Each checkpoint is loaded with its own processor (``AutoProcessor``): the
default ``ClapFeatureExtractor()`` uses fusion and ``fmin=0``, which match no
published checkpoint.  The extractor is only ever given inputs no longer than
its window (480,000 samples at 48 kHz for every LAION checkpoint), so it never
crops at random; a longer segment is cut into equal chunks whose unit
embeddings are averaged.  Shorter inputs are repeat-padded by the extractor's
rule, as in training.  The extractor's numpy log-mel is not run: the same
computation in torch, :func:`log_mel`, runs on the model's device on batches
of chunks from many tracks, and agrees with the extractor to 1e-7 of the
features' range on the shared data (the tests hold it to 1e-4 against the
extractor).  ``is_longer`` is set to False for every input: no input is
longer than the window, and left to itself the extractor of a fused checkpoint
marks one input of each batch as longer at random, which makes a segment's
vector depend on its batch.  With ``is_longer`` False a fused model uses its
global branch only, as the original does on clips of at most 10 s.

Audio is resampled to 48 kHz with the project's default,
:func:`core.audio.resample` (soxr HQ, as ``librosa.resample``): no resampler
is part of the model or its processor.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from core.models import hf, stages
from core.models.base import ModelEntry, ModelError, from_table
from core.vectors import normalize

#: Bumped whenever the numbers change for the same weights.
VERSION = "1"

#: Shortest input given to the extractor: one STFT window of the LAION checkpoints.
MIN_SAMPLES = 1024

_DIM = 512
_RATE = 48_000

#: What every CLAP checkpoint has, in the catalogue and under a generic ``clap:`` key.
_FAMILY = dict(sample_rate=_RATE, capabilities=frozenset({"text"}))

CATALOGUE: tuple[ModelEntry, ...] = from_table(
    "clap",
    # item_mib: CUDA memory of one 10 s input in MiB, for the batch size; bf16_cosine: bench/verify_bf16.py with
    # the architecture's random weights on shared clips, on this CPU (61 segments) and an H200 (42); the lower
    ("key", "hub_id", "item_mib", "bf16_cosine", "suited_for", "description"),
    (
        ("clap-htsat-unfused", "laion/clap-htsat-unfused", 200, 0.99995, ("general",),
         "LAION CLAP, HTSAT-tiny audio encoder and RoBERTa text encoder, trained on LAION-Audio-630K: "
         "general sounds; type text to search."),
        ("clap-htsat-fused", "laion/clap-htsat-fused", 250, 0.99992, ("general",),
         "LAION CLAP with feature fusion for long clips; segments of at most 10 s use its global branch."),
        ("clap-music-speech", "laion/larger_clap_music_and_speech", 400, None, ("music", "speech"),
         "LAION larger CLAP (HTSAT-base) trained on music, speech and general audio."),
        ("clap-music", "laion/larger_clap_music", 400, None, ("music",),
         "LAION larger CLAP (HTSAT-base) trained on music."),
    ),
    dim=_DIM, licence="Apache-2.0", weights="Hugging Face hub: {hub_id}", **_FAMILY,
)


def generic_entry(spec: str) -> ModelEntry:
    """The entry of ``clap:ID_OR_PATH``: any CLAP checkpoint saved with ``save_pretrained``.

    The dimension is read from the checkpoint's config when it is on this
    machine; otherwise the LAION value (512) stands until :func:`load` reads
    the downloaded config.
    """
    return hf.generic_entry("clap", spec, "projection_dim", _DIM, f"CLAP checkpoint {spec}.", {"item_mib": 400},
                            suited_for=("general",), **_FAMILY)


def availability(entry: ModelEntry) -> tuple[bool, str]:
    return hf.availability(entry.key, entry.params["hub_id"])


def load(entry: ModelEntry, device: str) -> "ClapAdapter":
    """Load a CLAP checkpoint and its processor.

    Raises
    ------
    ModelUnavailable
        When the checkpoint is neither cached nor downloadable.
    ModelError
        When its files are broken, or its processor does not work at 48 kHz.
    """
    from transformers import AutoProcessor, ClapModel

    def check(processor) -> None:
        extractor = getattr(processor, "feature_extractor", None)
        if extractor is None or getattr(processor, "tokenizer", None) is None:
            raise ModelError(f"{entry.key}: {entry.params['hub_id']} has no CLAP processor (feature extractor and tokenizer).")
        if extractor.sampling_rate != _RATE:
            raise ModelError(f"{entry.key}: its feature extractor runs at {extractor.sampling_rate} Hz; CLAP needs {_RATE} Hz.")

    return ClapAdapter(*hf.load_checkpoint(entry, ClapModel, AutoProcessor, device, check=check), device)


class ClapAdapter(hf.HubAdapter):
    """A loaded CLAP checkpoint: segment embeddings and text embeddings in one space.

    Zero-shot labels are text queries, made with :meth:`embed_text`.  See
    :class:`core.models.hf.HubAdapter` for the attributes; ``batch_size``
    counts inputs of at most one window.  The checkpoint's processor stays
    loaded for its tokenizer and its feature extractor's settings; the
    extractor's log-mel itself is :func:`log_mel`, in torch on ``device``.
    """

    version = VERSION
    cuda_batch = 256
    equal_lengths = False

    def __init__(self, entry: ModelEntry, model, processor, weights_sha256: str, device: str):
        super().__init__(entry, model, processor, weights_sha256, device)
        self.window = int(processor.feature_extractor.nb_max_samples)
        self.preparer = ClapPreparer(entry.key, entry.dim, self.window)
        self.features = MelSettings.of(processor.feature_extractor, device)
        self._text_row = functools.lru_cache(maxsize=4096)(self._compute_text_row)

    def chunks(self, audio: np.ndarray, sr: int, segments: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Each segment cut into inputs of at most one window at 48 kHz (:meth:`ClapPreparer.chunks`)."""
        return self.preparer.chunks(audio, sr, segments)

    def frontend(self, inputs, lengths):
        """The feature extractor's ``input_features`` for chunks: [shape=(b, 1 or 4, 1001, n_mels), float32]."""
        return log_mel(inputs, lengths, self.features)

    def network(self, features) -> dict:
        """The audio tower's projected output of each chunk, ``is_longer`` False for all (module docstring)."""
        import torch

        if self.model.audio_model is None:
            raise ModelError(f"{self.entry.key} was loaded for text queries only; load it again to embed audio.")
        is_longer = torch.zeros((len(features), 1), dtype=torch.bool, device=features.device)
        out = self.model.get_audio_features(input_features=features, is_longer=is_longer)
        return {"audio": out.pooler_output}

    def text_only(self) -> "ClapAdapter":
        """Free the audio tower and its projection, for a server that answers text queries only.

        A public app on a small machine (Streamlit Community Cloud) holds
        the text tower alone: text search needs nothing else, and the audio
        tower's weights would be memory taken from the visitors.  The
        adapter then refuses :meth:`embed`.
        """
        import gc

        self.model.audio_model = None
        self.model.audio_projection = None
        gc.collect()
        return self

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Embed texts into the audio space.

        Each text is tokenised alone, so its row never depends on the other
        texts of the call, and rows are cached (a search page re-embeds the
        same query and label list on every rerun).

        Returns
        -------
        np.ndarray [shape=(len(texts), dim), dtype=float32]
            Unit-norm rows.
        """
        if not texts:
            return np.zeros((0, self.entry.dim), dtype=np.float32)
        return np.stack([self._text_row(str(t)) for t in texts])

    def _compute_text_row(self, text: str) -> np.ndarray:
        import torch

        inputs = self.processor(text=[text], truncation=True, return_tensors="pt")
        with torch.inference_mode():
            out = self.model.get_text_features(
                input_ids=inputs["input_ids"].to(self.device),
                attention_mask=inputs["attention_mask"].to(self.device),
            )
        row = normalize(out.pooler_output.float().cpu().numpy())[0]
        row.flags.writeable = False
        return row


@dataclasses.dataclass(frozen=True)
class ClapPreparer:
    """CLAP's CPU stage: resampling to 48 kHz and one item per chunk of at most one window."""

    key: str
    dim: int
    window: int

    def chunks(self, audio: np.ndarray, sr: int, segments: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Cut each segment into inputs of at most one window at 48 kHz.

        Parameters
        ----------
        audio : np.ndarray [shape=(n_samples,)]
        sr : int
        segments : np.ndarray [shape=(n, 2)]
            Start and end in seconds relative to ``audio[0]``.

        Returns
        -------
        chunks : list of np.ndarray [shape=(<= window,), dtype=float32]
        owner : np.ndarray [shape=(len(chunks),), dtype=int]
            The segment each chunk belongs to.

        Notes
        -----
        A segment longer than the window is split into the fewest equal
        chunks that fit.  A segment shorter than :data:`MIN_SAMPLES` (or one
        lying outside the audio) is widened around its centre to that length
        within the audio, so every segment yields a row.
        """
        return hf.segment_chunks(self.key, audio, sr, segments, _RATE, self.window, MIN_SAMPLES)

    def __call__(self, audio: np.ndarray, sr: int, segments: np.ndarray, offset_s: float = 0.0) -> stages.Prepared:
        """The chunks as items (each segment is seen alone: ``offset_s`` is unused)."""
        return hf.chunk_items(self.key, audio, sr, segments, _RATE, self.window, MIN_SAMPLES)

    def finish(self, plan, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each segment's row: the normalised mean of its chunks' unit embeddings.

        Returns
        -------
        dict[str, np.ndarray [shape=(n, dim), dtype=float32]]
            Unit-norm rows under the model key.
        """
        owner, n = plan
        sums = np.zeros((n, self.dim), dtype=np.float64)
        if len(owner):
            np.add.at(sums, owner, normalize(outputs["audio"]))
        return {self.key: normalize(sums)}


@dataclasses.dataclass(frozen=True)
class MelSettings:
    """A ``ClapFeatureExtractor``'s log-mel settings, with its window (float64) and filter bank (float32) on a device."""

    window_samples: int
    n_fft: int
    hop: int
    padding: str
    fusion: bool
    window: object
    filters: object

    @classmethod
    def of(cls, extractor, device: str) -> "MelSettings":
        """The settings the extractor applies to inputs of at most ``nb_max_samples`` (module docstring)."""
        import torch
        from transformers.audio_utils import window_function

        fusion = extractor.truncation == "fusion"
        filters = extractor.mel_filters if fusion else extractor.mel_filters_slaney
        if extractor.padding not in ("repeatpad", "repeat", "pad"):
            raise ModelError(f"CLAP feature extractors pad with repeatpad, repeat or pad, not {extractor.padding!r}.")
        return cls(
            window_samples=int(extractor.nb_max_samples), n_fft=int(extractor.fft_window_size),
            hop=int(extractor.hop_length), padding=extractor.padding, fusion=fusion,
            window=torch.from_numpy(window_function(extractor.fft_window_size, "hann")).to(device, torch.float64),
            filters=torch.from_numpy(np.asarray(filters, dtype=np.float32)).to(device),
        )


def pad_to_window(waveforms, lengths, window_samples: int, padding: str):
    """Fill the extractor's window from each chunk, as it pads inputs shorter than the window.

    Parameters
    ----------
    waveforms : torch.Tensor [shape=(b, width)]
        Chunks right-padded with zeros.
    lengths : torch.Tensor [shape=(b,), dtype=int64, on the CPU]
        Each chunk's real length, ``1 <= length <= min(width, window_samples)``.
    window_samples : int
    padding : {"repeatpad", "repeat", "pad"}
        ``repeatpad``: the chunk repeated as many whole times as fit, then
        zeros; ``repeat``: repeated and cut at the window's end; ``pad``: zeros.

    Returns
    -------
    torch.Tensor [shape=(b, window_samples)]
    """
    import torch

    out = torch.zeros((len(waveforms), window_samples), dtype=waveforms.dtype, device=waveforms.device)
    for length in torch.unique(lengths).tolist():
        rows = torch.nonzero(lengths == length).flatten().to(waveforms.device, non_blocking=True)
        whole = window_samples // length if padding == "repeatpad" else 1
        filled = length * whole if padding != "repeat" else window_samples
        times = -(-filled // length)
        out[rows, :filled] = waveforms[rows, :length].repeat(1, times)[:, :filled]
    return out


def log_mel(waveforms, lengths, settings: MelSettings):
    """``ClapFeatureExtractor``'s features of chunks no longer than its window, on their device.

    The extractor's steps: the chunk padded to the window
    (:func:`pad_to_window`), a centred 1024-point STFT with reflect padding
    and a periodic Hann window, the power, the mel filter bank (HTK without
    norm under fusion, Slaney otherwise) floored at 1e-10, and decibels; a
    fusion extractor stacks four copies.  The STFT is taken in float64, as
    the extractor takes it: in float32 its rounding, relative to each frame's
    loudest bin, reaches 7e-4 of the features' range in cells 80-100 dB down.
    Power, filter bank and logarithm add no cancellation and run in float32.
    On the shared data this agrees with the extractor to 1e-7 of the range.

    Parameters
    ----------
    waveforms : torch.Tensor [shape=(b, width)]
        48 kHz chunks right-padded with zeros, ``width <= window_samples``.
    lengths : torch.Tensor [shape=(b,), dtype=int64, on the CPU]
    settings : MelSettings

    Returns
    -------
    torch.Tensor [shape=(b, 4 if fusion else 1, frames, n_mels), dtype=float32]
        ``frames = 1 + window_samples // hop`` (1001 for LAION's 10 s at hop 480).
    """
    import torch

    x = pad_to_window(waveforms.to(torch.float64), lengths, settings.window_samples, settings.padding)
    spectrum = torch.stft(x, settings.n_fft, settings.hop, window=settings.window, center=True, pad_mode="reflect",
                          return_complex=True)
    power = torch.view_as_real(spectrum).square().sum(-1).to(torch.float32)
    mel = torch.matmul(power.transpose(1, 2), settings.filters).clamp_min(1e-10)
    features = (10.0 * torch.log10(mel))[:, None]
    return features.expand(-1, 4, -1, -1).contiguous() if settings.fusion else features

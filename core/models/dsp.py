"""The DSP baseline: log-mel statistics per segment.

Every deep model must beat this row, so it is deliberately simple, cheap and
always available.  Exact definition (adapter version 1):

1. Resample the mono mix to 16 kHz with soxr HQ (:func:`core.audio.resample`).
2. Power mel spectrogram: 1024-point STFT with a periodic Hann window, hop
   512 (32 ms), ``center=True`` with zero padding, 64 Slaney mel bands from
   0 to 8 kHz with Slaney normalisation (``librosa.feature.melspectrogram``).
3. ``log10(mel + 1e-6)`` per band.
4. For each segment, the frames whose centre lies in [start, end): the mean
   of each band, then the standard deviation of each band; 128 values.
   A segment holding no frame centre (shorter than 32 ms) uses the nearest
   frame, with a standard deviation of 0.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from core.audio import resample
from core.models import stages
from core.models.base import ModelEntry, ModelError, mean_by_segment

SAMPLE_RATE = 16_000
N_FFT = 1024
HOP = 512
N_MELS = 64

CATALOGUE = (
    ModelEntry(
        key="dsp",
        family="dsp",
        dim=2 * N_MELS,
        sample_rate=SAMPLE_RATE,
        licence="MIT (this project)",
        weights="none: a fixed signal-processing definition",
        description="Baseline: mean and standard deviation of 64 log-mel bands per segment. Cheap, always available; the row every model must beat.",
        suited_for=("general", "music", "speech"),
    ),
)


def availability(entry: ModelEntry) -> tuple[bool, str]:
    return True, ""


def log_mel(y: np.ndarray, sr: int) -> np.ndarray:
    """Log-mel frames of a signal.

    Returns
    -------
    np.ndarray [shape=(n_frames, 64), dtype=float32]
        Frame ``t`` is centred at ``t * 512 / 16000`` s.
    """
    import librosa

    y16 = resample(y, sr, SAMPLE_RATE)
    mel = librosa.feature.melspectrogram(
        y=y16, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, fmin=0.0, fmax=SAMPLE_RATE / 2,
        center=True, pad_mode="constant", power=2.0,
    )
    return np.log10(mel + 1e-6).T.astype(np.float32)


def rows(entry: ModelEntry, audio: np.ndarray, sr: int, segments: np.ndarray) -> dict[str, np.ndarray]:
    """The module's definition for each segment; frames are centred on ``audio``'s own clock.

    Returns
    -------
    dict[str, np.ndarray [shape=(n, 128), dtype=float32]]
    """
    frames = log_mel(audio, sr)
    centres = np.arange(len(frames)) * HOP / SAMPLE_RATE
    mean, empty = mean_by_segment(centres, frames, segments)
    mean_sq, _ = mean_by_segment(centres, frames.astype(np.float64) ** 2, segments)
    std = np.sqrt(np.maximum(mean_sq - mean.astype(np.float64) ** 2, 0.0)).astype(np.float32)
    if empty.any():
        mids = np.asarray(segments, dtype=np.float64)[empty].mean(axis=1)
        nearest = np.clip(np.rint(mids * SAMPLE_RATE / HOP).astype(int), 0, len(frames) - 1)
        mean[empty] = frames[nearest]
        std[empty] = 0.0
    return {entry.key: np.concatenate([mean, std], axis=1)}


@dataclasses.dataclass(frozen=True)
class DspPreparer:
    """The whole baseline, on the CPU: its rows are the plan, and there are no items for a device."""

    entry: ModelEntry

    def __call__(self, audio: np.ndarray, sr: int, segments: np.ndarray, offset_s: float = 0.0) -> stages.Prepared:
        return stages.Prepared(0, [], rows(self.entry, audio, sr, segments))

    def finish(self, plan, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return plan


@dataclasses.dataclass
class DspAdapter:
    """The baseline in the staged form (:mod:`core.models.stages`), with an empty device stage."""

    entry: ModelEntry
    version: str = "1"
    weights_sha256: str = ""
    tag_names: dict = dataclasses.field(default_factory=dict)
    device: str = "cpu"
    batch_size: int = 1
    equal_lengths: bool = False

    def __post_init__(self):
        self.preparer = DspPreparer(self.entry)

    def frontend(self, inputs, lengths=None):
        raise ModelError("the dsp baseline has no device stage")

    def network(self, features) -> dict:
        raise ModelError("the dsp baseline has no device stage")

    def embed(self, audio: np.ndarray, sr: int, segments: np.ndarray, offset_s: float = 0.0) -> dict[str, np.ndarray]:
        """Rows of the module's definition (``offset_s`` is unused)."""
        return rows(self.entry, audio, sr, segments)


def load(entry: ModelEntry, device: str = "cpu") -> DspAdapter:
    return DspAdapter(entry)

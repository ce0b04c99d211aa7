"""CLAP (LAION): audio and text in one space, through ``transformers``' ``ClapModel``.

Each checkpoint is loaded with its own processor (``AutoProcessor``): the
default ``ClapFeatureExtractor()`` uses fusion and ``fmin=0``, which match no
published checkpoint.  The extractor is only ever given inputs no longer than
its window (480,000 samples at 48 kHz for every LAION checkpoint), so it never
crops at random; a longer segment is cut into equal chunks whose unit
embeddings are averaged.  Shorter inputs are repeat-padded by the extractor,
as in training.  ``is_longer`` is set to False for every input: no input is
longer than the window, and left to itself the extractor of a fused checkpoint
marks one input of each batch as longer at random, which makes a segment's
vector depend on its batch.  With ``is_longer`` False a fused model uses its
global branch only, as the original does on clips of at most 10 s.

Audio is resampled to 48 kHz with the project's default,
:func:`core.audio.resample` (soxr HQ, as ``librosa.resample``): no resampler
is part of the model or its processor.
"""

from __future__ import annotations

import functools

import numpy as np

from core.models import hf
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
    # item_mib: CUDA memory of one 10 s input in MiB, for the batch size
    ("key", "hub_id", "item_mib", "suited_for", "description"),
    (
        ("clap-htsat-unfused", "laion/clap-htsat-unfused", 200, ("general",),
         "LAION CLAP, HTSAT-tiny audio encoder and RoBERTa text encoder, trained on LAION-Audio-630K: "
         "general sounds; type text to search."),
        ("clap-htsat-fused", "laion/clap-htsat-fused", 250, ("general",),
         "LAION CLAP with feature fusion for long clips; segments of at most 10 s use its global branch."),
        ("clap-music-speech", "laion/larger_clap_music_and_speech", 400, ("music", "speech"),
         "LAION larger CLAP (HTSAT-base) trained on music, speech and general audio."),
        ("clap-music", "laion/larger_clap_music", 400, ("music",),
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
    counts inputs of at most one window.
    """

    version = VERSION

    def __init__(self, entry: ModelEntry, model, processor, weights_sha256: str, device: str):
        super().__init__(entry, model, processor, weights_sha256, device)
        self.window = int(processor.feature_extractor.nb_max_samples)
        self._text_row = functools.lru_cache(maxsize=4096)(self._compute_text_row)

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
        return hf.segment_chunks(self.entry.key, audio, sr, segments, _RATE, self.window, MIN_SAMPLES)

    def embed(self, audio: np.ndarray, sr: int, segments: np.ndarray, offset_s: float = 0.0) -> dict[str, np.ndarray]:
        """Embed segments; see :class:`core.models.base.Adapter` (each segment is seen alone: ``offset_s`` is unused).

        Returns
        -------
        dict[str, np.ndarray [shape=(n, dim), dtype=float32]]
            Unit-norm rows under ``entry.key``.
        """
        import torch

        if self.model.audio_model is None:
            raise ModelError(f"{self.entry.key} was loaded for text queries only; load it again to embed audio.")
        chunks, owner = self.chunks(audio, sr, segments)
        rows = []
        for start in range(0, len(chunks), self.batch_size):
            batch = chunks[start:start + self.batch_size]
            inputs = self.processor(audio=batch, sampling_rate=_RATE, return_tensors="pt")
            is_longer = torch.zeros((len(batch), 1), dtype=torch.bool)
            with torch.inference_mode():
                out = self.model.get_audio_features(
                    input_features=inputs["input_features"].to(self.device, torch.float32),
                    is_longer=is_longer.to(self.device),
                )
            rows.append(out.pooler_output.float().cpu().numpy())
        per_chunk = normalize(np.concatenate(rows)) if rows else np.zeros((0, self.entry.dim), np.float32)
        n = len(np.asarray(segments).reshape(-1, 2))
        sums = np.zeros((n, per_chunk.shape[1]), dtype=np.float64)
        np.add.at(sums, owner, per_chunk)
        return {self.entry.key: normalize(sums)}

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


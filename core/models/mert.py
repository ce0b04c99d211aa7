"""MERT-v1 (m-a-p): self-supervised music representations, run as a plain ``HubertModel``.

The hub code of MERT needs ``trust_remote_code`` and, under transformers 5.x,
returns no hidden states.  It is not needed: MERT-v1's model class subclasses
``HubertModel`` and only swaps in a feature projection that is HuBERT's own
unless ``feature_extractor_cqt`` is set, and a custom encoder that is only
used with ``deepnorm``.  Its config (``model_type: mert_model``) is therefore
read here and rebuilt as a ``HubertConfig`` with the same fields; MERTConfig's
defaults equal HubertConfig's for every field HuBERT uses, so fields absent
from a config.json mean the same in both.  Checkpoints that enable the CQT
branch or deepnorm are refused.

MERT-v1-330M needs nothing more.  Its config differs from 95M's in size
(24 layers, 1024-D, 16 heads) and in switches that are HuBERT's own:
``do_stable_layer_norm`` (the pre-norm ``HubertEncoderStableLayerNorm``,
which MERT's code also uses) and ``feat_extract_norm: "layer"``.  Its
``attention_relax`` only reaches MERT's deepnorm encoder, and even there it
is a max-subtraction before the softmax, which leaves the result unchanged.
(The config could not be fetched here; this follows the published config and
MERT's modeling code, which picks the encoder from these switches alone.)

Representation: each segment is cut into passes of at most 5 s at 24 kHz
(equal lengths, so a batch never mixes lengths: the feature encoder's group
norm would see the padding), each pass is normalised as the checkpoint's
``Wav2Vec2FeatureExtractor`` normalises (zero mean, unit variance; computed
in torch on the model's device) and its frames
(75 per second) are averaged over the whole segment.  The default key stores
the mean of that over all hidden states (the feature projection and every
transformer layer); the layer spaces ``KEY/lN`` (``mert:PATH#lN`` for a
generic key) store ``hidden_states[N]``, as the MERT paper finds different
layers suit different tasks.  Every pass computes all hidden states, so
``embed`` returns every layer space from one pass and the pipeline stores
those a run asks for (:func:`core.models.base.spaces_to_fill`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from core.models import hf, stages
from core.models.base import ModelEntry, ModelError, from_table

#: Bumped whenever the numbers change for the same weights.
VERSION = "1"

#: Longest forward pass, in seconds.
PASS_SECONDS = 5.0

_RATE = 24_000

_TABLE: tuple[ModelEntry, ...] = from_table(
    "mert",
    # layers: transformer layers (hidden states 0..layers, each a space KEY/lN);
    # item_mib: CUDA memory of one 5 s pass in MiB, for the batch size
    ("key", "hub_id", "dim", "layers", "item_mib", "description"),
    (
        ("mert-v1-95m", "m-a-p/MERT-v1-95M", 768, 12, 120,
         "MERT-v1 95M, a HuBERT-style music model trained on 20k hours of music"),
        ("mert-v1-330m", "m-a-p/MERT-v1-330M", 1024, 24, 300,
         "MERT-v1 330M, the large MERT-v1 (pre-norm encoder), trained on 160k hours of music"),
    ),
    sample_rate=_RATE, licence="CC-BY-NC-4.0", weights="Hugging Face hub: {hub_id}", suited_for=("music",),
)

#: Lowest per-segment cosine of bfloat16 to float32 vectors, by key: bench/verify_bf16.py with the architecture's
#: random weights on shared clips, on this CPU (61 segments, mert-v1-95m only) and on an H200 (42 segments); the
#: lower.  The other keys were not measured and run in float32.  ``-lN`` are the layer spaces ``KEY/lN`` as they
#: were measured when layers were keys of their own; one pass now fills them all, so an entry's value is the lowest
#: of its own and its layers'.
_BF16_COSINE = {"mert-v1-95m": 0.99907, "mert-v1-95m-l0": 0.99910, "mert-v1-95m-l4": 0.99912,
                "mert-v1-95m-l8": 0.99913, "mert-v1-95m-l12": 0.99907}


def _bf16_cosine(key: str) -> float | None:
    if key not in _BF16_COSINE:
        return None
    return min(v for k, v in _BF16_COSINE.items() if k == key or k.startswith(f"{key}-l"))


CATALOGUE: tuple[ModelEntry, ...] = tuple(dataclasses.replace(e, bf16_cosine=_bf16_cosine(e.key)) for e in _TABLE)

#: Config switches of MERT variants that are not a HuBERT.
_REFUSED = ("feature_extractor_cqt", "deepnorm")

#: Config keys that name MERT's own classes rather than describe the network.
_NOT_FIELDS = ("model_type", "architectures", "auto_map", "transformers_version", "_name_or_path")


def generic_entry(spec: str) -> ModelEntry:
    """The entry of ``mert:ID_OR_PATH``: any MERT/HuBERT checkpoint, its layers spelled ``mert:ID_OR_PATH#lN``.

    The dimension and the number of layers come from the checkpoint's
    config when it is on this machine; otherwise MERT-v1-95M's (768-D, 12
    layers) stand until :func:`load` reads the downloaded config.
    """
    entry = hf.generic_entry("mert", spec, "hidden_size", 768, f"MERT/HuBERT checkpoint {spec}; mean of all hidden states.",
                             {"item_mib": 300}, sample_rate=_RATE, suited_for=("music",))
    config = hf.read_config(spec) or {}
    return dataclasses.replace(entry, layers=tuple(range(int(config.get("num_hidden_layers", 12)) + 1)),
                               capabilities=frozenset({"layers"}))


def availability(entry: ModelEntry) -> tuple[bool, str]:
    return hf.availability(entry.key, entry.params["hub_id"])


def hubert_config(config: dict, source: str):
    """A ``HubertConfig`` from the fields of a MERT (or HuBERT) ``config.json``.

    Parameters
    ----------
    config : dict
        The parsed config.json.
    source : str
        Where it came from, for error messages.

    Raises
    ------
    ModelError
        For checkpoints that are not a HuBERT: another model type, or MERT's
        CQT branch or deepnorm enabled.
    """
    from transformers import HubertConfig

    model_type = config.get("model_type")
    if model_type not in ("mert_model", "hubert"):
        raise ModelError(f"{source} is a {model_type!r} checkpoint, not MERT or HuBERT.")
    enabled = [name for name in _REFUSED if config.get(name)]
    if enabled:
        raise ModelError(
            f"{source} enables {' and '.join(enabled)}, which HubertModel does not implement; "
            f"only MERT checkpoints without them (such as MERT-v1-95M and -330M) can be used."
        )
    return HubertConfig(**{k: v for k, v in config.items() if k not in _NOT_FIELDS})


def load(entry: ModelEntry, device: str) -> "MertAdapter":
    """Load a MERT checkpoint as ``HubertModel`` with its ``Wav2Vec2FeatureExtractor``.

    Raises
    ------
    ModelUnavailable
        When the checkpoint is neither cached nor downloadable.
    ModelError
        For refused configs or broken weight files.
    """
    from transformers import HubertModel, PretrainedConfig, Wav2Vec2FeatureExtractor

    spec = entry.params["hub_id"]
    name, hub_kwargs = hf.source(entry.key, spec)
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(name, **hub_kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{entry.key}: the config of {spec} could not be read ({hf.first_line(exc)}).") from None
    config = hubert_config(config_dict, spec)
    entry, model, extractor, sha = hf.load_checkpoint(entry, HubertModel, Wav2Vec2FeatureExtractor, device, config=config)
    if len(entry.layers) != config.num_hidden_layers + 1:  # a generic entry was read again from this config
        raise ModelError(f"{entry.key}: {spec} has {config.num_hidden_layers} transformer layers; "
                         f"the catalogue expects {len(entry.layers) - 1}.")
    return MertAdapter(entry, model, extractor, sha, device)


class MertAdapter(hf.HubAdapter):
    """A loaded MERT checkpoint (attributes: :class:`core.models.hf.HubAdapter`, and the two below).

    Its ``processor`` is the checkpoint's ``Wav2Vec2FeatureExtractor``, whose
    input normalisation :meth:`frontend` computes on ``device``, and
    ``batch_size`` counts passes; passes of different lengths never share a
    batch (``equal_lengths``), since the feature encoder's group norm would
    see the padding.

    Attributes
    ----------
    rate : int
        The model's sample rate (the feature extractor's).
    min_samples : int
        Shortest input that yields one frame (the feature encoder's receptive field).
    """

    version = VERSION
    cuda_batch = 128
    equal_lengths = True

    def __init__(self, entry: ModelEntry, model, extractor, weights_sha256: str, device: str):
        super().__init__(entry, model, extractor, weights_sha256, device)
        self.rate = int(extractor.sampling_rate)
        self.min_samples = _receptive_field(model.config.conv_kernel, model.config.conv_stride)
        self.preparer = MertPreparer(entry.key, model.config.hidden_size, self.rate, self.min_samples,
                                     tuple(entry.layer_spaces.items()))

    def frontend(self, inputs, lengths=None):
        """The feature extractor's input normalisation: each pass to zero mean and unit variance (with its 1e-7).

        Parameters
        ----------
        inputs : torch.Tensor [shape=(b, n_samples)]
            Passes of one length (``lengths``, if given, all equal ``n_samples``).
        """
        import torch

        if lengths is not None and bool((lengths != inputs.shape[1]).any()):
            raise ModelError(f"{self.entry.key}: a batch of passes must hold one length and no padding.")
        x = inputs.to(torch.float32)
        if not getattr(self.processor, "do_normalize", True):
            return x
        mean = x.mean(dim=1, keepdim=True)
        return (x - mean) / torch.sqrt(x.var(dim=1, unbiased=False, keepdim=True) + 1e-7)

    def network(self, features) -> dict:
        """Per pass, the sum over its frames of the mean of all hidden states (``sum``), of each layer the entry
        exposes (``states``, shape ``(b, len(entry.layers), dim)``; only for entries with layers), and its frame count."""
        import torch

        hidden = self.model(input_values=features, output_hidden_states=True).hidden_states
        stacked = torch.stack([s.float() for s in hidden], dim=1)  # (b, states, frames, dim)
        frames = torch.full((len(stacked),), stacked.shape[2], dtype=torch.float32, device=stacked.device)
        out = {"sum": stacked.mean(dim=1).sum(dim=1), "frames": frames}
        if self.entry.layers:
            out["states"] = stacked[:, list(self.entry.layers)].sum(dim=2)
        return out

    def hidden_states(self, passes: np.ndarray) -> np.ndarray:
        """Every hidden state of equally long passes.

        Parameters
        ----------
        passes : np.ndarray [shape=(b, n_samples)]
            Audio at :attr:`rate`, at most a few seconds each.

        Returns
        -------
        np.ndarray [shape=(b, n_layers + 1, n_frames, dim), dtype=float32]
            ``hidden_states[0]`` is the projected, position-encoded feature
            sequence; ``[N]`` the output of transformer layer N.
        """
        import torch

        x = torch.from_numpy(np.ascontiguousarray(passes, dtype=np.float32)).to(self.device)
        with torch.inference_mode():
            out = self.model(input_values=self.frontend(x), output_hidden_states=True)
        return torch.stack(out.hidden_states, dim=1).float().cpu().numpy()


@dataclasses.dataclass(frozen=True)
class MertPreparer:
    """MERT's CPU stage: resampling to the model's rate and one item per pass of at most :data:`PASS_SECONDS`."""

    key: str
    dim: int
    rate: int
    min_samples: int
    #: (hidden state N, its space ``KEY/lN``) for each layer the entry exposes, in the order of ``states``.
    layer_spaces: tuple[tuple[int, str], ...] = ()

    def __call__(self, audio: np.ndarray, sr: int, segments: np.ndarray, offset_s: float = 0.0) -> stages.Prepared:
        """Each segment cut into equal passes (each segment is seen alone: ``offset_s`` is unused)."""
        return hf.chunk_items(self.key, audio, sr, segments, self.rate, int(round(PASS_SECONDS * self.rate)),
                              self.min_samples)

    def finish(self, plan, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each segment's row: the mean over all frames of its passes.

        Returns
        -------
        dict[str, np.ndarray [shape=(n, dim), dtype=float32]]
            Under ``entry.key`` the frame mean of the mean of all hidden
            states; under each layer space (``entry.layer_spaces``) the frame
            mean of that hidden state.  All come from the same passes.
        """
        owner, n = plan
        frames = np.zeros(n, dtype=np.float64)
        sums = np.zeros((n, self.dim), dtype=np.float64)
        states = np.zeros((n, len(self.layer_spaces), self.dim), dtype=np.float64)
        if len(owner):
            np.add.at(frames, owner, outputs["frames"])
            np.add.at(sums, owner, outputs["sum"])
            if self.layer_spaces:
                np.add.at(states, owner, outputs["states"])
        count = np.maximum(frames, 1)
        rows = {self.key: (sums / count[:, None]).astype(np.float32)}
        rows.update({space: (states[:, i] / count[:, None]).astype(np.float32)
                     for i, (_, space) in enumerate(self.layer_spaces)})
        return rows


def _receptive_field(kernels, strides) -> int:
    """Samples the convolutional feature encoder needs for one output frame."""
    size = 1
    for kernel, stride in zip(reversed(list(kernels)), reversed(list(strides))):
        size = (size - 1) * stride + kernel
    return size

"""Hugging Face checkpoints: finding them offline, loading them strictly, and naming their weights.

CLAP and MERT come from the Hugging Face hub.  Three things are shared:

- **Availability without downloading.**  ``python -m core models`` must list
  every model quickly, offline included, so a hub id counts as available only
  when its files are in the local cache, or when the hub answers a plain TCP
  connection.  The cache folder and ``HF_HUB_OFFLINE`` are read at call time
  (``huggingface_hub`` reads them once, at import), so pointing ``HF_HOME`` at
  another cache works without restarting.
- **Strict loading.**  ``from_pretrained`` only *warns* about weights missing
  from a checkpoint and fills them with random numbers; here that is an error
  naming the file, because a half-random model gives plausible-looking but
  meaningless maps.
- **Provenance.**  The sha256 of the weight files actually read is stored with
  every embedding set.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from core.models import stages
from core.models.base import GENERIC_SEPARATOR, ModelEntry, ModelError, ModelUnavailable, batch_size, get_entry
from core.models.weights import reachable, sha256_file

#: Weight-file names that ``from_pretrained`` reads, in its order of preference.
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

_TRUE = {"1", "on", "yes", "true"}


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved from the environment as huggingface_hub does."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "huggingface" / "hub"


def hub_offline() -> bool:
    """Whether the user asked for no hub access (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``)."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable() -> bool:
    """Whether the hub answers a TCP connection (:func:`core.models.weights.reachable`).

    Behind an HTTPS proxy a direct connection proves nothing, so a configured
    proxy counts as reachable and a failed download reports itself at load.
    """
    if hub_offline():
        return False
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    return reachable(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")


def is_local_folder(spec: str) -> bool:
    return Path(spec).expanduser().is_dir()


def generic_entry(family: str, spec: str, dim_field: str, default_dim: int, description: str, params: dict,
                  **fields) -> ModelEntry:
    """The entry of a generic key ``family:ID_OR_PATH``: any checkpoint of the family saved with ``save_pretrained``.

    Parameters
    ----------
    family : str
    spec : str
        A hub id, or a local folder made absolute.
    dim_field, default_dim : str, int
        The ``config.json`` field holding the dimension, and the dimension
        that stands while the config is not on this machine
        (:func:`load_checkpoint` reads the entry again once it is).
    description : str
    params : dict
        The family's ``load`` settings besides ``hub_id``.
    **fields
        The other :class:`ModelEntry` fields the family's checkpoints share.
    """
    config = read_config(spec)
    where = "local folder" if is_local_folder(spec) else "Hugging Face hub"
    return ModelEntry(
        key=f"{family}{GENERIC_SEPARATOR}{spec}",
        family=family,
        dim=int(config.get(dim_field, default_dim)) if config else default_dim,
        licence="see the checkpoint's model card",
        weights=f"{where}: {spec}",
        description=description,
        params={"hub_id": spec, **params},
        **fields,
    )


def weight_files(folder: Path) -> list[Path]:
    """The weight files ``from_pretrained`` reads from a folder, or [] when it holds none.

    A sharded checkpoint is listed through its index; an index whose shards
    are not all present counts as no weights.
    """
    for index_name in WEIGHT_INDEXES:
        index = folder / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (ValueError, KeyError, TypeError) as exc:
                raise ModelError(f"{index} is not a valid weight index ({exc}).") from None
            paths = [folder / name for name in shards]
            return paths if all(p.is_file() for p in paths) else []
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return [folder / name]
    return []


def snapshot_folder(spec: str) -> Path | None:
    """The folder holding a checkpoint's files on this machine, or None when it is not here.

    Parameters
    ----------
    spec : str
        A local folder or a hub id such as ``"laion/clap-htsat-unfused"``.
        A cached hub checkpoint counts when its ``config.json`` and weight
        files are there.
    """
    if is_local_folder(spec):
        return Path(spec).expanduser()
    from huggingface_hub import try_to_load_from_cache

    try:
        config = try_to_load_from_cache(spec, "config.json", cache_dir=hub_cache_dir())
    except ValueError:  # not a valid repo id
        return None
    if not isinstance(config, str):
        return None
    folder = Path(config).parent
    return folder if weight_files(folder) else None


def read_config(spec: str) -> dict | None:
    """A checkpoint's ``config.json`` when it is on this machine; never downloads."""
    if is_local_folder(spec):
        path = Path(spec).expanduser() / "config.json"
    else:
        from huggingface_hub import try_to_load_from_cache

        try:
            found = try_to_load_from_cache(spec, "config.json", cache_dir=hub_cache_dir())
        except ValueError:
            return None
        if not isinstance(found, str):
            return None
        path = Path(found)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise ModelError(f"{path} is not valid JSON.") from None


def unavailable_reason(key: str, spec: str) -> str:
    """The one sentence shown when a hub checkpoint is neither cached nor downloadable."""
    return (
        f"{key}: the {spec} weights are not in the local Hugging Face cache and the hub cannot be reached; "
        f"connect once or point HF_HOME at a cache that has them."
    )


def availability(key: str, spec: str) -> tuple[bool, str]:
    """Whether a checkpoint can be loaded, without loading or downloading anything.

    Returns
    -------
    (bool, str)
        ``(True, "")`` when the files are here; ``(True, note)`` when they will
        be downloaded on first use; ``(False, one sentence)`` otherwise.
    """
    if is_local_folder(spec):
        folder = Path(spec).expanduser()
        if not (folder / "config.json").is_file() or not weight_files(folder):
            what = "no config.json" if not (folder / "config.json").is_file() else "no model.safetensors or pytorch_model.bin"
            return False, f"{key}: the folder {folder} is not a complete checkpoint ({what}); save it with save_pretrained."
        return True, ""
    if snapshot_folder(spec) is not None:
        return True, ""
    if hub_reachable():
        return True, f"{key}: the weights are downloaded from the Hugging Face hub ({spec}) on first use."
    return False, unavailable_reason(key, spec)


def source(key: str, spec: str) -> tuple[str, dict]:
    """What to pass to ``from_pretrained``: the name and the cache keywords.

    A cached checkpoint is read with ``local_files_only`` so that loading
    never waits on the network.

    Raises
    ------
    ModelUnavailable
        When the checkpoint is not here and the hub cannot be reached.
    """
    if is_local_folder(spec):
        return str(Path(spec).expanduser()), {}
    kwargs = {"cache_dir": str(hub_cache_dir())}
    if snapshot_folder(spec) is not None:
        return spec, {**kwargs, "local_files_only": True}
    if not hub_reachable():
        raise ModelUnavailable(unavailable_reason(key, spec))
    return spec, kwargs


def load_model(model_class, key: str, spec: str, **kwargs):
    """``model_class.from_pretrained`` that refuses incomplete or broken weight files.

    Returns
    -------
    model : torch.nn.Module
        In eval mode.
    folder : Path
        Where its files were read from (for :func:`weights_digest`).

    Raises
    ------
    ModelUnavailable
        When the checkpoint is not here and cannot be downloaded.
    ModelError
        Naming the weight file when it is truncated, has wrong shapes, or
        lacks weights the architecture needs.
    """
    name, hub_kwargs = source(key, spec)
    try:
        model, info = model_class.from_pretrained(name, output_loading_info=True, **hub_kwargs, **kwargs)
    except Exception as exc:  # torch, safetensors and transformers each raise their own types for torn files
        folder = snapshot_folder(spec)
        if folder is None and isinstance(exc, OSError):
            raise ModelUnavailable(f"{key}: {spec} could not be fetched ({first_line(exc)}); "
                                   f"connect once or point HF_HOME at a cache that has it.") from None
        where = _describe(folder) if folder is not None else spec
        raise ModelError(f"{key}: {where} is truncated or does not match its config.json ({first_line(exc)}); "
                         f"download it again or re-save it with save_pretrained.") from None
    folder = snapshot_folder(spec)
    if folder is None:  # present a moment ago; a concurrent cache clean-up
        raise ModelUnavailable(unavailable_reason(key, spec))
    missing = sorted(info.get("missing_keys") or ())
    if missing or info.get("mismatched_keys"):
        bad = missing or sorted(str(k) for k in info["mismatched_keys"])
        raise ModelError(
            f"{key}: {_describe(folder)} lacks {len(bad)} weight(s) a {model_class.__name__} needs "
            f"(e.g. {', '.join(bad[:3])}); it is not a checkpoint of this architecture."
        )
    return model.eval(), folder


def load_processor(processor_class, key: str, spec: str):
    """``processor_class.from_pretrained`` with the errors of :func:`load_model`.

    Raises
    ------
    ModelUnavailable
        When the checkpoint is not here and cannot be downloaded.
    ModelError
        When the folder's processor files are missing or broken.
    """
    name, hub_kwargs = source(key, spec)
    if hub_kwargs.get("local_files_only") and hub_reachable():
        try:  # the cache may hold the model but not its processor files
            return processor_class.from_pretrained(name, **hub_kwargs)
        except OSError:
            hub_kwargs = {**hub_kwargs, "local_files_only": False}
    try:
        return processor_class.from_pretrained(name, **hub_kwargs)
    except (OSError, ValueError, TypeError) as exc:
        if snapshot_folder(spec) is None:
            raise ModelUnavailable(f"{key}: {spec} could not be fetched ({first_line(exc)}); "
                                   f"connect once or point HF_HOME at a cache that has it.") from None
        raise ModelError(f"{key}: the processor files of {spec} could not be loaded: {first_line(exc)}.") from None


def load_checkpoint(entry: ModelEntry, model_class, processor_class, device: str, check=None, **model_kwargs):
    """Load the model and processor of the checkpoint ``entry.params["hub_id"]`` names, strictly.

    The processor comes first: it is small, and ``check`` can refuse it
    before the weights are read.

    Parameters
    ----------
    entry : ModelEntry
    model_class, processor_class
        ``transformers`` classes whose ``from_pretrained`` reads the checkpoint.
    device : str
    check : callable, optional
        ``check(processor)`` raises :class:`ModelError` for a processor the
        family cannot use.
    **model_kwargs
        Passed on to ``from_pretrained`` (e.g. a rebuilt ``config``).

    Returns
    -------
    entry : ModelEntry
        For a generic key, read again now that the checkpoint's config is on
        this machine: the true dimension.
    model : torch.nn.Module
        In eval mode, on ``device``.
    processor
    weights_sha256 : str

    Raises
    ------
    ModelUnavailable
        When the checkpoint is neither here nor downloadable.
    ModelError
        When its files are broken or not of ``model_class``.
    """
    spec = entry.params["hub_id"]
    processor = load_processor(processor_class, entry.key, spec)
    if check is not None:
        check(processor)
    model, folder = load_model(model_class, entry.key, spec, **model_kwargs)
    if GENERIC_SEPARATOR in entry.key:
        entry = get_entry(entry.key)
    return entry, model.to(device), processor, weights_digest(folder)


class HubAdapter:
    """What the adapters of hub checkpoints share: the protocol's attributes, and a model with its processor on one device.

    Attributes
    ----------
    entry : ModelEntry
    version : str
        The family's, set by the subclass.
    weights_sha256 : str
    tag_names : dict
        Empty: hub checkpoints have no named output columns.
    model : transformers.PreTrainedModel
        In eval mode, on ``device``.
    processor
        The checkpoint's processor or feature extractor.
    device : str
    batch_size : int
        Items per forward pass: 4 on a CPU, the family's ``cuda_batch`` on a
        GPU, lowered to fit ``entry.params["item_mib"]`` per item in half the
        free memory.
    """

    version: str
    cuda_batch: int

    def __init__(self, entry: ModelEntry, model, processor, weights_sha256: str, device: str):
        self.entry = entry
        self.weights_sha256 = weights_sha256
        self.tag_names: dict[str, list[str]] = {}
        self.model = model
        self.processor = processor
        self.device = device
        self.batch_size = batch_size(device, cpu=4, cuda=self.cuda_batch, item_mib=entry.params["item_mib"])

    def embed(self, audio: np.ndarray, sr: int, segments: np.ndarray, offset_s: float = 0.0) -> dict[str, np.ndarray]:
        """Embed segments; see :class:`core.models.base.Adapter` (each segment is seen alone: ``offset_s`` is unused)."""
        return stages.embed(self, audio, sr, segments, offset_s)


def weights_digest(folder: Path) -> str:
    """sha256 of the weight file, or of the sorted ``name:sha256`` lines of a sharded checkpoint."""
    files = weight_files(folder)
    if not files:
        raise ModelError(f"{folder} holds no model.safetensors or pytorch_model.bin.")
    if len(files) == 1:
        return sha256_file(files[0])
    lines = "".join(f"{p.name}:{sha256_file(p)}\n" for p in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def segment_chunks(key: str, audio: np.ndarray, sr: int, segments: np.ndarray, rate: int, window: int,
                   min_samples: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Resample a block to a model's rate and cut each segment into inputs of at most ``window`` samples.

    Transformers with a fixed or bounded input length (CLAP's 10 s, MERT's
    5 s passes) see each segment on its own: a segment longer than the window
    is split into the fewest equal chunks that fit, so no chunk is a sliver.
    A segment shorter than ``min_samples`` (one model frame), or lying outside
    the audio, is widened around its centre to that length within the audio,
    so every segment yields a row.  Resampling is the project's default,
    :func:`core.audio.resample` (soxr HQ): neither model ships a resampler.

    Parameters
    ----------
    key : str
        The model key, for error messages.
    audio : np.ndarray [shape=(n_samples,)]
        Mono audio at ``sr``.
    sr : int
    segments : np.ndarray [shape=(n, 2)]
        Start and end in seconds relative to ``audio[0]``.
    rate : int
        The model's sample rate.
    window : int
        Longest input, in samples at ``rate``.
    min_samples : int
        Shortest input, in samples at ``rate``.

    Returns
    -------
    chunks : list of np.ndarray [shape=(<= window,), dtype=float32]
    owner : np.ndarray [shape=(len(chunks),), dtype=int]
        Index of the segment each chunk belongs to; every segment owns at least one.
    """
    from core.audio import resample

    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if audio.size == 0:
        raise ModelError(f"{key}: the audio holds no samples.")
    audio = resample(audio, sr, rate)
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    n = len(audio)
    a = np.clip(np.round(segments[:, 0] * rate), 0, n).astype(int)
    b = np.clip(np.round(segments[:, 1] * rate), 0, n).astype(int)
    width = min(min_samples, n)
    short = (b - a) < width
    centre = np.round((segments[:, 0] + segments[:, 1]) / 2 * rate).astype(int)
    a = np.where(short, np.clip(centre - width // 2, 0, n - width), a)
    b = np.where(short, a + width, b)
    chunks: list[np.ndarray] = []
    owner: list[int] = []
    for i, (lo, hi) in enumerate(zip(a, b)):
        pieces = -(-(hi - lo) // window)
        edges = np.linspace(lo, hi, pieces + 1).round().astype(int)
        for start, end in zip(edges[:-1], edges[1:]):
            chunks.append(audio[start:end])
            owner.append(i)
    return chunks, np.asarray(owner, dtype=int)


def chunk_items(key: str, audio: np.ndarray, sr: int, segments: np.ndarray, rate: int, window: int,
                min_samples: int) -> stages.Prepared:
    """A CLAP or MERT block's CPU stage: :func:`segment_chunks` as items, right-padded to the longest.

    The plan is ``(owner, n_segments)``: the segment each item belongs to.
    """
    chunks, owner = segment_chunks(key, audio, sr, segments, rate, window, min_samples)
    inputs, lengths = stages.pad_ragged(chunks)
    return stages.Prepared(len(chunks), stages.single_part(inputs, lengths), (owner, len(segments)))


def _describe(folder: Path) -> str:
    files = weight_files(folder)
    return ", ".join(str(p) for p in files) if files else str(folder)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".") if text else type(exc).__name__

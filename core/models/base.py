"""The adapter protocol and the model registry.

An adapter wraps one pretrained network so that the pipeline never needs to
know which one it is: it receives the audio around a list of segments of the
shared grid and returns one row per segment for every *space* it exposes.
This follows HEAR's common API (timestamp embeddings pooled into segment
embeddings), extended with named output spaces so that one forward pass can
fill, e.g., both ``musicnn-msd`` (penultimate layer) and
``musicnn-msd/taggram``.

The catalogue is data: each family module declares its checkpoints as a table
read by :func:`from_table` into a tuple ``CATALOGUE`` of :class:`ModelEntry`,
and a function ``load(entry, device) -> Adapter``.  What an adapter needs
from the pipeline (the dtype of its input) and what it offers beyond
``embed`` (text queries, tag names) are fields of its entry, so nothing is
guessed from the loaded object.  A family may also declare
``availability(entry) -> (bool, reason)`` and ``generic_entry(spec) ->
ModelEntry`` for keys of the form ``family:ID_OR_PATH``.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from pathlib import Path
from typing import Iterable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from core.errors import ModelError, ModelUnavailable

#: Family modules, in the order the catalogue lists them.
FAMILIES = ("dsp", "aisfx", "musicnn", "clap", "openl3", "mert")

#: Separator between a model key and the name of one of its extra outputs.
OUTPUT_SEPARATOR = "/"

#: Separator of the generic form ``family:ID_OR_PATH``.
GENERIC_SEPARATOR = ":"


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One catalogue entry: everything known about a model before loading it.

    ``outputs`` maps the name of each extra space to its dimension (the
    default space has the bare key and ``dim``).  ``params`` carries the
    family-specific settings the family's ``load`` needs, so that variants of
    one architecture are data rather than code.  ``suited_for`` lists the
    kinds of collection the model is suggested for (``"music"``,
    ``"general"``, ``"speech"``).

    ``input_dtype`` is the dtype of the mono mix ``embed`` is handed:
    float32, or float64 for ports whose original mixes and resamples in
    float64 and whose numbers depend on the last bits (OpenL3).

    ``capabilities`` names what the loaded adapter offers beyond ``embed``:

    - ``"text"``: ``embed_text(texts) -> float32[n, dim]`` into the default
      space (CLAP);
    - ``"tags"``: ``tag_names`` names the columns of its taggram outputs
      (MusiCNN);
    - ``"layers"`` is reserved for per-layer outputs (``KEY/lN``).

    ``bf16_cosine`` is the lowest per-segment cosine between the model's
    bfloat16 and float32 vectors measured on the shared data, or None where
    it was not measured; the model runs in bfloat16 only when it is at least
    :data:`core.models.precision.BF16_MIN_COSINE`.
    """

    key: str
    family: str
    dim: int
    sample_rate: int
    licence: str
    weights: str
    description: str = ""
    outputs: dict[str, int] = dataclasses.field(default_factory=dict)
    params: dict = dataclasses.field(default_factory=dict)
    suited_for: tuple[str, ...] = ()
    capabilities: frozenset[str] = frozenset()
    input_dtype: str = "float32"
    bf16_cosine: float | None = None

    @property
    def spaces(self) -> dict[str, int]:
        """Every space this model fills, as full key -> dimension."""
        spaces = {self.key: self.dim}
        for name, dim in self.outputs.items():
            spaces[f"{self.key}{OUTPUT_SEPARATOR}{name}"] = dim
        return spaces


#: Names a catalogue table may set on an entry; its other columns are ``params``.
_FIELDS = frozenset(field.name for field in dataclasses.fields(ModelEntry)) - {"family", "params"}

#: The entry fields that are templates filled from the table.
_TEMPLATES = ("description", "weights", "licence")


def from_table(family: str, columns: Sequence[str], rows: Iterable[Sequence], *,
               facts: Mapping[str, Mapping] | None = None, **shared) -> tuple[ModelEntry, ...]:
    """A family's catalogue entries, read from its table of checkpoints.

    As in MTG's ``models.yaml``, the models are declared as data and this one
    reader turns them into entries, so each fact about a model is written
    once and the list of keys can be read off the table.

    Parameters
    ----------
    family : str
    columns : sequence of str
        The name of each value of a row.
    rows : iterable of sequences
        One checkpoint per row, in display order.
    facts : dict, optional
        ``{column: {value: {name: value}}}``: what a column's value implies,
        stated once for all the rows that share it (OpenL3's content type
        implies what it was trained on and what it suits).
    **shared
        What every row of the family has.

    Returns
    -------
    tuple of ModelEntry

    Notes
    -----
    A name that is a :class:`ModelEntry` field (``key``, ``dim``,
    ``description``, ``capabilities``...) sets that field; a row's value wins
    over its facts, and facts over ``shared``.  The row's other columns are
    the entry's ``params``, the settings its family's ``load`` reads; other
    facts and shared values only fill templates.  ``description``,
    ``weights`` and ``licence`` are templates (:meth:`str.format`) filled
    with all of these, e.g. ``weights="Hugging Face hub: {hub_id}"``.

    A ``layers`` column (``L``, the number of transformer layers) makes the
    row's entry the mean of all ``L + 1`` hidden states
    (``params["layer"] = None``) and adds one entry per hidden state,
    ``KEY-l0`` ... ``KEY-lL`` (``params["layer"] = N``).
    """
    entries: list[ModelEntry] = []
    for row in rows:
        values = dict(zip(columns, row, strict=True))
        names = dict(shared)
        for column, by_value in (facts or {}).items():
            names.update(by_value[values[column]])
        names.update(values)
        fields = {k: v.format(**names) if k in _TEMPLATES else v for k, v in names.items() if k in _FIELDS}
        fields["capabilities"] = frozenset(fields.get("capabilities", ()))
        fields["outputs"] = dict(fields.get("outputs", {}))
        params = {k: v for k, v in values.items() if k not in _FIELDS and k != "layers"}
        layers = values.get("layers")
        if layers is None:
            entries.append(ModelEntry(family=family, params=params, **fields))
            continue
        about = fields.pop("description")
        mean = ModelEntry(family=family, description=f"{about}; mean of all {layers + 1} hidden states.",
                          params={**params, "layer": None}, **fields)
        entries.append(mean)
        entries.extend(
            dataclasses.replace(mean, key=f"{mean.key}-l{n}", description=f"{about}; hidden state {n} of {layers}.",
                                params={**params, "layer": n})
            for n in range(layers + 1)
        )
    return tuple(entries)


@runtime_checkable
class Adapter(Protocol):
    """A loaded model, in the staged form of :mod:`core.models.stages`.

    Attributes
    ----------
    entry : ModelEntry
        Declares the spaces, the input dtype and the capabilities.
    version : str
        Bumped whenever the adapter's numbers change for the same weights; a
        new version makes the pipeline replace stored vectors, never mix them.
    weights_sha256 : str
        Digest of the weight file(s) actually loaded (provenance).
    tag_names : dict[str, list[str]]
        For spaces whose columns are named scores (taggrams), the names.
    device : str
        Where the front end and the network run.
    batch_size : int
        Items per forward pass; each family sets a default for the device,
        and the pipeline's ``batch_size`` overrides it.
    equal_lengths : bool
        Whether only items of one length may share a batch.
    preparer
        The CPU stage: ``preparer(audio, sr, segments, offset_s) ->
        Prepared`` and ``preparer.finish(plan, outputs) -> rows``; it holds
        no network, so worker processes can run it.
    """

    entry: ModelEntry
    version: str
    weights_sha256: str
    tag_names: dict[str, list[str]]
    device: str
    batch_size: int
    equal_lengths: bool
    preparer: object

    def frontend(self, inputs, lengths):
        """Features of a batch of items on the device (torch tensors), in the original's arithmetic."""
        ...

    def network(self, features) -> dict:
        """The network's outputs for a batch of features: name -> tensor [shape=(b, ...)]."""
        ...

    def embed(self, audio: np.ndarray, sr: int, segments: np.ndarray, offset_s: float = 0.0) -> dict[str, np.ndarray]:
        """Embed the segments of a block of audio.

        Parameters
        ----------
        audio : np.ndarray [shape=(n_samples,), dtype=entry.input_dtype]
            Mono audio at the file's own rate: the whole track, or a block of
            whole segments with at least 2 s of context on each side.
        sr : int
            Sample rate of ``audio``; the adapter resamples with its own method.
        segments : np.ndarray [shape=(n, 2), dtype=float64]
            Start and end of each segment in seconds, relative to ``audio[0]``.
        offset_s : float
            Where ``audio[0]`` lies in the track.  Adapters that frame on a
            grid anchored at the track's start (OpenL3, aisfx, MusiCNN) use it
            so that a block of a long file frames as the whole track would
            (:func:`track_grid_start`); the others see each segment on its own
            and ignore it.

        Returns
        -------
        dict[str, np.ndarray [shape=(n, dim), dtype=float32]]
            One deterministic, finite row per segment for each space in
            ``entry.spaces``.
        """
        ...


def track_grid_start(offset_s: float, rate: int, hop: int) -> tuple[int, int]:
    """Where a block of a long file meets the track's frame grid (frame ``k`` centred on sample ``hop·k`` at ``rate``).

    For adapters that frame on the track's grid: a block starting
    ``offset_s`` into the track is cut by ``skip`` samples (at ``rate``) so
    that its first frame is the track's frame ``first_frame``.

    Returns
    -------
    first_frame, skip : int
    """
    first_sample = int(round(offset_s * rate))
    first_frame = -(-first_sample // hop)
    return first_frame, first_frame * hop - first_sample


def split_key(key: str) -> tuple[str, str]:
    """Split a space key into (model key, output name or '').

    Generic keys (``clap:laion/clap-htsat-unfused``) contain slashes of their
    own; for them only a suffix naming a declared output is split off.
    """
    if GENERIC_SEPARATOR not in key and OUTPUT_SEPARATOR in key:
        model, output = key.split(OUTPUT_SEPARATOR, 1)
        return model, output
    return key, ""


def _family_module(family: str):
    return importlib.import_module(f"core.models.{family}")


def catalogue() -> list[ModelEntry]:
    """Every fixed catalogue entry, in display order."""
    entries: list[ModelEntry] = []
    for family in FAMILIES:
        entries.extend(_family_module(family).CATALOGUE)
    return entries


def get_entry(key: str) -> ModelEntry:
    """Resolve a model key (fixed or ``family:ID_OR_PATH``) to its entry.

    Raises
    ------
    ModelError
        If the key names no known model.
    """
    model_key, output = split_key(key)
    for entry in catalogue():
        if entry.key == model_key:
            break
    else:
        family, sep, spec = model_key.partition(GENERIC_SEPARATOR)
        if not sep or family not in FAMILIES or not spec:
            known = ", ".join(e.key for e in catalogue())
            raise ModelError(
                f"Unknown model {key!r}; use one of {known}, or a generic key such as 'clap:PATH_OR_HUB_ID'."
            )
        module = _family_module(family)
        if not hasattr(module, "generic_entry"):
            raise ModelError(f"The {family} family takes no generic '{family}:…' keys.")
        entry = module.generic_entry(normalise_generic_spec(spec))
    if output and output not in entry.outputs:
        raise ModelError(f"Model {model_key!r} has no output {output!r}; it has {sorted(entry.outputs) or 'none'}.")
    return entry


def normalise_generic_spec(spec: str) -> str:
    """Make a local folder absolute so that a stored key means one thing."""
    path = Path(spec).expanduser()
    if spec.startswith((".", "/", "~")) or path.exists():
        return str(path.resolve())
    return spec


def normalise_key(key: str) -> str:
    """The key as stored: generic keys with local folders made absolute."""
    model_key, output = split_key(key)
    family, sep, spec = model_key.partition(GENERIC_SEPARATOR)
    if sep:
        model_key = f"{family}{GENERIC_SEPARATOR}{normalise_generic_spec(spec)}"
    return f"{model_key}{OUTPUT_SEPARATOR}{output}" if output else model_key


def availability(entry: ModelEntry) -> tuple[bool, str]:
    """Whether a model can be loaded here, without loading it.

    Returns ``(True, "")`` or ``(False, one sentence saying why and how to fix it)``.
    """
    module = _family_module(entry.family)
    check = getattr(module, "availability", None)
    if check is None:
        return True, ""
    try:
        return check(entry)
    except Exception as exc:  # an availability probe must never take the catalogue down
        return False, f"{entry.key} could not be checked: {exc}"


def model_table() -> list[dict]:
    """Every catalogue entry with whether it can be loaded here: what ``python -m core models`` prints and the app lists.

    Returns
    -------
    list of dict
        Per entry: ``key``, ``dim``, ``available``, ``reason`` (see
        :func:`availability`), ``family``, ``sample_rate``, ``licence``,
        ``weights``, ``outputs`` (full space key -> dim of each extra
        space), ``suited_for``, ``description``, ``bf16_cosine`` (the
        measured lowest cosine, or None) and ``bf16`` (whether it may run in
        bfloat16, :mod:`core.models.precision`).
    """
    from core.models.precision import allows_bf16

    rows = []
    for entry in catalogue():
        ok, reason = availability(entry)
        rows.append({"key": entry.key, "dim": entry.dim, "available": ok, "reason": reason, "family": entry.family,
                     "sample_rate": entry.sample_rate, "licence": entry.licence, "weights": entry.weights,
                     "outputs": {space: dim for space, dim in entry.spaces.items() if space != entry.key},
                     "suited_for": list(entry.suited_for), "description": entry.description,
                     "bf16_cosine": entry.bf16_cosine, "bf16": allows_bf16(entry)})
    return rows


def devices() -> list[str]:
    """Where models can run here: ``"cpu"``, then each CUDA GPU (``"cuda:0"``, ``"cuda:1"``, ...)."""
    try:
        import torch
    except ImportError:
        return ["cpu"]
    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def unavailable_families(rows: Sequence[dict]) -> dict[str, tuple[list[str], str]]:
    """The models that cannot load here, one entry per family: its keys and the first key's reason.

    Offline, the four CLAP checkpoints fail for one reason; people read it
    once, by family, where they pick models, rather than in a table of rows.

    Parameters
    ----------
    rows : sequence of dict
        :func:`model_table`'s rows.
    """
    families: dict[str, tuple[list[str], str]] = {}
    for row in rows:
        if not row["available"]:
            keys, reason = families.setdefault(row["family"], ([], row["reason"]))
            keys.append(row["key"])
    return families


def embeds_text(space: str) -> bool:
    """Whether queries in words can be searched in ``space``: a text-audio model's main space (not a layer or tag output)."""
    model_key, output = split_key(space)
    try:
        return "text" in get_entry(model_key).capabilities and not output
    except ModelError:
        return False


def why_unavailable(key: str) -> str | None:
    """Why ``key``'s model cannot be loaded here, or None when it can (or is no catalogue model)."""
    try:
        entry = get_entry(split_key(key)[0])
    except ModelError:
        return None
    ok, reason = availability(entry)
    return None if ok else reason


def default_device() -> str:
    """CUDA when present, else CPU; overridable with AEB_DEVICE."""
    forced = os.environ.get("AEB_DEVICE")
    if forced:
        return forced
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def load_model(key: str, device: str | None = None) -> Adapter:
    """Load the adapter of a model key.

    Raises
    ------
    ModelUnavailable
        With one sentence when weights are missing (e.g. offline).
    ModelError
        For unknown keys or broken weight files.
    """
    entry = get_entry(split_key(key)[0])
    module = _family_module(entry.family)
    return module.load(entry, device or default_device())


def batch_size(device: str, *, cpu: int, cuda: int, item_mib: float) -> int:
    """A family's default number of items per forward pass on a device.

    On a CPU a small batch already keeps the cores busy and bounds memory.
    On a GPU a large batch keeps it busy; it is lowered where it would take
    more than half of the free memory, ``item_mib`` being the peak
    activation memory of one item.

    Parameters
    ----------
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    cpu, cuda : int
        The family's batch on each kind of device.
    item_mib : float
        Peak memory of one item during inference, in MiB.
    """
    if not str(device).startswith("cuda"):
        return cpu
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return int(max(1, min(cuda, free / 2 / (item_mib * 2**20))))


def mean_by_segment(centres: np.ndarray, values: np.ndarray, segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average frame-level values over the frames whose centre lies in each segment.

    Parameters
    ----------
    centres : np.ndarray [shape=(n_frames,)]
        Centre time of each frame in seconds, on the same clock as ``segments``.
    values : np.ndarray [shape=(n_frames, dim)]
    segments : np.ndarray [shape=(n, 2)]
        Half-open intervals [start, end) in seconds.

    Returns
    -------
    means : np.ndarray [shape=(n, dim), dtype=float32]
        Zero rows where a segment holds no frame centre.
    empty : np.ndarray [shape=(n,), dtype=bool]
        Segments that held no frame centre; each adapter fills them by its
        own documented rule (nearest frame, an extra centred frame, ...).
    """
    centres = np.asarray(centres, dtype=np.float64)
    values = np.asarray(values, dtype=np.float32)
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    order = np.argsort(centres, kind="stable")
    sorted_centres = centres[order]
    lo = np.searchsorted(sorted_centres, segments[:, 0], side="left")
    hi = np.searchsorted(sorted_centres, segments[:, 1], side="left")
    means = np.zeros((len(segments), values.shape[1] if values.ndim == 2 else 0), dtype=np.float32)
    for i, (a, b) in enumerate(zip(lo, hi)):
        if b > a:
            means[i] = values[order[a:b]].mean(axis=0, dtype=np.float64)
    return means, hi <= lo

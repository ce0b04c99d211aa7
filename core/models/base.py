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
import re
from pathlib import Path
from typing import Iterable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from core.errors import BadInput, ModelError, ModelUnavailable

#: Family modules, in the order the catalogue lists them.
FAMILIES = ("dsp", "aisfx", "musicnn", "clap", "openl3", "mert")

#: Separator between a model key and the name of one of its extra outputs.
OUTPUT_SEPARATOR = "/"

#: Separator of the generic form ``family:ID_OR_PATH``.
GENERIC_SEPARATOR = ":"

#: Separator of a generic key's outputs (``mert:m-a-p/MERT-v1-95M#l6``): hub ids and paths hold slashes.
GENERIC_OUTPUT_SEPARATOR = "#"

#: What an output's name may hold, so that a ``#`` inside a path is not read as a separator.
_OUTPUT_NAME = re.compile(r"[A-Za-z0-9_]+")

#: The name of hidden state N's output: ``l6``.
LAYER_PREFIX = "l"

#: A layer space as keys spelled it before layers were outputs (``mert-v1-95m-l6``), still accepted.
_LEGACY_LAYER = re.compile(r"(?P<model>.+)-l(?P<layer>[0-9]+)")


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
    - ``"layers"``: ``layers`` lists the hidden states that ``embed`` also
      returns, each as the space ``KEY/lN`` (MERT).  A run stores the ones
      it is asked for (:func:`spaces_to_fill`); the forward pass computes
      them all anyway.

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
    layers: tuple[int, ...] = ()

    def output_key(self, output: str) -> str:
        """The space key of one of this model's outputs: ``KEY/OUTPUT``, or ``KEY#OUTPUT`` for a generic key."""
        return join_key(self.key, output)

    @property
    def layer_spaces(self) -> dict[int, str]:
        """Hidden state N -> its space key (``KEY/lN``), for every layer the model exposes."""
        return {n: self.output_key(f"{LAYER_PREFIX}{n}") for n in self.layers}

    @property
    def default_spaces(self) -> dict[str, int]:
        """The spaces every run stores, as full key -> dimension: the default and the extra outputs, no layer."""
        return {self.key: self.dim, **{self.output_key(name): dim for name, dim in self.outputs.items()}}

    @property
    def spaces(self) -> dict[str, int]:
        """Every space ``embed`` fills, as full key -> dimension: the default spaces and every layer's."""
        return {**self.default_spaces, **{space: self.dim for space in self.layer_spaces.values()}}


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

    A ``layers`` column holds ``L``, the number of transformer layers, as
    MTG's catalogue lists a model's layers: the entry exposes the ``L + 1``
    hidden states as ``layers = (0, …, L)`` and gains the ``"layers"``
    capability (its default space is then, by the family's rule, the mean
    of all hidden states).
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
        if "layers" in fields:
            fields["layers"] = tuple(range(fields["layers"] + 1))
            fields["capabilities"] |= {"layers"}
        params = {k: v for k, v in values.items() if k not in _FIELDS}
        entries.append(ModelEntry(family=family, params=params, **fields))
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


def join_key(model_key: str, output: str) -> str:
    """A space key from a model key and an output name (the inverse of :func:`split_key`)."""
    if not output:
        return model_key
    separator = GENERIC_OUTPUT_SEPARATOR if GENERIC_SEPARATOR in model_key else OUTPUT_SEPARATOR
    return f"{model_key}{separator}{output}"


def split_key(key: str) -> tuple[str, str]:
    """Split a space key into (model key, output name or '').

    Generic keys (``mert:m-a-p/MERT-v1-95M``, ``mert:/data/my-mert``) hold
    slashes of their own, so their outputs follow a ``#`` instead:
    ``mert:/data/my-mert#l6``.  Only a suffix that can be an output's name
    (letters, digits, ``_``) is split off, so a ``#`` inside a folder name
    followed by anything else stays part of the path.
    """
    if GENERIC_SEPARATOR in key:
        model, sep, output = key.rpartition(GENERIC_OUTPUT_SEPARATOR)
        if sep and model and _OUTPUT_NAME.fullmatch(output):
            return model, output
        return key, ""
    if OUTPUT_SEPARATOR in key:
        model, output = key.split(OUTPUT_SEPARATOR, 1)
        return model, output
    return key, ""


def layer_of(key: str) -> tuple[str, int] | None:
    """The model and hidden state a space key names, in either spelling, or None for any other space.

    ``mert-v1-95m/l6``, its legacy alias ``mert-v1-95m-l6`` and
    ``mert:PATH#l6`` all name hidden state 6; so does a stored space of that
    name whose model is no longer in the catalogue.  This reads the name
    only: whether the model has that layer is :func:`get_entry`'s question.
    """
    model, output = split_key(key)
    if output:
        match = re.fullmatch(f"{LAYER_PREFIX}([0-9]+)", output)
        return (model, int(match.group(1))) if match else None
    legacy = _LEGACY_LAYER.fullmatch(key)
    if legacy and GENERIC_SEPARATOR not in key:
        return legacy.group("model"), int(legacy.group("layer"))
    return None


def canonical_key(key: str) -> str:
    """The current spelling of a key: a legacy layer key (``mert-v1-95m-l6``) becomes ``mert-v1-95m/l6``.

    Only keys whose model is a catalogue entry with that layer are rewritten,
    so an imported space that merely ends in ``-l3`` keeps its name.
    """
    legacy = _LEGACY_LAYER.fullmatch(key)
    if legacy is None or GENERIC_SEPARATOR in key or OUTPUT_SEPARATOR in key:
        return key
    layer = int(legacy.group("layer"))
    for entry in catalogue():
        if entry.key == legacy.group("model") and layer in entry.layers:
            return entry.layer_spaces[layer]
    return key


def stored_name(key: str, stored) -> str:
    """The name under which a store holds a space: the key as given, or its other spelling if only that is stored.

    Stored spaces are never renamed, so a store extracted before layers were
    outputs holds ``mert-v1-95m-l6`` where a new one holds
    ``mert-v1-95m/l6``; both keys find either.

    Parameters
    ----------
    key : str
        A space key in any spelling (normalise it first, :func:`normalise_key`).
    stored : collection of str
        The spaces the store holds.

    Returns
    -------
    str
        The stored name, or the canonical key when neither spelling is stored.
    """
    canonical = canonical_key(key)
    found = layer_of(canonical)
    spellings = [canonical]
    if found is not None and GENERIC_SEPARATOR not in canonical:
        spellings.append(f"{found[0]}-{LAYER_PREFIX}{found[1]}")
    return next((name for name in spellings if name in stored), canonical)


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
        If the key names no known model, or an output or layer it lacks.
    """
    model_key, output = split_key(canonical_key(key))
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
    if output and output not in entry.outputs and join_key(entry.key, output) not in entry.layer_spaces.values():
        offers = sorted(entry.outputs) + ([f"layers {layer_range(entry.layers)} as {LAYER_PREFIX}N"] if entry.layers else [])
        raise ModelError(f"Model {model_key!r} has no output {output!r}; it has {', '.join(offers) or 'none'}.")
    return entry


def normalise_generic_spec(spec: str) -> str:
    """Make a local folder absolute so that a stored key means one thing."""
    path = Path(spec).expanduser()
    if spec.startswith((".", "/", "~")) or path.exists():
        return str(path.resolve())
    return spec


def normalise_key(key: str) -> str:
    """The key as new spaces are stored: generic keys with local folders made absolute, legacy layer keys respelled."""
    model_key, output = split_key(canonical_key(key))
    family, sep, spec = model_key.partition(GENERIC_SEPARATOR)
    if sep:
        model_key = f"{family}{GENERIC_SEPARATOR}{normalise_generic_spec(spec)}"
    return join_key(model_key, output)


def layer_range(layers) -> str:
    """Layers as people write them: ``0-12``, or ``0-3, 6, 9-12``."""
    runs: list[list[int]] = []
    for n in sorted(set(layers)):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(f"{r[0]}" if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def parse_layers(spec: str) -> tuple[int, ...] | str:
    """Read a choice of hidden states: ``all``, ``6``, ``0-12`` or ``0-3,6,9-12``.

    Returns
    -------
    ``"all"`` or a sorted tuple of distinct layer numbers.

    Raises
    ------
    BadInput
        For anything else, with the accepted spellings.
    """
    text = str(spec).strip().lower()
    if text == "all":
        return "all"
    layers: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?", part)
        if match is None or (match.group(2) is not None and int(match.group(2)) < int(match.group(1))):
            raise BadInput(f"Cannot read the layers {spec!r}; write all, one layer (6), a range (0-12) or a list (0-3,6).")
        first = int(match.group(1))
        layers.update(range(first, int(match.group(2) or first) + 1))
    return tuple(sorted(layers))


def spaces_to_fill(entry: ModelEntry, outputs=(), layers: tuple[int, ...] | str | None = None) -> dict[str, int]:
    """The spaces a run of one model stores, as full key -> dimension.

    Every run stores the model's default spaces (the mean of all hidden
    states, for a model with layers); hidden states are added when asked
    for, by name (``KEY/l6``) or by a choice of layers, which applies to
    every model that has layers and is ignored by the others.

    Parameters
    ----------
    entry : ModelEntry
    outputs : iterable of str
        Output names asked for by space keys (``l6`` from ``mert-v1-95m/l6``).
    layers : ``"all"``, tuple of int, or None
        From :func:`parse_layers`.

    Raises
    ------
    ModelError
        When a layer is asked for that the model does not have.
    """
    wanted = [int(n) for n in (entry.layers if layers == "all" else layers or ())] if entry.layers else []
    for output in outputs:
        found = layer_of(join_key(entry.key, output))
        if found is not None and entry.layers:
            wanted.append(found[1])
    missing = sorted(set(wanted) - set(entry.layers))
    if missing:
        raise ModelError(f"{entry.key} has hidden states {layer_range(entry.layers)}, not {layer_range(missing)}; "
                         f"choose layers within that range or --layers all.")
    layer_spaces = entry.layer_spaces
    return {**entry.default_spaces, **{layer_spaces[n]: entry.dim for n in sorted(set(wanted))}}


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
        space every run stores), ``layers`` (the hidden states a run can
        add as ``KEY/lN``; empty for models without layers), ``suited_for``,
        ``description``, ``bf16_cosine`` (the measured lowest cosine, or
        None) and ``bf16`` (whether it may run in bfloat16,
        :mod:`core.models.precision`).
    """
    from core.models.precision import allows_bf16

    rows = []
    for entry in catalogue():
        ok, reason = availability(entry)
        rows.append({"key": entry.key, "dim": entry.dim, "available": ok, "reason": reason, "family": entry.family,
                     "sample_rate": entry.sample_rate, "licence": entry.licence, "weights": entry.weights,
                     "outputs": {space: dim for space, dim in entry.default_spaces.items() if space != entry.key},
                     "layers": list(entry.layers), "suited_for": list(entry.suited_for),
                     "description": entry.description,
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

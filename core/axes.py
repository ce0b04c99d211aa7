"""Map axes that mean something: similarity to a text prompt, prompt A − prompt B, or one tag of a tagger.

A reduction's axes are whatever direction the data varies most in; a sound
designer thinks in words ("calm" ↔ "aggressive", "wooden").  In a space that
shares its geometry with text (CLAP) an axis can be the cosine of every point
to a prompt's embedding, or the difference of two such cosines; in a space
whose outputs are named tags (MusiCNN's taggram) an axis can be one tag's
score.  Either axis of an Explore view can be one of these instead of a
reduction's coordinate.  The pages embed the prompts (and cache them); this
module only scores stored vectors, so it is tested without a browser.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import pandas as pd

from core.errors import BadInput, ModelError, check_level
from core.models.base import get_entry, split_key
from core.store import Store
from core.vectors import normalize

#: What an axis can show: a reduction's coordinate, a prompt's cosine, two prompts' difference, a tag's score.
KINDS = ("reduction", "prompt", "prompt difference", "tag")

#: The output of a tagger that holds its named tags.
TAGGRAM = "taggram"


def text_model(space: str) -> str | None:
    """The catalogue model that embeds text into a stored space, or None.

    Only a text-audio model's own space qualifies (CLAP): its layers or extra
    outputs, audio-only models and imported vectors have no text tower.
    """
    model_key, output = split_key(space)
    try:
        entry = get_entry(model_key)
    except ModelError:
        return None
    return model_key if "text" in entry.capabilities and not output else None


def tag_space(space: str, stored: pd.DataFrame) -> str | None:
    """The stored space whose dimensions name the tags of ``space``: itself, or its model's taggram, or None.

    Parameters
    ----------
    space : str
    stored : pd.DataFrame
        :meth:`core.store.Store.spaces`, with ``space`` and ``tag_names`` (a JSON list or missing).
    """
    named = {s for s, tags in zip(stored["space"], stored["tag_names"]) if isinstance(tags, str) and json.loads(tags)}
    for candidate in (space, f"{split_key(space)[0]}/{TAGGRAM}"):
        if candidate in named:
            return candidate
    return None


def prompt_scores(vectors: np.ndarray, prompt: np.ndarray, minus: np.ndarray | None = None) -> np.ndarray:
    """Cosine of every vector to a prompt's embedding, less its cosine to a second prompt's.

    Parameters
    ----------
    vectors : np.ndarray [shape=(n, dim)]
    prompt, minus : np.ndarray [shape=(dim,)]
        Text embeddings in the same space; ``minus`` is optional.

    Returns
    -------
    np.ndarray [shape=(n,), dtype=float32]
        In [-1, 1] for one prompt, [-2, 2] for a difference.
    """
    x = normalize(np.asarray(vectors, dtype=np.float32))
    for text in (prompt, minus):
        if text is not None and np.shape(text) != (x.shape[1],):
            raise BadInput(f"A prompt embedding of shape {np.shape(text)} does not fit a {x.shape[1]}-D space.")
    scores = x @ normalize(np.asarray(prompt, dtype=np.float32)[None])[0]
    if minus is not None:
        scores = scores - x @ normalize(np.asarray(minus, dtype=np.float32)[None])[0]
    return scores.astype(np.float32)


def tag_scores(store: Store, space: str, tag: str, level: str = "segment") -> pd.Series:
    """One tag's score for every segment of a tagger's space, or its mean over each track's segments.

    The mean of the raw scores, not of normalised vectors (as the scene
    embedding is), so that a track's value stays a tag probability.

    Returns
    -------
    pd.Series
        Indexed by segment id (or track id), sorted.

    Raises
    ------
    BadInput
        When the space names no such tag.
    """
    check_level(level)
    names = store.require_space(space)["tag_names"] or []
    if tag not in names:
        raise BadInput(f"{space} has no tag {tag!r}; it has {len(names)} tags such as {', '.join(names[:5])}.")
    ids, x = store.vectors(space)
    values = pd.Series(x[:, names.index(tag)], index=ids)
    if level == "segment":
        return values
    return values.groupby(store.segment_tracks(ids)).mean().sort_index()


def axis_label(axis: dict) -> str:
    """How an axis is named on the chart: ``cos('calm')``, ``cos('calm') − cos('aggressive')``, ``tag 'rock'``."""
    if axis["kind"] == "prompt":
        return f"cos({axis['text']!r})"
    if axis["kind"] == "prompt difference":
        return f"cos({axis['text']!r}) − cos({axis['minus']!r})"
    if axis["kind"] == "tag":
        return f"tag {axis['tag']!r}"
    return ""


def replace_axes(ids: np.ndarray, xy: np.ndarray, values: Sequence[pd.Series | None]) -> tuple[np.ndarray, np.ndarray]:
    """A map's coordinates with either axis replaced by per-point values; points lacking a value are left out.

    Parameters
    ----------
    ids : np.ndarray [shape=(n,)]
        The points of the map (segment or track ids).
    xy : np.ndarray [shape=(n, 2)] or None
        The reduction's coordinates; None when both axes are replaced.
    values : two pd.Series (indexed by id) or None
        The horizontal and vertical axis; None keeps the reduction's.

    Returns
    -------
    ids : np.ndarray [shape=(m,)]
    xy : np.ndarray [shape=(m, 2), dtype=float32]
    """
    ids = np.asarray(ids)
    columns = []
    for axis, series in enumerate(values):
        if series is None:
            if xy is None:
                raise BadInput("Both axes come from the reduction, so its coordinates are needed.")
            columns.append(np.asarray(xy, dtype=np.float32)[:, axis])
        else:
            columns.append(series.reindex(ids).to_numpy(dtype=np.float32))
    out = np.column_stack(columns)
    keep = np.isfinite(out).all(axis=1)
    return ids[keep], out[keep]

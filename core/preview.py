"""Look before you listen: a segment's waveform and log-mel spectrogram in its context.

A list of twenty players tells nothing until each is played.  A picture of
each segment with a few seconds around it (silence, an onset, a sweep, a
drum loop) lets the eye pick what to hear.  The segment is drawn inside its
context, highlighted, so a segment cut mid-event shows as such.

The spectrogram travels as one PNG per segment rather than as thousands of
chart rectangles, so a page of twenty results stays light in the browser.
"""

from __future__ import annotations

import base64
import dataclasses
import io
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd

from core import audio

#: Seconds of audio shown (and offered to the player) on each side of a segment.
CONTEXT_S = 3.0

#: Rate at which every preview is analysed, so that previews of files at different rates look alike.
PREVIEW_SR = 22_050

#: The log-mel analysis of the previews (librosa's defaults at :data:`PREVIEW_SR`, fewer bands).
N_MELS, N_FFT, HOP = 64, 1024, 256

#: Decibels below the loudest bin that the colour scale spans.
TOP_DB = 80.0

#: viridis, the colour scale of every spectrogram (d3's ten-stop version, interpolated).
_VIRIDIS = ("#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b",
            "#fde725")


@dataclasses.dataclass(frozen=True)
class Preview:
    """What the preview chart draws; every time is in seconds of the track.

    ``envelope`` is the waveform's minimum and maximum per column, so a
    waveform of any length draws with a fixed number of points.
    """

    path: str
    start_s: float
    end_s: float
    view_start_s: float
    view_end_s: float
    times: np.ndarray  # [shape=(columns,)] centre of each waveform column
    envelope: np.ndarray  # [shape=(columns, 2)] min and max sample
    log_mel: np.ndarray  # [shape=(N_MELS, frames)] dB below the loudest bin, 0 … -TOP_DB


def context_span(start_s: float, end_s: float, duration_s: float, context_s: float = CONTEXT_S) -> tuple[float, float]:
    """The stretch shown around a segment: ``context_s`` on each side, cut at the track's ends."""
    return max(0.0, start_s - context_s), min(duration_s, end_s + context_s)


def segment_preview(path: str | Path, start_s: float, end_s: float, *, context_s: float = CONTEXT_S,
                    columns: int = 400) -> Preview:
    """Decode a segment with its context and compute what :func:`preview_chart` draws.

    Parameters
    ----------
    path : str or Path
    start_s, end_s : float
        The segment, in seconds of the track.
    context_s : float
        Audio shown on each side.
    columns : int
        Points of the waveform envelope.

    Raises
    ------
    core.audio.AudioError
        One line, when the file cannot be read.
    """
    import librosa

    meta = audio.info(path)
    t0, t1 = context_span(start_s, end_s, meta.duration_s, context_s)
    y, sr = audio.load(path, offset_s=t0, duration_s=t1 - t0)
    y = audio.resample(y, sr, PREVIEW_SR)
    if len(y) == 0:
        y = np.zeros(1, dtype=np.float32)
    edges = np.linspace(0, len(y), columns + 1).astype(np.int64)
    edges[1:] = np.maximum(edges[1:], edges[:-1] + 1)
    edges = np.minimum(edges, len(y))
    starts = np.minimum(edges[:-1], len(y) - 1)
    envelope = np.stack([np.minimum.reduceat(y, starts), np.maximum.reduceat(y, starts)], axis=1)
    times = t0 + (edges[:-1] + edges[1:]) / 2 / PREVIEW_SR
    mel = librosa.feature.melspectrogram(y=y, sr=PREVIEW_SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS)
    log_mel = librosa.power_to_db(mel, ref=np.max, top_db=TOP_DB)
    return Preview(str(path), float(start_s), float(end_s), t0, t1, times, envelope.astype(np.float32),
                   log_mel.astype(np.float32))


def spectrogram_png(log_mel: np.ndarray, top_db: float = TOP_DB) -> bytes:
    """A log-mel spectrogram as a viridis PNG, low frequencies at the bottom, one pixel per bin.

    Parameters
    ----------
    log_mel : np.ndarray [shape=(bands, frames)]
        dB relative to the loudest bin (0 at most), as :func:`segment_preview` gives.
    """
    from PIL import Image

    stops = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in _VIRIDIS], dtype=np.float64)
    level = np.clip(1.0 + np.asarray(log_mel, dtype=np.float64)[::-1] / top_db, 0.0, 1.0) * (len(stops) - 1)
    low = np.minimum(np.floor(level).astype(int), len(stops) - 2)
    frac = (level - low)[..., None]
    rgb = (stops[low] * (1 - frac) + stops[low + 1] * frac).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def preview_chart(preview: Preview, *, width: int = 640, compact: bool = False) -> alt.Chart:
    """The log-mel spectrogram (and, unless ``compact``, the waveform) of a segment in its context.

    The segment is outlined and its context dimmed; the x axis is seconds of
    the track, so the picture reads the same as the player's time.
    ``compact`` is the small version that Search results and Compare's
    neighbour lists show beside their players: the spectrogram only.
    """
    domain = [preview.view_start_s, preview.view_end_s]
    x_scale = alt.Scale(domain=domain, nice=False, zero=False)
    height = 56 if compact else 150
    url = "data:image/png;base64," + base64.b64encode(spectrogram_png(preview.log_mel)).decode()
    image = alt.Chart(pd.DataFrame({"url": [url]})).mark_image(
        width=width, height=height, aspect=False, align="left", baseline="top").encode(
        x=alt.value(0), y=alt.value(0), url="url:N")
    spans = pd.DataFrame({"a": [domain[0], preview.end_s], "b": [preview.start_s, domain[1]]})
    spans = spans[spans["b"] > spans["a"]]
    dim = alt.Chart(spans).mark_rect(color="white", opacity=0.45).encode(
        x=alt.X("a:Q", scale=x_scale, axis=None if compact else alt.Axis(title=None, labels=False, ticks=False)),
        x2="b:Q")
    segment = pd.DataFrame({"a": [preview.start_s], "b": [preview.end_s]})
    outline = alt.Chart(segment).mark_rect(fill=None, stroke="#d62728", strokeWidth=2).encode(
        x=alt.X("a:Q", scale=x_scale), x2="b:Q")
    spectrogram = alt.layer(image, dim, outline).properties(width=width, height=height)
    if compact:
        return spectrogram.configure_view(strokeWidth=0)
    wave = pd.DataFrame({"t": preview.times, "lo": preview.envelope[:, 0], "hi": preview.envelope[:, 1]})
    peak = float(max(1e-3, np.abs(preview.envelope).max()))
    waveform = alt.layer(
        alt.Chart(wave).mark_area(color="#4c78a8", opacity=0.9).encode(
            x=alt.X("t:Q", scale=x_scale, title="seconds"),
            y=alt.Y("lo:Q", scale=alt.Scale(domain=[-peak, peak]), axis=None), y2="hi:Q"),
        alt.Chart(segment).mark_rect(color="#d62728", opacity=0.12).encode(x=alt.X("a:Q", scale=x_scale), x2="b:Q"),
    ).properties(width=width, height=70)
    return alt.vconcat(spectrogram, waveform, spacing=4).configure_view(strokeWidth=0)

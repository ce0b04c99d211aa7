"""bfloat16 against float32: the per-segment check, who may run in bfloat16, and its provenance."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from core.audio import segment_grid
from core.errors import BadInput
from core.models import base, precision, stages
from tests.conftest import tone


def test_cosines_row_by_row_with_zero_rows():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(precision.cosines(a, b), [1.0, np.sqrt(0.5), 1.0, 0.0])


def test_bf16_runs_only_where_the_catalogue_clears_it():
    entry = base.get_entry("dsp")
    assert entry.bf16_cosine is None and precision.effective(entry, "bf16") == "fp32"
    for measured, runs in ((0.9995, "bf16"), (precision.BF16_MIN_COSINE, "bf16"), (0.998, "fp32")):
        assert precision.effective(dataclasses.replace(entry, bf16_cosine=measured), "bf16") == runs
    assert precision.effective(dataclasses.replace(entry, bf16_cosine=0.9999), "fp32") == "fp32"
    with pytest.raises(BadInput, match="fp32, bf16"):
        precision.effective(entry, "fp16")


def test_bf16_vectors_have_their_own_provenance():
    assert precision.version("2", "fp32") == "2"
    assert precision.version("2", "bf16") == "2+bf16"


def test_every_entry_states_what_bf16_did():
    for entry in base.catalogue():
        assert entry.bf16_cosine is None or 0.0 < entry.bf16_cosine <= 1.0, entry.key


def test_verify_compares_every_segment_at_both_precisions(aisfx_adapter):
    rng = np.random.default_rng(0)
    clips = [(tone(330, 4.0, sr=22050) + 0.05 * rng.standard_normal(88200).astype(np.float32), 22050),
             (tone(880, 2.5, sr=44100), 44100)]
    result = stages.verify_bf16(aisfx_adapter, clips, segment_grid)
    cosines = []
    for audio, sr in clips:
        segments = segment_grid(len(audio) / sr)
        fp32 = stages.embed(aisfx_adapter, audio, sr, segments, precision="fp32")["aisfx"]
        bf16 = stages.embed(aisfx_adapter, audio, sr, segments, precision="bf16")["aisfx"]
        assert not np.array_equal(fp32, bf16)  # the network really ran in bfloat16
        cosines.append(precision.cosines(fp32, bf16))
    assert result["segments"] == sum(len(c) for c in cosines) == 2
    assert result["min_cosine"] == pytest.approx(np.concatenate(cosines).min(), abs=1e-12)
    assert result["passes"] == (result["min_cosine"] >= precision.BF16_MIN_COSINE)
    assert stages.verify_bf16(aisfx_adapter, [], segment_grid)["passes"] is False  # nothing measured, nothing cleared

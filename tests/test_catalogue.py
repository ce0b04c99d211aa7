"""The catalogue as the families' tables declare it.

Keys and dimensions are what users store and type, so the whole list is
pinned: a change to a table, or to the one reader that turns tables into
entries, shows up here as a diff.
"""

from __future__ import annotations

import numpy as np

from core.models.base import catalogue, get_entry, model_table

MERT_95M = ["mert-v1-95m"] + [f"mert-v1-95m-l{n}" for n in range(13)]
MERT_330M = ["mert-v1-330m"] + [f"mert-v1-330m-l{n}" for n in range(25)]

KEYS_AND_DIMS = [
    ("dsp", 128),
    ("aisfx", 512),
    ("musicnn-msd", 200), ("musicnn-mtt", 200), ("vgg-msd", 256), ("vgg-mtt", 256),
    ("clap-htsat-unfused", 512), ("clap-htsat-fused", 512), ("clap-music-speech", 512), ("clap-music", 512),
    ("openl3-mel128-music-512", 512), ("openl3-mel128-music-6144", 6144),
    ("openl3-mel128-env-512", 512), ("openl3-mel128-env-6144", 6144),
    ("openl3-mel256-music-512", 512), ("openl3-mel256-music-6144", 6144),
    ("openl3-mel256-env-512", 512), ("openl3-mel256-env-6144", 6144),
    ("openl3-linear-music-512", 512), ("openl3-linear-music-6144", 6144),
    ("openl3-linear-env-512", 512), ("openl3-linear-env-6144", 6144),
    ("openl3-mel128-music-512-hop0.5", 512), ("openl3-mel128-env-512-hop0.5", 512),
    *[(key, 768) for key in MERT_95M],
    *[(key, 1024) for key in MERT_330M],
]


def test_every_key_and_dimension_in_display_order():
    assert [(e.key, e.dim) for e in catalogue()] == KEYS_AND_DIMS


def test_capabilities_and_input_dtype_are_declared_per_entry():
    by_key = {e.key: e for e in catalogue()}
    assert {k for k, e in by_key.items() if e.capabilities} == {
        "musicnn-msd", "musicnn-mtt", "vgg-msd", "vgg-mtt",
        "clap-htsat-unfused", "clap-htsat-fused", "clap-music-speech", "clap-music"}
    assert all(by_key[k].capabilities == {"tags"} for k in ("musicnn-msd", "musicnn-mtt", "vgg-msd", "vgg-mtt"))
    assert {k for k, e in by_key.items() if e.input_dtype != "float32"} == {k for k in by_key if k.startswith("openl3-")}
    assert all(np.dtype(e.input_dtype) in (np.float32, np.float64) for e in by_key.values())
    assert get_entry("clap:someone/some-clap").capabilities == {"text"}


def test_table_columns_become_params_and_facts_only_fill_templates():
    by_key = {e.key: e for e in catalogue()}
    env = by_key["openl3-mel256-env-6144"]
    assert env.params == {"input_repr": "mel256", "content_type": "env", "embedding_size": 6144, "hop_s": 0.1}
    assert env.suited_for == ("general",) and "environmental sound videos" in env.description
    assert env.weights == "marl/openl3 models branch: openl3_audio_mel256_env-v0_4_0.h5"
    assert by_key["musicnn-mtt"].params == {"arch": "musicnn", "checkpoint": "MTT_musicnn", "labels": "MTT_LABELS"}
    assert by_key["clap-music"].params == {"hub_id": "laion/larger_clap_music", "item_mib": 400}
    texts = [(e.description, e.weights, e.licence) for e in catalogue()]
    assert not any("{" in t or "}" in t for row in texts for t in row)
    assert len({d for d, _, _ in texts}) == len(texts)  # every entry says what sets it apart


def test_model_table_lists_every_entry_with_its_availability():
    rows = model_table()
    assert [(r["key"], r["dim"]) for r in rows] == KEYS_AND_DIMS
    assert list(rows[2]) == ["key", "dim", "available", "reason", "family", "sample_rate", "licence", "weights",
                             "outputs", "suited_for", "description", "bf16_cosine", "bf16"]
    assert rows[2]["outputs"] == {"musicnn-msd/taggram": 50}
    assert rows[0]["available"] is True and rows[0]["reason"] == ""
    assert all(isinstance(r["available"], bool) and isinstance(r["reason"], str) for r in rows)

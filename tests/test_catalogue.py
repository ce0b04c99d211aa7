"""The catalogue as the families' tables declare it.

Keys and dimensions are what users store and type, so the whole list is
pinned: a change to a table, or to the one reader that turns tables into
entries, shows up here as a diff.
"""

from __future__ import annotations

import numpy as np

from core.models.base import catalogue, get_entry, model_table

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
    ("mert-v1-95m", 768), ("mert-v1-330m", 1024),
]


def test_every_key_and_dimension_in_display_order():
    assert [(e.key, e.dim) for e in catalogue()] == KEYS_AND_DIMS


def test_capabilities_and_input_dtype_are_declared_per_entry():
    by_key = {e.key: e for e in catalogue()}
    assert {k for k, e in by_key.items() if e.capabilities} == {
        "musicnn-msd", "musicnn-mtt", "vgg-msd", "vgg-mtt",
        "clap-htsat-unfused", "clap-htsat-fused", "clap-music-speech", "clap-music", "mert-v1-95m", "mert-v1-330m"}
    assert all(by_key[k].capabilities == {"tags"} for k in ("musicnn-msd", "musicnn-mtt", "vgg-msd", "vgg-mtt"))
    assert {k for k, e in by_key.items() if e.layers} == {k for k, e in by_key.items() if "layers" in e.capabilities}
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
                             "outputs", "layers", "suited_for", "description", "bf16_cosine", "bf16"]
    assert rows[2]["outputs"] == {"musicnn-msd/taggram": 50} and rows[2]["layers"] == []
    mert = next(r for r in rows if r["key"] == "mert-v1-95m")
    assert mert["outputs"] == {} and mert["layers"] == list(range(13))
    assert rows[0]["available"] is True and rows[0]["reason"] == ""
    assert all(isinstance(r["available"], bool) and isinstance(r["reason"], str) for r in rows)


def test_layer_keys_in_every_spelling():
    from core.models.base import canonical_key, layer_of, normalise_key, split_key, stored_name

    assert get_entry("mert-v1-95m/l6").key == get_entry("mert-v1-95m-l6").key == "mert-v1-95m"
    assert canonical_key("mert-v1-95m-l6") == normalise_key("mert-v1-95m-l6") == "mert-v1-95m/l6"
    assert canonical_key("mert-v1-95m-l13") == "mert-v1-95m-l13"  # no such layer: not an alias
    assert canonical_key("my-space-l3") == "my-space-l3"  # an imported key that merely ends in -lN
    assert layer_of("mert-v1-95m/l6") == layer_of("mert-v1-95m-l6") == ("mert-v1-95m", 6)
    assert layer_of("mert:m-a-p/MERT-v1-95M#l12") == ("mert:m-a-p/MERT-v1-95M", 12)
    assert layer_of("musicnn-msd/taggram") is None and layer_of("mert-v1-95m") is None
    assert split_key("mert:/data/a#b/model") == ("mert:/data/a#b/model", "")  # a '#' inside a path stays there
    # stored spaces keep their names: both spellings find the legacy one, and a new store gets the new one
    assert stored_name("mert-v1-95m/l6", {"mert-v1-95m-l6"}) == "mert-v1-95m-l6"
    assert stored_name("mert-v1-95m-l6", {"mert-v1-95m-l6"}) == "mert-v1-95m-l6"
    assert stored_name("mert-v1-95m-l6", {"dsp"}) == "mert-v1-95m/l6"
    assert stored_name("mert-v1-95m/l6", {"mert-v1-95m/l6", "mert-v1-95m-l6"}) == "mert-v1-95m/l6"


def test_layer_choices_and_the_spaces_a_run_stores():
    import pytest

    from core.errors import BadInput, ModelError
    from core.models.base import parse_layers, spaces_to_fill

    assert parse_layers("all") == "all"
    assert parse_layers("6") == (6,) and parse_layers("0-3, 6,5") == (0, 1, 2, 3, 5, 6)
    for bad in ("", "3-1", "six", "1-2-3"):
        with pytest.raises(BadInput, match="write all, one layer"):
            parse_layers(bad)
    small = get_entry("mert-v1-95m")
    assert list(spaces_to_fill(small)) == ["mert-v1-95m"]
    assert list(spaces_to_fill(small, ["l6"])) == ["mert-v1-95m", "mert-v1-95m/l6"]
    assert list(spaces_to_fill(small, ["l6"], (0, 1))) == ["mert-v1-95m", "mert-v1-95m/l0", "mert-v1-95m/l1",
                                                           "mert-v1-95m/l6"]
    assert len(spaces_to_fill(small, layers="all")) == 14
    assert len(spaces_to_fill(get_entry("mert-v1-330m"), layers="all")) == 26
    assert spaces_to_fill(get_entry("musicnn-msd"), layers="all") == {"musicnn-msd": 200, "musicnn-msd/taggram": 50}
    with pytest.raises(ModelError, match="mert-v1-95m has hidden states 0-12, not 13-24"):
        spaces_to_fill(small, layers=tuple(range(25)))

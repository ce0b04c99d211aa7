"""Row labels kept in memory give the store's rows, and search results labelled from them are the store's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from core import spaces
from core.errors import StoreError
from core.exchange import vector_column
from core.labels import RowLabels
from core.search import search_store
from core.store import Provenance, Store, TrackRecord

DIM = 8


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "l.duckdb")
    s.ensure_grid(1.0, 1.0)
    s.prepare_space(Provenance("m", "m", DIM, "1", "sha"))
    rng = np.random.default_rng(0)
    metadata = [{"genre": "jazz", "year": 1990}, None, {"genre": "rock", "idx": "reserved name"}, {"mood": "calm"}]
    records = []
    for t, meta in enumerate(metadata):
        n = 3 + t
        segments = np.stack([np.arange(n), np.arange(n) + 1.0], axis=1)
        records.append(TrackRecord(f"/music/t{t}é.wav", f"h{t}", float(n), 22050, 1 + t % 2, "WAV", segments,
                                   {"m": rng.standard_normal((n, DIM)).astype(np.float32)}, meta))
    s.write_tracks(records)
    s.add_imported(Provenance("imp", "imp", DIM, "imported", "", source="imported"),
                   pa.Table.from_pandas(pd.DataFrame({"path": ["/elsewhere/x.wav"] * 2, "start_s": [0.0, 1.0],
                                                      "end_s": [1.0, 2.0], "label": ["a", "b"]}))
                   .append_column("vector", vector_column(rng.standard_normal((2, DIM)).astype(np.float32))))
    return s


def test_rows_from_memory_equal_the_stores(store):
    labels = RowLabels.read(store)
    ids = store.segment_table()["segment_id"]
    assert len(ids) == 4 * 3 + 6 + 2 and np.all(np.diff(ids) > 0)
    for wanted in (ids[[5, 0, 17, 5]], ids[[1, 2]], ids[[8, 9, 10]], ids[-1:], ids):
        mine, theirs = labels.rows(wanted), store.rows(wanted)
        pd.testing.assert_frame_equal(mine, theirs, check_dtype=False, check_like=False)
    imported = labels.rows(ids[-1:])
    assert imported["track_sample_rate"].isna().all() and imported["label"].tolist() == ["a"]  # a track keeps its first row's metadata
    assert labels.rows(ids[[8]])["meta_idx"].tolist() == ["reserved name"]  # a metadata key named like a column


def test_ids_of_another_version_are_refused(store):
    labels = RowLabels.read(store)
    with pytest.raises(StoreError, match="1 of the 2 segment ids .* reload the view"):
        labels.rows(np.array([store.segment_table()["segment_id"][0], 10_000]))
    assert labels.rows(np.array([], dtype=np.int64)).empty


@pytest.mark.parametrize("level", ["segment", "track"])
def test_search_labelled_from_memory_equals_search_labelled_by_the_store(store, level):
    space = spaces.load(store, "m")
    labels = RowLabels.read(store)
    for row in (0, 7, 14):
        query = space.vectors[row]
        assert search_store(store, space, query, k=4, level=level, labels=labels) == \
            search_store(store, space, query, k=4, level=level)

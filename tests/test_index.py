"""Approximate search: recall against the exact scan, track ranking, and the index files beside the store."""

from __future__ import annotations

import numpy as np
import pytest

from core import index as ann
from core import search, spaces
from core.search import rank_tracks, search_store, top_k
from core.store import Provenance, Store, TrackRecord
from core.vectors import normalize

DIM = 32
SEGMENTS = 20  # per track


def clustered(n_tracks: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors of tracks that each pick one of 40 clusters and drift from it; and each row's track."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, DIM)).astype(np.float32)
    tracks = np.repeat(np.arange(n_tracks), SEGMENTS)
    drift = rng.standard_normal((n_tracks, DIM)).astype(np.float32)
    x = 2 * centres[rng.integers(0, 40, n_tracks)][tracks] + 0.7 * drift[tracks]
    x += rng.standard_normal(x.shape).astype(np.float32)
    return normalize(x), tracks


def batches_of(x: np.ndarray, tracks: np.ndarray, ids: np.ndarray, rows: int) -> list:
    return [lambda s=s: (ids[s:s + rows], tracks[s:s + rows], x[s:s + rows]) for s in range(0, len(x), rows)]


@pytest.fixture(scope="module")
def space():
    x, tracks = clustered(500)  # 10,000 segments
    ids = np.arange(len(x), dtype=np.int64) * 3 + 7  # segment ids are not row numbers
    index = ann.build(batches_of(x, tracks, ids, 1000), len(x), DIM)
    return x, tracks, ids, index


def queries_near(x: np.ndarray, n: int = 40, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return normalize(x[rng.choice(len(x), n, replace=False)] + 0.3 * rng.standard_normal((n, DIM)).astype(np.float32) / np.sqrt(DIM))


def test_recall_at_10_against_the_exact_scan(space):
    x, tracks, ids, index = space
    queries = queries_near(x)
    exact_rows, _ = top_k(x, queries, k=10)
    recall = [len(np.intersect1d(index.search(q, k=10)[0], ids[rows])) / 10 for q, rows in zip(queries, exact_rows)]
    assert np.mean(recall) >= 0.95
    found, scores = index.search(queries[0], k=10)
    assert len(found) == 10 and np.all(np.diff(scores) <= 0)
    assert np.allclose(scores, x[np.searchsorted(ids, found)] @ queries[0], atol=1e-3)  # float16 codes


def test_track_ranking_takes_each_tracks_best_segment(space):
    x, tracks, ids, index = space
    for q in queries_near(x, n=10, seed=2):
        # Every cell probed: the index is then exact up to float16 rounding, and must rank tracks as the exact path.
        found, scores = index.search(q, k=10, level="track", probe_share=1.0)
        want_tracks, want_scores, want_rows = rank_tracks(x @ q, tracks, k=10)
        assert np.array_equal(index.tracks_of(found), want_tracks)
        assert np.array_equal(found, ids[want_rows])
        assert np.allclose(scores, want_scores, atol=1e-3)
        assert len(np.unique(index.tracks_of(found))) == 10


def test_excluded_segments_never_come_back(space):
    x, tracks, ids, index = space
    q = x[0]
    own = int(tracks[0])
    for level in ("segment", "track"):
        found, _ = index.search(q, k=30, level=level, exclude=ids[tracks == own])
        assert len(found) == 30 and own not in index.tracks_of(found)
    assert own in index.tracks_of(index.search(q, k=30)[0])
    # Most rows excluded (a strict tag filter): what is left is still ranked as the exact scan ranks it.
    keep = np.zeros(len(ids), bool)
    keep[::7] = True
    found, scores = index.search(q, k=10, exclude=np.concatenate([ids[~keep], [-5, 10**9]]), probe_share=1.0)
    want_rows, _ = top_k(x, q, k=10, exclude=~keep)
    assert np.array_equal(found, ids[want_rows])
    assert index.search(q, k=10, exclude=ids)[0].size == 0


def test_cells_grow_with_the_space_but_keep_their_training_vectors():
    assert ann.cells_for(1_000_000) == 2048 and ann.cells_for(5_000_000) == 4096
    assert ann.cells_for(10_000) == 128 and ann.cells_for(100) == 1
    with pytest.raises(ann.BadInput):
        ann.cells_for(0)


# ---------------------------------------------------------------------- beside a store


GRID = np.column_stack([np.arange(SEGMENTS), np.arange(1, SEGMENTS + 1)]).astype(np.float64)


def write(store: Store, x: np.ndarray, tracks: np.ndarray, name: str = "t") -> None:
    store.write_tracks([TrackRecord(f"/{name}{t}.wav", f"{name}{t}", float(SEGMENTS), 22050, 1, "WAV", GRID,
                                    {"m": x[tracks == t]}) for t in np.unique(tracks)])


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "i.duckdb")
    s.ensure_grid(1.0, 1.0)
    s.prepare_space(Provenance("m", "m", DIM, "1", "sha"))
    x, tracks = clustered(150, seed=3)
    write(s, x, tracks)
    return s


def index_files(store: Store) -> list[str]:
    folder = store.path.with_name(store.path.name + ".index")
    return sorted(f.name for f in folder.iterdir()) if folder.exists() else []


def test_store_search_uses_the_index_above_the_threshold(store):
    space = spaces.load(store, "m")
    assert search.index_for(store, space) is None and index_files(store) == []  # small: exact
    index = search.index_for(store, space, exact_max_values=0)
    assert index is not None and len(index_files(store)) == 2
    q = space.vectors[5]
    exact = search_store(store, space, q, k=10, level="track")
    approximate = search_store(store, space, q, k=10, level="track", index=index)
    assert [r["track_id"] for r in approximate][:3] == [r["track_id"] for r in exact][:3]
    assert approximate[0]["segment_id"] == int(space.ids[5]) and approximate[0]["path"] == exact[0]["path"]
    assert set(approximate[0]) == set(exact[0])


def test_index_is_rebuilt_when_the_space_changes_and_stale_files_go(store, monkeypatch):
    monkeypatch.setattr(search, "EXACT_SEARCH_MAX_VALUES", 0)
    first = search.index_for(store, spaces.load(store, "m"))
    files = index_files(store)
    assert search.index_for(store, spaces.load(store, "m")) is not None and index_files(store) == files  # reused
    x, tracks = clustered(160, seed=4)
    store.write_tracks([TrackRecord("/new.wav", "hn", float(SEGMENTS), 22050, 1, "WAV", GRID, {"m": x[tracks == 155]})])
    space = spaces.load(store, "m")
    second = search.index_for(store, space)
    assert len(second.segment_ids) == len(first.segment_ids) + SEGMENTS
    assert index_files(store) != files and len(index_files(store)) == 2  # the old version's files are gone
    new_track = int(space.track_ids[-1])
    found = search_store(store, space, space.vectors[-1], k=1)  # through the new index
    assert found[0]["track_id"] == new_track and found[0]["path"] == "/new.wav"


def test_stale_index_of_other_weights_is_never_read(store, monkeypatch):
    monkeypatch.setattr(search, "EXACT_SEARCH_MAX_VALUES", 0)
    search.index_for(store, spaces.load(store, "m"))
    old = index_files(store)
    # New weights: the space is re-extracted into staging and swapped in under a new data version.
    assert store.prepare_space(Provenance("m", "m", DIM, "1", "other-sha"))
    x, tracks = clustered(30, seed=5)
    write(store, x, tracks, name="u")
    store.commit_staged(["m"])
    space = spaces.load(store, "m")
    assert f"-v{store.data_version('m')}-" not in old[0]
    index = search.index_for(store, space)
    assert len(index.segment_ids) == len(space.ids) and index_files(store) != old
    found = search_store(store, space, space.vectors[0], k=1)
    assert found[0]["segment_id"] == int(space.ids[0]) and found[0]["score"] == pytest.approx(1.0, abs=1e-3)


def test_store_search_through_the_index_honours_an_exclusion_mask(store):
    space = spaces.load(store, "m")
    index = search.index_for(store, space, exact_max_values=0)
    own = int(space.track_ids[0])
    odd = (space.ids % 2).astype(bool)
    found = search_store(store, space, space.vectors[0], k=10, exclude_track=own, exclude=odd, index=index)
    assert len(found) == 10
    assert all(r["track_id"] != own and r["segment_id"] % 2 == 0 for r in found)
    with pytest.raises(search.SearchError, match="Nothing is left"):
        search_store(store, space, space.vectors[0], exclude=np.ones(len(space.ids), bool), index=index)


def test_an_index_of_other_rows_is_refused(store):
    space = spaces.load(store, "m")
    x, tracks = clustered(10, seed=6)
    other = ann.build(batches_of(x, tracks, np.arange(len(x), dtype=np.int64) + 10_000, 100), len(x), DIM)
    with pytest.raises(search.SearchError, match="different versions"):
        search_store(store, space, space.vectors[0], index=other)

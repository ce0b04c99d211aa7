"""The DuckDB store: idempotent writes, provenance, grid, metadata namespace, locking, Parquet."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import BadInput, StoreError
from core.exchange import export_parquet, import_parquet
from core.spaces import read_vectors
from core.store import DimensionMismatch, GridMismatch, Provenance, Store, TrackRecord, metadata_columns


def record(path, digest="h1", n=3, dim=4, seed=0, space="m"):
    rng = np.random.default_rng(seed)
    segs = np.stack([np.arange(n) * 3.0, np.arange(n) * 3.0 + 3.0], axis=1)
    return TrackRecord(path, digest, n * 3.0, 22050, 1, "WAV/PCM_16", segs,
                       {space: rng.normal(size=(n, dim)).astype(np.float32)}, {"label": "a"})


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "s.duckdb")
    s.ensure_grid(3.0, 3.0)
    s.prepare_space(Provenance("m", "m", 4, "1", "sha-a"))
    return s


def test_vectors_round_trip_and_track_level_is_normalised_mean(store):
    store.write_tracks([record("/a.wav"), record("/b.wav", seed=1, n=2)])
    ids, x = store.vectors("m")
    assert x.shape == (5, 4) and ids.tolist() == sorted(ids.tolist())
    tids, t = read_vectors(store, "m", "track")
    assert t.shape == (2, 4)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    mean = unit[:3].mean(0)
    assert np.allclose(t[0], mean / np.linalg.norm(mean), atol=1e-6)


def test_vectors_stream_in_batches_into_one_sorted_array(store, tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core import store as store_module

    monkeypatch.setattr(store_module, "_READ_ROWS", 2)  # many batches, one cut inside a repeated id
    store.write_tracks([record(f"/{i}.wav", n=3, seed=i) for i in range(4)])
    store.write_tracks([record("/0.wav", n=3, seed=9)])  # rewritten: its new segment ids come last
    ids, x = store.vectors("m")
    assert x.flags.writeable and ids.tolist() == sorted(ids.tolist())  # the caller may normalise it in place
    rows = store.rows(ids)
    expected = {p: record(p, n=3, seed=9 if p == "/0.wav" else int(p[1])).vectors["m"] for p in rows["path"].unique()}
    for path, group in rows.groupby("path"):
        assert np.array_equal(x[group.index.to_numpy()], expected[path])
    # A file naming one segment twice stores two vectors for it: both come back, in the order stored.
    twice = np.arange(12, dtype=np.float32).reshape(3, 4)
    pq.write_table(pa.table({"path": ["/t.wav"] * 3, "start_s": [0.0, 0.0, 3.0], "end_s": [3.0, 3.0, 6.0],
                             "vector": pa.FixedSizeListArray.from_arrays(pa.array(twice.reshape(-1)), 4)}),
                   tmp_path / "twice.parquet")
    import_parquet(store, tmp_path / "twice.parquet", "twice")
    ids, x = store.vectors("twice")
    assert ids[0] == ids[1] and np.array_equal(x, twice)


def test_rows_are_read_by_id_in_the_order_asked_at_either_level(store):
    store.write_tracks([record("/a.wav"), record("/b.wav", seed=1, n=2)])  # segments 1-3 and 4-5
    rows = store.rows(np.array([5, 1, 5]))
    assert rows["segment_id"].tolist() == [5, 1, 5] and rows["path"].tolist() == ["/b.wav", "/a.wav", "/b.wav"]
    assert rows["start_s"].tolist() == [3.0, 0.0, 3.0] and metadata_columns(rows) == ["label"]
    tracks = store.rows(np.array([2, 1]), "track")
    assert tracks["track_id"].tolist() == [2, 1] and tracks["segment_id"].tolist() == [4, 1]
    assert tracks["start_s"].tolist() == [0.0, 0.0] and tracks["end_s"].tolist() == [6.0, 9.0]
    assert store.segment_tracks(np.array([5, 1, 4])).tolist() == [2, 1, 2]
    with pytest.raises(StoreError, match="reload"):
        store.rows(np.array([1, 99]))
    with pytest.raises(BadInput, match="Unknown level 'album'"):
        store.rows(np.array([1]), "album")
    with pytest.raises(BadInput, match="No embeddings for 'nope'.*stored: m"):
        store.vectors("nope")
    with pytest.raises(BadInput, match="positive"):
        store.ensure_grid(0.0, 3.0)


def test_rewriting_a_changed_file_replaces_its_rows(store):
    store.write_tracks([record("/a.wav", "h1", n=3)])
    store.write_tracks([record("/a.wav", "h2", n=2, seed=5)])
    info = store.info()
    assert info["tracks"] == 1 and info["segments"] == 2 and info["embeddings"] == {"m": 2}
    assert store.track_states()["/a.wav"][1] == "h2"


def test_new_provenance_replaces_vectors_instead_of_mixing(store):
    store.write_tracks([record("/a.wav")])
    assert store.prepare_space(Provenance("m", "m", 4, "1", "sha-a")) is False
    assert store.info()["embeddings"] == {"m": 3}
    assert store.prepare_space(Provenance("m", "m", 4, "2", "sha-a")) is True
    # the old vectors stay in use until the re-extraction is swapped in, in one transaction
    assert store.info()["embeddings"] == {"m": 3} and store.space("m")["adapter_version"] == "1"
    store.commit_staged(["m"])
    assert store.info()["embeddings"] == {"m": 0}
    assert store.space("m")["adapter_version"] == "2"


def test_grid_is_fixed_by_the_first_extraction(store):
    store.ensure_grid(3.0, 3.0)
    with pytest.raises(GridMismatch, match="new --db"):
        store.ensure_grid(5.0, 2.5)


def test_metadata_lives_in_its_own_namespace(store):
    rec = record("/a.wav")
    rec.metadata = {"duration_s": "fake", "path": "evil", "genre": "jazz", "bpm": 120}
    store.write_tracks([rec])
    seg = store.segments_frame()
    assert seg["track_duration_s"].iloc[0] == 9.0 and seg["path"].iloc[0] == "/a.wav"
    assert seg["meta_path"].iloc[0] == "evil" and seg["duration_s"].iloc[0] == "fake"
    assert seg["genre"].iloc[0] == "jazz" and seg["bpm"].iloc[0] == 120
    assert store.set_metadata({"/a.wav": {"genre": "blues"}}) == 1
    assert store.segments_frame()["genre"].iloc[0] == "blues"


def test_failures_count_the_latest_run_of_each_model(store):
    r1 = store.start_run(["m"])
    store.record_failures(r1, [("/x.wav", "m", "bad"), ("/y.wav", "m", "bad")])
    assert store.info()["failures"] == 2
    r2 = store.start_run(["m"])
    store.record_failures(r2, [("/x.wav", "m", "still bad")])
    assert store.info()["failures"] == 1
    store.start_run(["m"])
    assert store.info()["failures"] == 0


def test_another_process_holding_the_file_is_waited_for(store):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, time, sys; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); time.sleep(1.5); c.close()"
    ), str(store.path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    t = time.perf_counter()
    store.write_tracks([record("/a.wav")])
    assert time.perf_counter() - t > 0.3  # it waited instead of crashing
    holder.wait(timeout=10)
    assert store.info()["embeddings"] == {"m": 3}


def test_parquet_export_import_round_trip_and_dimension_guard(store, tmp_path):
    store.write_tracks([record("/a.wav"), record("/b.wav", seed=1)])
    out = tmp_path / "m.parquet"
    assert export_parquet(store, "m", out) == 6
    frame = pd.read_parquet(out)
    assert {"path", "start_s", "end_s", "label", "track_duration_s", "vector"} <= set(frame.columns)
    import pyarrow.parquet as pq

    assert b"aeb:provenance" in pq.read_schema(out).metadata
    # import under a new key: segments coincide, so vectors line up with the original
    assert import_parquet(store, out, "copy") == 6
    ids_m, xm = store.vectors("m")
    ids_c, xc = store.vectors("copy")
    assert ids_m.tolist() == ids_c.tolist() and np.allclose(xm, xc)
    store.prepare_space(Provenance("wide", "wide", 8, "1", ""))
    with pytest.raises(DimensionMismatch):
        import_parquet(store, out, "wide")


def test_imported_rows_for_unknown_paths_become_tracks(store, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    vec = np.eye(3, dtype=np.float32)
    table = pa.table({"path": ["/gone/a.wav"] * 3, "start_s": [0.0, 1.0, 2.0], "end_s": [1.0, 2.0, 3.0],
                      "genre": ["x", "x", "x"],
                      "vector": pa.FixedSizeListArray.from_arrays(pa.array(vec.reshape(-1)), 3)})
    pq.write_table(table, tmp_path / "byo.parquet")
    assert import_parquet(store, tmp_path / "byo.parquet", "byo") == 3
    seg = store.segments_frame()
    assert (seg["path"] == "/gone/a.wav").sum() == 3 and seg.loc[seg["path"] == "/gone/a.wav", "genre"].eq("x").all()


def test_cached_results_read_back_as_the_command_line_prints_them(store):
    from pathlib import Path

    from core.jsonable import jsonable

    value = {"nan": float("nan"), "inf": np.float32(np.inf), "ids": np.arange(2), "pair": (np.int64(3), np.bool_(True)),
             "where": Path("/x"), "nested": {"f": np.float64(0.5)}}
    expected = {"nan": None, "inf": None, "ids": [0, 1], "pair": [3, True], "where": "/x", "nested": {"f": 0.5}}
    assert jsonable(value) == expected
    store.put_cached("test", "k", "v1", value)
    assert store.get_cached("test", "k", "v1") == expected and store.get_cached("test", "k", "v2") is None


def test_an_import_is_checked_before_anything_stored_is_replaced(store, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    store.write_tracks([record("/a.wav")])
    vec = np.eye(4, dtype=np.float32)[:3]
    vec[1, 2] = np.nan
    table = pa.table({"path": ["/a.wav"] * 3, "start_s": [0.0, 3.0, 6.0], "end_s": [3.0, 6.0, 9.0],
                      "vector": pa.FixedSizeListArray.from_arrays(pa.array(vec.reshape(-1)), 4)})
    pq.write_table(table, tmp_path / "nan.parquet")
    pq.write_table(table.slice(0, 0), tmp_path / "empty.parquet")
    for name, reason in (("nan.parquet", "NaN"), ("empty.parquet", "no rows")):
        with pytest.raises(BadInput, match=reason):
            import_parquet(store, tmp_path / name, "m")
    assert store.info()["embeddings"] == {"m": 3}


def test_replacing_a_space_recomputes_every_cached_result(tmp_path):
    """Versions come from one growing sequence: a replaced space never meets a result of its predecessor."""
    from core.cluster import cached_clusters
    from core.analyses import store_disagreement, store_metrics
    from core.reduce import cached_projection

    s = Store(tmp_path / "c.duckdb")
    s.ensure_grid(3.0, 3.0)
    for space in ("m", "n"):
        s.prepare_space(Provenance(space, space, 4, "1", "sha"))
    records = [record(f"/{i}.wav", n=4, seed=i, space="m") for i in range(6)]
    for i, rec in enumerate(records):
        rec.vectors["n"] = record("", n=4, seed=10 + i).vectors["m"]
    s.write_tracks(records)

    def compute():  # the projection first: the metrics' trustworthiness computes and caches it too
        return {"projection": cached_projection(s, "m", "pca"),
                "metrics": store_metrics(s, ["m", "n"], k=3, method="pca"),
                "clusters": cached_clusters(s, "m", k=3),
                "disagreement": store_disagreement(s, "m", "n", k=3)}

    first = compute()
    again = compute()
    assert again["metrics"]["info"]["cached"] and again["disagreement"]["cached"] and again["projection"]["cached"]
    version = s.data_version("m")
    # a new adapter version replaces m with other vectors, written in as many batches as before
    assert s.prepare_space(Provenance("m", "m", 4, "2", "sha"))
    track_ids = s.track_states()
    for i in range(6):
        rec = record(f"/{i}.wav", n=4, seed=100 + i, space="m")
        rec.track_id = track_ids[f"/{i}.wav"][0]
        s.write_tracks([rec])
    s.commit_staged(["m"])
    assert s.data_version("m") > version
    fresh = compute()
    assert not fresh["metrics"]["info"]["cached"] and not fresh["disagreement"]["cached"]
    assert not fresh["projection"]["cached"]
    ids, x = s.vectors("m")
    assert not np.allclose(np.abs(fresh["projection"]["xy"]), np.abs(first["projection"]["xy"]))
    assert fresh["metrics"]["m"]["hubness"] != first["metrics"]["m"]["hubness"] or \
        fresh["metrics"]["pairs"] != first["metrics"]["pairs"]
    assert fresh["disagreement"]["disagreement"] != first["disagreement"]["disagreement"]
    # clusters are recomputed on the new vectors: the same as clustering them afresh
    from core.cluster import cluster

    expected, _ = cluster(x, "kmeans", k=3)
    assert fresh["clusters"]["labels"].tolist() == expected.tolist()


def _parquet(path, vectors, paths=None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(vectors)
    pq.write_table(pa.table({
        "path": paths or [f"/{i % 3}.wav" for i in range(n)], "start_s": [3.0 * (i // 3) for i in range(n)],
        "end_s": [3.0 * (i // 3) + 3.0 for i in range(n)],
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(vectors, np.float32).reshape(-1)), 4)}), path)


def test_import_validates_everything_before_it_writes_and_replaces_only_when_asked(store, tmp_path):
    from core.errors import BadInput

    store.write_tracks([record(f"/{i}.wav", n=3, seed=i) for i in range(3)])
    ids, before = store.vectors("m")
    version = store.data_version("m")
    bad = np.ones((9, 4))
    bad[7, 2] = np.nan
    _parquet(tmp_path / "nan.parquet", bad)
    with pytest.raises(BadInput, match="NaN"):
        import_parquet(store, tmp_path / "nan.parquet", "m", replace=True)
    _parquet(tmp_path / "few.parquet", np.ones((2, 4)))
    with pytest.raises(StoreError, match="--replace"):  # 2 rows never silently replace 9 extracted vectors
        import_parquet(store, tmp_path / "few.parquet", "m")
    after_ids, after = store.vectors("m")
    assert after_ids.tolist() == ids.tolist() and np.array_equal(after, before)
    assert store.data_version("m") == version and store.space("m")["source"] == "extracted"
    assert import_parquet(store, tmp_path / "few.parquet", "m", replace=True) == 2
    assert store.info()["embeddings"] == {"m": 2} and store.space("m")["source"] == "imported"
    assert store.data_version("m") > version


def _rows(n=600, dim=4, vector=None, **columns):
    """An import table of n rows over 3 files; ``vector`` replaces the float32 vectors (any Arrow array)."""
    import pyarrow as pa

    vectors = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    table = {"path": [f"/{i % 3}.wav" for i in range(n)], "start_s": [3.0 * (i // 3) for i in range(n)],
             "end_s": [3.0 * (i // 3) + 3.0 for i in range(n)], **columns}
    table["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim) if vector is None else vector
    return pa.table(table), vectors


def _with_row(table, column, row, value):
    """The table with one cell changed, the column keeping its type."""
    import pyarrow as pa

    values = table.column(column).to_pylist()
    values[row] = value
    return table.set_column(table.column_names.index(column), column, pa.array(values, type=table.column(column).type))


def test_every_bad_file_is_refused_by_sql_before_the_store_changes(store, tmp_path):
    """Each defect is found by the checks over the whole file, in any row group, naming its first row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    store.write_tracks([record(f"/{i}.wav", n=3, seed=i) for i in range(3)])
    ids, before = store.vectors("m")
    version = store.data_version("m")
    good, _ = _rows()
    ragged = pa.array([[0.5] * 4] * 599 + [[0.5] * 3], type=pa.list_(pa.float32()))
    holed = pa.array([[0.5] * 4] * 450 + [[0.5, None, 0.5, 0.5]] + [[0.5] * 4] * 149, type=pa.list_(pa.float32()))
    beyond = pa.array([[0.5] * 4] * 599 + [[1e300, 0.0, 0.0, 0.0]], type=pa.list_(pa.float64()))
    cases = {  # the bad row lies past the first row group (row groups of 100 rows)
        "nan.parquet": (_with_row(good, "vector", 517, [0.1, float("nan"), 0.1, 0.1]), "1 vectors hold NaN .*row 517"),
        "inf.parquet": (_with_row(good, "vector", 250, [0.1, 0.1, float("-inf"), 0.1]), "row 250 first"),
        "ragged.parquet": (good.set_column(3, "vector", ragged), r"different lengths \(4 in row 0, 3 in row 599\)"),
        "holed.parquet": (good.set_column(3, "vector", holed), "1 vector values are missing"),
        "null.parquet": (_with_row(good, "vector", 333, None), "1 rows have no vector .row 333 first"),
        "beyond.parquet": (good.set_column(3, "vector", beyond), "beyond float32's range"),
        "wide.parquet": (_rows(dim=5)[0], "4-D vectors"),
        "text.parquet": (good.set_column(3, "vector", pa.array([["a"] * 4] * 600)), "not numbers"),
        "nopath.parquet": (_with_row(good, "path", 401, None), "no path"),
        "emptypath.parquet": (_with_row(good, "path", 402, ""), "no path"),
        "nanstart.parquet": (_with_row(good, "start_s", 303, float("nan")), "start_s must be a finite"),
        "backwards.parquet": (_with_row(good, "end_s", 404, 0.0), "row 404 has a segment"),
        "noend.parquet": (good.drop_columns(["end_s"]), "lacks the column.s. end_s"),
        "flag.parquet": (good.append_column("path_escaped", pa.array(["yes"] * 600)), "path_escaped must be"),
        "empty.parquet": (good.slice(0, 0), "no rows"),
    }
    for name, (table, reason) in cases.items():
        pq.write_table(table, tmp_path / name, row_group_size=100)
        with pytest.raises((BadInput, DimensionMismatch), match=reason):
            import_parquet(store, tmp_path / name, "m", replace=name != "wide.parquet")
    after_ids, after = store.vectors("m")
    assert after_ids.tolist() == ids.tolist() and np.array_equal(after, before), name
    assert store.data_version("m") == version and store.space("m")["source"] == "extracted"
    assert store.info()["tracks"] == 3


def test_any_numeric_list_imports_as_the_float32_it_holds(tmp_path):
    """Lists of float64, of integers, variable-length lists, and a square norm beyond float32 all import exactly."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, vectors = _rows(n=6)
    vectors[5] = [3e20, -3e20, 1.0, 0.0]  # finite, but its squared norm overflows float32
    kinds = {"double": pa.array(vectors.astype(np.float64).tolist(), type=pa.large_list(pa.float64())),
             "floats": pa.array(vectors.tolist(), type=pa.list_(pa.float32())),
             "ints": pa.array(np.round(vectors[:5] * 10).astype(np.int64).tolist(), type=pa.list_(pa.int32()))}
    for kind, column in kinds.items():
        table, _ = _rows(n=len(column), vector=column)
        pq.write_table(table, tmp_path / f"{kind}.parquet")
        s = Store(tmp_path / f"{kind}.duckdb")
        assert import_parquet(s, tmp_path / f"{kind}.parquet", "k") == len(column)
        ids, x = s.vectors("k")
        expected = np.round(vectors[:5] * 10) if kind == "ints" else vectors
        assert np.array_equal(x, expected.astype(np.float32)), kind


def test_two_spellings_of_a_file_import_as_one_track_with_its_first_rows_metadata(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "music"
    (folder / "sub").mkdir(parents=True)
    table, vectors = _rows(n=4, genre=["jazz", "rock", None, "pop"])
    paths = [str(folder / "a.wav"), str(folder / "sub" / ".." / "a.wav"), str(folder / "b.wav"), str(folder / "b.wav")]
    table = table.set_column(0, "path", pa.array(paths)).set_column(1, "start_s", pa.array([0.0, 3.0, 0.0, 3.0]))
    table = table.set_column(2, "end_s", pa.array([3.0, 6.0, 3.0, 6.0]))
    pq.write_table(table, tmp_path / "spellings.parquet")
    s = Store(tmp_path / "s.duckdb")
    assert import_parquet(s, tmp_path / "spellings.parquet", "k") == 4
    tracks = s.tracks_frame().set_index("path")
    assert sorted(tracks.index) == [str(folder / "a.wav"), str(folder / "b.wav")]
    assert tracks.loc[str(folder / "a.wav"), "duration_s"] == 6.0
    rows = s.rows(s.vectors("k")[0])
    assert rows["genre"].iloc[:2].tolist() == ["jazz", "jazz"]
    assert rows["genre"].iloc[2:].isna().all()  # the first row of b.wav has no genre: its second one's is not taken
    assert np.array_equal(s.vectors("k")[1], vectors)


def test_a_file_named_like_a_glob_pattern_imports_only_itself(tmp_path):
    import pyarrow.parquet as pq

    table, vectors = _rows(n=6)
    pq.write_table(table, tmp_path / "b*[1]?.parquet")
    pq.write_table(_rows(n=9)[0], tmp_path / "bX1Y.parquet")  # what the name matches as a pattern
    s = Store(tmp_path / "s.duckdb")
    assert import_parquet(s, tmp_path / "b*[1]?.parquet", "k") == 6
    assert np.array_equal(s.vectors("k")[1], vectors)


def test_a_store_of_schema_1_is_migrated_keeping_its_rows_and_versions(store):
    """Older stores gain the path flag, the staging table and a version sequence that starts past every old version."""
    store.write_tracks([record("/a.wav"), record("/b.wav", seed=1)])
    version = store.data_version("m")
    with store.connect() as con:  # make it what the previous version wrote
        con.execute("ALTER TABLE tracks RENAME TO t2")
        con.execute("CREATE TABLE tracks (track_id BIGINT PRIMARY KEY, path VARCHAR UNIQUE NOT NULL, "
                    "content_hash VARCHAR, duration_s DOUBLE, sample_rate INTEGER, channels INTEGER, format VARCHAR, "
                    "metadata JSON, added_at TIMESTAMP)")
        con.execute("INSERT INTO tracks SELECT * EXCLUDE (path_escaped) FROM t2")
        con.execute("DROP TABLE t2")
        con.execute("ALTER TABLE failures DROP COLUMN path_escaped")
        con.execute("DROP TABLE staged_spaces")
        con.execute("DROP SEQUENCE data_versions")
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    migrated = Store(store.path)
    assert migrated.info()["tracks"] == 2 and migrated.track_states()["/a.wav"][1] == "h1"
    migrated.write_tracks([record("/c.wav", seed=2)])
    assert migrated.data_version("m") > version
    assert migrated.tracks_frame()["path_escaped"].tolist() == [False] * 3


def test_opening_an_up_to_date_store_writes_nothing(store):
    before = store.path.stat().st_mtime_ns, store.path.stat().st_size
    time.sleep(0.01)
    Store(store.path).info()
    assert (store.path.stat().st_mtime_ns, store.path.stat().st_size) == before


def test_readers_wait_while_a_writer_has_announced_itself(store):
    """A writer locks ``NAME.duckdb.writer``; a reader in another process waits for it instead of starving it."""
    script = ("import sys, time; from core.store import Store; print('ready', flush=True); sys.stdin.readline(); "
              "t = time.perf_counter(); Store(sys.argv[1]).info(); print(time.perf_counter() - t, flush=True)")
    reader = subprocess.Popen([sys.executable, "-c", script, str(store.path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    assert reader.stdout.readline().strip() == "ready"  # imports done
    with store._writer_intent(time.monotonic() + 10):
        reader.stdin.write("read now\n")
        reader.stdin.flush()
        time.sleep(1.5)
        assert reader.poll() is None  # still waiting for the writer
    waited = float(reader.communicate(timeout=60)[0])
    assert waited > 1.0

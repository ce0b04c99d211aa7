"""The Ray engine against the local one: same vectors, segments, metadata and failures; faults; shards; ingest.

Every test shares one local Ray (``ray_cluster``) and runs the real adapters
through the real pipeline; the corpus is real files of ../shared/data plus
hostile ones made here.
"""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from core.cli import main
from core.errors import BadInput, StoreError
from core.exchange import export_parquet, import_parquet
from core.extract import extract, read_metadata_csv
from core.ray_engine import entries, extract_ray
from core.shards import ingest, list_shards
from core.store import Store
from tests.conftest import PROJECT_ROOT, tone, tone_files

pytestmark = [pytest.mark.slow]

#: Files taken from each set of ../shared/data for the equality corpus.
PICKS = {"fsdd": 8, "gm_notes": 8, "esc50_subset": 6, "odd_formats": 14}
LIBROSA = ("robin.ogg", "trumpet.ogg", "libri1.ogg")


def hostile(folder: Path) -> list[str]:
    """Files no engine can embed: each must end as one failure row per model."""
    (folder / "empty.wav").write_bytes(b"")
    (folder / "text.wav").write_text("not audio at all\n")
    good = folder / "_cut.wav"
    sf.write(good, tone(330, 2.0), 22050)
    (folder / "truncated.wav").write_bytes(good.read_bytes()[:30])
    good.unlink()
    y = tone(330, 1.0)
    y[100] = np.nan
    sf.write(folder / "nan.wav", y, 22050, subtype="FLOAT")
    (folder / "broken.wav").symlink_to(folder / "gone.wav")
    return ["empty.wav", "text.wav", "truncated.wav", "nan.wav", "broken.wav"]


@pytest.fixture(scope="module")
def corpus(shared_data, tmp_path_factory) -> Path:
    """About 40 real files of every set (links) and 5 hostile ones, in one folder."""
    folder = tmp_path_factory.mktemp("corpus")
    picks = [p for s, n in PICKS.items()
             for p in sorted(f for f in (shared_data / s).rglob("*") if f.suffix in (".wav", ".flac"))[:n]]
    picks += [shared_data / "librosa_examples" / name for name in LIBROSA]
    for i, p in enumerate(picks):
        (folder / f"{i:02d}_{p.name}").symlink_to(p)
    hostile(folder)
    return folder


def stored(db: Path) -> dict:
    """Everything a store says about its tracks: attributes, segments, every space's vectors, failures."""
    store = Store(db)
    rows = store.segments_frame().sort_values(["path", "idx"])
    out = {"segments": rows[["path", "idx", "start_s", "end_s", "track_duration_s", "track_sample_rate",
                             "track_channels"]].reset_index(drop=True),
           "tracks": store.tracks_frame().drop(columns=["track_id", "added_at"]).sort_values("path").reset_index(drop=True),
           "failures": store.failures()[["path", "model", "message"]].sort_values(["path", "model"]).reset_index(drop=True)}
    for space in store.spaces()["space"]:
        ids, vectors = store.vectors(space)
        order = store.rows(ids).reset_index(drop=True).sort_values(["path", "idx"]).index.to_numpy()
        out[space] = vectors[order]
    return out


def by_path(db: Path, space: str) -> dict[str, np.ndarray]:
    """A space's vectors per track path, rows in grid order."""
    store = Store(db)
    ids, vectors = store.vectors(space)
    rows = store.rows(ids).reset_index(drop=True)
    return {p: vectors[g.sort_values("idx").index.to_numpy()] for p, g in rows.groupby("path")}


def assert_same_store(a: Path, b: Path) -> float:
    """Both stores hold the same tracks, segments, metadata and failures; returns the largest vector difference."""
    x, y = stored(a), stored(b)
    assert set(x) == set(y)
    pd.testing.assert_frame_equal(x["segments"], y["segments"])
    pd.testing.assert_frame_equal(x["tracks"], y["tracks"])
    pd.testing.assert_frame_equal(x["failures"], y["failures"])
    worst = 0.0
    for space in set(x) - {"segments", "tracks", "failures"}:
        assert x[space].shape == y[space].shape
        worst = max(worst, float(np.abs(x[space] - y[space]).max()))
    return worst


@pytest.fixture(scope="module")
def few(corpus, tmp_path_factory) -> Path:
    """11 files of the corpus (10 real, one empty), for the fault tests' one-file batches."""
    folder = tmp_path_factory.mktemp("few")
    for p in sorted(p for p in corpus.iterdir() if p.name[:2].isdigit())[::4] + [corpus / "empty.wav"]:
        (folder / p.name).symlink_to(p)
    return folder


def assert_like_local(db: Path, local_db: Path, folder: Path) -> None:
    """Every file of ``folder`` has the local engine's dsp vectors in ``db``, and only those files are stored."""
    got, want = by_path(db, "dsp"), by_path(local_db, "dsp")
    assert set(got) == {str(p.resolve()) for p in folder.iterdir()} - {str((folder / "empty.wav").resolve())}
    for path, rows in got.items():  # a driver started from the command line sets its own math threads: 1e-6
        np.testing.assert_allclose(rows, want[path], rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def both_engines(ray_cluster, corpus, shared_data, tmp_path_factory):
    """The corpus extracted with dsp and aisfx by each engine, with metadata, into two stores."""
    folder = tmp_path_factory.mktemp("engines")
    metadata = read_metadata_csv(shared_data / "odd_formats" / "metadata.csv", [shared_data / "odd_formats"])
    local = extract([corpus], ["dsp", "aisfx"], db=folder / "local.duckdb", metadata=metadata)
    ray = extract_ray([corpus], ["dsp", "aisfx"], db=folder / "ray.duckdb", metadata=metadata, batch_size=4)
    return folder, local, ray


@pytest.mark.integration
def test_ray_engine_stores_what_the_local_engine_stores(both_engines, corpus):
    folder, local, ray = both_engines
    assert ray.files == local.files == len(list(corpus.iterdir())) == 44
    assert ray.stored == local.stored == 39
    assert sorted((f.path, f.model, f.message) for f in ray.failures) == \
        sorted((f.path, f.model, f.message) for f in local.failures)
    assert len(ray.failed_paths) == 5
    worst = assert_same_store(folder / "local.duckdb", folder / "ray.duckdb")
    assert worst == 0.0  # bit for bit: the same blocks reach the same adapters
    tracks = Store(folder / "ray.duckdb").tracks_frame()
    assert tracks["metadata"].notna().sum() == 14  # odd_formats' CSV rows, as the local engine stored them


@pytest.mark.integration
def test_a_rerun_skips_what_the_shards_and_store_hold(both_engines, corpus):
    folder, _, _ = both_engines
    again = extract_ray([corpus], ["dsp", "aisfx"], db=folder / "ray.duckdb", batch_size=4)
    assert (again.files, again.skipped, again.stored, len(again.failed_paths)) == (44, 39, 0, 5)
    before = len(list_shards(str(folder / "ray.duckdb") + ".shards"))
    report = ingest(str(folder / "ray.duckdb") + ".shards", folder / "ray.duckdb")
    assert (report.stored, report.skipped) == (0, 39)
    assert len(list_shards(str(folder / "ray.duckdb") + ".shards")) >= before
    assert_same_store(folder / "local.duckdb", folder / "ray.duckdb")


@pytest.mark.integration
def test_shards_ingest_elsewhere_with_a_path_map(both_engines, corpus, shared_data, tmp_path):
    folder, _, _ = both_engines
    shards = str(folder / "ray.duckdb") + ".shards"
    moved = tmp_path / "moved"
    moved.symlink_to(shared_data)
    db = tmp_path / "elsewhere.duckdb"
    assert main(["ingest", shards, "--db", str(db), "--path-map", f"{shared_data}={moved}"]) == 1  # 5 failed files
    paths = Store(db).tracks_frame()["path"]
    assert len(paths) == 39 and all(p.startswith(str(moved)) for p in paths)
    assert Store(db).info()["missing_files"] == 0
    assert main(["ingest", shards, "--db", str(db), "--path-map", "no-equals-sign"]) == 2


@pytest.mark.integration
def test_ingest_follows_the_replace_rule(both_engines, tmp_path, capsys):
    folder, _, _ = both_engines
    shards = str(folder / "ray.duckdb") + ".shards"
    exported = tmp_path / "dsp.parquet"
    export_parquet(Store(folder / "local.duckdb"), "dsp", exported)
    db = tmp_path / "imported.duckdb"
    import_parquet(Store(db), exported, "dsp")  # vectors of another source under the same key
    Store(db).ensure_grid(3.0, 3.0)
    capsys.readouterr()
    assert main(["ingest", shards, "--db", str(db)]) == 2
    assert "--replace" in capsys.readouterr().err
    with pytest.raises(StoreError):
        ingest(shards, db)
    assert Store(db).space("dsp")["source"] == "imported"  # refused: nothing changed
    assert main(["ingest", shards, "--db", str(db), "--replace"]) == 1
    assert Store(db).space("dsp")["source"] == "extracted"
    assert by_path(db, "dsp").keys() == by_path(folder / "local.duckdb", "dsp").keys()
    for path, rows in by_path(db, "dsp").items():
        np.testing.assert_array_equal(rows, by_path(folder / "local.duckdb", "dsp")[path])


def test_ingest_refuses_another_grid_and_a_folder_without_shards(both_engines, tmp_path):
    folder, _, _ = both_engines
    db = tmp_path / "other-grid.duckdb"
    Store(db).ensure_grid(1.0, 1.0)
    assert main(["ingest", str(folder / "ray.duckdb") + ".shards", "--db", str(db)]) == 2
    with pytest.raises(BadInput, match="no shards"):
        ingest(tmp_path, db)
    (tmp_path / "part-foreign.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(BadInput, match="not a shard"):
        ingest(tmp_path, db)


def _embed_actor_pids(cache: str) -> list[int]:
    """PIDs of this session's embedding actors: Ray names the process after the actor; its environment names our cache."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            env = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if b"EmbedActor" in cmd and f"AEB_CACHE={cache}".encode() in env.split(b"\0"):
            pids.append(int(entry))
    return pids


@pytest.mark.integration
def test_a_killed_actor_is_retried_and_nothing_is_lost_or_duplicated(ray_cluster, both_engines, few, tmp_path):
    folder, _, _ = both_engines
    shards = tmp_path / "shards"
    cache = os.environ["AEB_CACHE"]
    killed: list[int] = []

    def kill_one_actor_mid_run() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            pids = _embed_actor_pids(cache)
            if pids and shards.is_dir() and list(shards.glob("part-*.parquet")):  # work is done, more is to come
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_actor_mid_run)
    killer.start()
    report = extract_ray([few], ["dsp"], shards=shards, db=tmp_path / "killed.duckdb", batch_size=1, workers=1)
    killer.join()
    assert len(killed) == 1
    assert killed[0] not in _embed_actor_pids(cache)
    written = len(list(shards.glob("part-*.parquet")))
    assert (report.files, report.stored, len(report.failed_paths), written) == (11, 10, 1, 11)
    rows = pd.concat([pq.read_table(s, columns=["path"]).to_pandas() for s in shards.glob("part-*.parquet")])
    assert len(rows) == 11 and rows["path"].is_unique  # every file in exactly one shard row
    assert_like_local(tmp_path / "killed.duckdb", folder / "local.duckdb", few)


def test_the_files_the_driver_finds_go_in_blocks_of_one_batch(ray_cluster, tmp_path):
    """One block would reach one task and one actor: the others of the pool would idle (it ran 36 % slower)."""
    folder = tone_files(tmp_path / "audio", 5, 1.0)
    ds = entries([folder], batch=2)
    assert ds.materialize().num_blocks() == 3 and ds.count() == 5


def test_a_file_longer_than_one_block_is_decoded_block_by_block_in_its_actor(ray_cluster, tmp_path):
    """A file over one block (2**24 sample values) is decoded by its actor block by block, as the local engine does."""
    from core import audio

    folder = tmp_path / "long"
    folder.mkdir()
    seconds, sr = 180.0, 48000
    t = np.arange(int(seconds * sr)) / sr
    y = np.stack([0.2 * np.sin(2 * np.pi * (220 + 0.5 * t) * t), 0.1 * np.sin(2 * np.pi * 330 * t)], axis=1)
    sf.write(folder / "long.wav", y, sr, subtype="PCM_16")
    assert y.size > audio.BLOCK_SAMPLES
    local = extract([folder], ["dsp"], db=tmp_path / "local.duckdb")
    ray = extract_ray([folder], ["dsp"], db=tmp_path / "ray.duckdb", shards=tmp_path / "shards")
    assert local.stored == ray.stored == 1 and not ray.failures
    assert_same_store(tmp_path / "local.duckdb", tmp_path / "ray.duckdb") <= 1e-6
    segments = Store(tmp_path / "ray.duckdb").segments_frame()
    assert len(segments) >= 59 and segments["end_s"].max() == pytest.approx(seconds, abs=3.0)


@pytest.mark.integration
def test_a_killed_driver_resumes_from_its_shards(ray_cluster, both_engines, few, tmp_path):
    folder, _, _ = both_engines
    shards, db = tmp_path / "shards", tmp_path / "resumed.duckdb"
    address = ray_cluster.get_runtime_context().gcs_address
    driver = subprocess.Popen(
        [sys.executable, "-m", "core", "extract", str(few), "--engine", "ray", "--ray-address", address,
         "--shards", str(shards), "--db", str(db), "--model", "dsp", "--batch-size", "1", "--workers", "1"],
        cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while driver.poll() is None and time.monotonic() < deadline and not list(shards.glob("part-*.parquet")):
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    written = list(shards.glob("part-*.parquet"))
    healthy = sum(1 for s in written for r in pq.read_table(s, columns=["stored"]).to_pylist() if r["stored"])
    assert healthy >= 1  # the driver died after some batches were written, before its ingest
    report = extract_ray([few], ["dsp"], shards=shards, db=db, batch_size=4)
    assert report.skipped >= healthy  # what the dead driver's batches wrote is not done again
    assert (report.files, report.stored, len(report.failed_paths)) == (11, 10, 1)
    assert_like_local(db, folder / "local.duckdb", few)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.mark.integration
def test_manifests_and_urls(ray_cluster, both_engines, corpus, tmp_path, capsys):
    """A CSV of URLs and a text manifest of relative paths; URL tracks are stored as given and reported as remote."""
    folder, _, _ = both_engines
    served = tmp_path / "served"
    served.mkdir()
    names = sorted(p.name for p in corpus.iterdir() if p.name[:2].isdigit())[:6]
    for name in names:
        (served / name).write_bytes((corpus / name).read_bytes())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Quiet(*a, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        urls = [f"{base}/{n}" for n in names] + [f"{base}/missing.wav"]
        pd.DataFrame({"path": urls}).to_csv(tmp_path / "urls.csv", index=False)
        (tmp_path / "list.txt").write_text("# two local files, relative to this list\n" + "\n".join(
            f"served/{n}" for n in names[:2]) + "\n")
        db = tmp_path / "remote.duckdb"
        code = main(["extract", str(tmp_path / "urls.csv"), str(tmp_path / "list.txt"), "--engine", "ray",
                     "--db", str(db), "--model", "dsp"])
    finally:
        server.shutdown()
    assert code == 1
    err = capsys.readouterr().err
    assert "missing.wav [dsp]: cannot read URL" in err
    store = Store(db)
    paths = set(store.tracks_frame()["path"])
    assert paths == set(urls[:-1]) | {str(served / n) for n in names[:2]}
    info = store.info()
    assert (info["remote_files"], info["missing_files"], info["tracks"]) == (6, 0, 8)
    local = Store(folder / "local.duckdb")
    local_ids, local_vectors = local.vectors("dsp")
    by_name = {}
    for (i, row), v in zip(local.rows(local_ids).iterrows(), local_vectors):
        by_name.setdefault(Path(row["path"]).name, []).append(v)
    ids, vectors = store.vectors("dsp")
    for (_, row), v in zip(store.rows(ids).iterrows(), vectors):
        original = next(p.resolve().name for p in corpus.iterdir() if p.name == row["path"].rsplit("/", 1)[-1])
        assert any(np.array_equal(v, w) for w in by_name[original])

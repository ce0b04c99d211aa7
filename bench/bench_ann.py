"""Approximate search at millions of segments (issue 14, item 4): recall@10, latency, memory, build time.

The space is synthetic and never held whole: batches of 512-D vectors are
generated on demand, the same every time (each batch has its own seed).
Tracks of 200 segments each pick one of ``n / 1000`` cluster centres and a
drift of their own, so a segment's nearest neighbours are mostly its own
track's segments and then its cluster's other tracks, as in a collection:

    x = 2 · centre[cluster(track)] + 0.7 · drift[track] + noise,  then normalised.

The index is built by :func:`core.index.build` from those batches (the time
spent generating them is measured and taken out).  Queries are stored
vectors plus noise, as a text query lands near the audio it describes; the
exact top-10 segments and top-10 tracks (each by its best segment) of every
query are computed batch by batch over the whole space, and each probe
share is scored against them: recall@10 (share of the exact ten found) and
the time per query, median and fastest, at segment level, at track level,
and at segment level with the query's own track excluded.

``--truth`` and ``--keep`` keep the exact answers and the built index on
disk, so that a later run (on an idle machine, say) times the queries
without recomputing either.  ``--others`` first measures the indexes that were not chosen at segment
level (faiss IVF with int8 codes, usearch HNSW with float16 and int8 codes),
on the same space and queries.

    python bench/bench_ann.py [--rows 5000000] [--dim 512] [--queries 100] [--shares 0.0625 0.125 0.25]
                              [--truth FILE.npz] [--keep FOLDER] [--others]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.synthetic import SEGMENTS_PER_TRACK, Synthetic  # noqa: E402
from core import index as ann  # noqa: E402
from core.vectors import normalize  # noqa: E402


def exact_answers(space: Synthetic, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k segment ids and top-k track ids of every query, one batch at a time.

    A batch holds whole tracks, so a track's best segment within its batch is its best overall.
    """
    best_segments = np.full((len(queries), k), -1, np.int64)
    segment_scores = np.full((len(queries), k), -np.inf, np.float32)
    best_tracks = np.full((len(queries), k), -1, np.int64)
    track_scores = np.full((len(queries), k), -np.inf, np.float32)
    for i in range(len(space)):
        ids, tracks, x = space.generate(i)
        scores = queries @ x.T
        per_track = scores.reshape(len(queries), -1, SEGMENTS_PER_TRACK).max(axis=2)
        batch_tracks = tracks[::SEGMENTS_PER_TRACK]
        for q in range(len(queries)):
            for best, kept, new_ids, new_scores in ((best_segments, segment_scores, ids, scores[q]),
                                                    (best_tracks, track_scores, batch_tracks, per_track[q])):
                all_ids = np.concatenate([best[q], new_ids])
                all_scores = np.concatenate([kept[q], new_scores])
                top = np.argsort(-all_scores, kind="stable")[:k]
                best[q], kept[q] = all_ids[top], all_scores[top]
    return best_segments, best_tracks


def other_indexes(space: Synthetic, sweep: list[int]):
    """The indexes measured before choosing faiss IVF with float16 codes: (name, seconds to build, search at each setting).

    usearch is not a dependency of the project: ``pip install usearch`` to run these.
    """
    import faiss
    from usearch.index import Index

    cells = ann.cells_for(space.rows)
    sample = np.concatenate([space.generate(i)[2][:: max(1, len(space) * space.batch // (64 * cells))]
                             for i in range(len(space))])
    t0 = time.perf_counter()
    ivf = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(space.dim), space.dim, cells, faiss.ScalarQuantizer.QT_8bit,
                                        faiss.METRIC_INNER_PRODUCT)
    ivf.cp.spherical = True
    ivf.train(sample)
    for i in range(len(space)):
        ids, _, x = space.generate(i)
        ivf.add_with_ids(x, ids)
    yield ("faiss IVF, int8 codes", time.perf_counter() - t0, "probe share",
           [(share, lambda q, k, share=share: ivf.search(q[None], k, params=faiss.SearchParametersIVF(
               nprobe=max(1, round(share * cells))))[1][0]) for share in (1 / 16, 1 / 8, 1 / 4)])
    del ivf
    for dtype in ("f16", "i8"):
        graph = Index(ndim=space.dim, metric="ip", dtype=dtype, connectivity=16, expansion_add=128)
        t0 = time.perf_counter()
        for i in range(len(space)):
            ids, _, x = space.generate(i)
            graph.add(ids, x)
        built = time.perf_counter() - t0

        def at(ef, graph=graph):
            def search(q, k):
                graph.expansion_search = ef
                return np.asarray(graph.search(q, k).keys)
            return search
        yield f"usearch HNSW (M=16), {dtype} codes", built, "beam width", [(ef, at(ef)) for ef in sweep]
        del graph


def rss_gb() -> tuple[float, float]:
    """Resident set now and at its peak, in GB."""
    now = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS")) / 1e6
    return now, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--shares", type=float, nargs="+", default=[1 / 16, 1 / 8, 1 / 4])
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--truth", help="an .npz file that keeps the exact answers between runs of one configuration")
    parser.add_argument("--threads", type=int, nargs="+", default=[1],
                        help="cores one query's scan is split over (the index uses 1); each count is timed in turn")
    parser.add_argument("--keep", help="a folder that keeps the built index between runs (searched, not rebuilt, when there)")
    parser.add_argument("--others", action="store_true",
                        help="also measure the indexes not chosen (faiss int8 codes, usearch HNSW; needs usearch)")
    args = parser.parse_args()
    print(f"cores available: {len(os.sched_getaffinity(0))}, load average: {os.getloadavg()[0]:.1f}", flush=True)
    space = Synthetic(args.rows, args.dim)
    rng = np.random.default_rng(1)
    sources = rng.choice(args.rows, args.queries, replace=False)
    queries = np.stack([space.generate(int(r) // space.batch)[2][int(r) % space.batch].copy() for r in sources])
    queries += 0.5 * rng.standard_normal(queries.shape, dtype=np.float32) / np.sqrt(args.dim)
    normalize(queries, copy=False)
    own_tracks = sources // SEGMENTS_PER_TRACK
    own_segments = [np.arange(t * SEGMENTS_PER_TRACK, (t + 1) * SEGMENTS_PER_TRACK) for t in own_tracks]

    t0 = time.perf_counter()
    if args.truth and Path(args.truth).is_file():
        kept = np.load(args.truth)
        truth_segments, truth_tracks = kept["segments"], kept["tracks"]
    else:
        truth_segments, truth_tracks = exact_answers(space, queries, args.k)
        if args.truth:
            np.savez(args.truth, segments=truth_segments, tracks=truth_tracks)
    print(f"exact answers, batch by batch: {time.perf_counter() - t0:.0f} s", flush=True)

    if args.others:
        print(f"{'index not chosen':<32} {'build s':>8} {'setting':>12} {'recall@10':>9} {'median ms':>10}")
        for name, built, setting, searches in other_indexes(space, [64, 256, 1024]):
            for value, search in searches:
                times, recall = [], []
                for q, query in enumerate(queries):
                    t0 = time.perf_counter()
                    ids = search(query, args.k)
                    times.append(time.perf_counter() - t0)
                    recall.append(len(np.intersect1d(ids, truth_segments[q])) / args.k)
                print(f"{name:<32} {built:>8.0f} {setting + ' ' + format(value, 'g'):>12} {np.mean(recall):>9.3f} "
                      f"{1000 * np.median(times):>10.1f}", flush=True)

    keep = Path(args.keep or tempfile.mkdtemp(dir=os.environ.get("BENCH_TMP"))) / f"bench-{args.rows}x{args.dim}"
    if Path(f"{keep}.faiss").is_file():
        t0 = time.perf_counter()
        index = ann.load(keep)
        print(f"index loaded from {keep.parent} in {time.perf_counter() - t0:.1f} s (built by an earlier run)", flush=True)
    else:
        space.seconds = 0.0
        t0 = time.perf_counter()
        index = ann.build(space, args.rows, args.dim)
        total = time.perf_counter() - t0
        now, peak = rss_gb()
        print(f"build: {total - space.seconds:.0f} s ({total:.0f} s with {space.seconds:.0f} s of generating the batches); "
              f"{index.ivf.nlist} cells; index {index.nbytes / 1e9:.2f} GB; process RSS {now:.2f} GB, peak {peak:.2f} GB",
              flush=True)
        t0 = time.perf_counter()
        ann.save(index, keep)
        saved = time.perf_counter() - t0
        size = sum(Path(f"{keep}{end}").stat().st_size for end in (".faiss", ".rows.npy"))
        del index
        t0 = time.perf_counter()
        index = ann.load(keep)
        print(f"files: {size / 1e9:.2f} GB, saved in {saved:.1f} s, loaded in {time.perf_counter() - t0:.1f} s", flush=True)
        if not args.keep:
            for end in (".faiss", ".rows.npy"):
                Path(f"{keep}{end}").unlink()
            keep.parent.rmdir()

    import faiss

    print(f"{'cores':>7} {'probe share':>11} {'level':<22} {'recall@10':>9} {'median ms':>10} {'min ms':>7}")
    for threads, share in [(t, s) for t in args.threads for s in args.shares]:
        faiss.omp_set_num_threads(threads)
        index.ivf.parallel_mode = int(threads > 1)  # 1: split one query's probes over the threads
        for level, exclude in (("segment", False), ("track", False), ("segment", True)):
            times, recall = [], []
            for q, query in enumerate(queries):
                t0 = time.perf_counter()
                ids, _ = index.search(query, k=args.k, level=level, probe_share=share,
                                      exclude=own_segments[q] if exclude else None)
                times.append(time.perf_counter() - t0)
                if level == "track":
                    recall.append(len(np.intersect1d(index.tracks_of(ids), truth_tracks[q])) / args.k)
                elif not exclude:
                    recall.append(len(np.intersect1d(ids, truth_segments[q])) / args.k)
                else:
                    assert not np.isin(index.tracks_of(ids), own_tracks[q]).any(), "own track returned"
            name = level + (", own track excluded" if exclude else "")
            shown = f"{np.mean(recall):.3f}" if recall else "–"
            print(f"{threads:>7} {share:>11.4f} {name:<22} {shown:>9} {1000 * np.median(times):>10.1f} {1000 * np.min(times):>7.1f}",
                  flush=True)
    now, peak = rss_gb()
    print(f"process RSS while searching {now:.2f} GB, peak {peak:.2f} GB; load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

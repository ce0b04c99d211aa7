"""Command-line interface over ``core``: batch work without the browser.

Exit codes, for every command: 0 everything worked; 1 partly done (some
files failed, they are listed and the rest were stored); 2 nothing done (bad
usage, unknown or unavailable model, dimension or grid mismatch), with a
one-line reason on stderr.  Every refusal is a ``core.errors.AEBError`` (or
``core.audio.AudioError`` for a query file), mapped to exit 2 in :func:`main`.
``--db`` defaults to the store the app opens (``AEB_DB``, see ``core.config``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from core import audio
from core.config import db_path, sample_count, whole_number
from core.errors import AEBError, BadInput
from core.jsonable import jsonable
from core.models.base import model_table, normalise_key, parse_layers, stored_name
from core.models.precision import BF16_MIN_COSINE, PRECISIONS
from core.paths import display, is_url
from core.store import Store
from core.wording import count_label

OK, PARTIAL, NOTHING = 0, 1, 2


#: Bad usage, reported like every other refusal of the family: one line, exit code 2.
UsageError = BadInput


def _print_json(obj) -> None:
    print(json.dumps(jsonable(obj), indent=2, allow_nan=False))


@contextlib.contextmanager
def _step_bar(unit: str):
    """A tqdm bar on stderr driven by the :mod:`core.progress` protocol: one count and time left per step.

    It appears only once a computation has run for a second, so cached
    results and quick steps print nothing.
    """
    from tqdm import tqdm

    bar = tqdm(total=None, unit=unit, unit_scale=True, dynamic_ncols=True, file=sys.stderr, delay=1.0)

    def progress(done: int, total: int, step: str) -> None:
        if step != bar.desc:
            bar.reset(total=total)
            bar.set_description_str(step, refresh=False)
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        bar.close()


def _existing_store(db: str) -> Store:
    if not Path(db).expanduser().exists():
        raise UsageError(f"No database at {db}; run `python -m core extract` first or pass --db.")
    return Store(db)


# ---------------------------------------------------------------------- commands


def cmd_extract(args) -> int:
    from tqdm import tqdm

    from core.config import settings
    from core.extract import extract, read_metadata_csv
    from core.store import check_grid

    if args.engine == "local":
        for flag, value in (("--ray-address", args.ray_address), ("--shards", args.shards)):
            if value is not None:
                raise UsageError(f"{flag} applies to --engine ray; add --engine ray or leave it out.")
    elif args.device or args.precision != "fp32" or args.layers:
        raise UsageError("--device, --precision and --layers apply to the local engine; leave them out with --engine ray.")
    for p in args.paths:
        if not (args.engine == "ray" and is_url(p)) and not os.path.lexists(Path(p).expanduser()):
            raise UsageError(f"{p} does not exist.")
    check_grid(args.segment, args.hop)
    max_samples = args.max_samples or settings().max_samples
    keys = [normalise_key(k) for k in args.model]
    metadata = read_metadata_csv(args.metadata, args.paths) if args.metadata else None
    bar = None  # made at the first file, so that a run refused before it prints one line only

    def progress(done: int, total: int, name: str) -> None:
        nonlocal bar
        if bar is None:  # with its total when known: a bar of unknown length prints a stray "0file" line
            bar = tqdm(total=total or None, unit="file", dynamic_ncols=True, file=sys.stderr)
        bar.total = total or None  # the Ray engine streams manifests: no total until the end
        bar.set_postfix_str(name.rsplit("/", 1)[-1][-30:], refresh=False)
        bar.update(1)

    layers = parse_layers(args.layers) if args.layers is not None else None
    try:
        if args.engine == "ray":
            from core.ray_engine import extract_ray

            report = extract_ray(args.paths, keys, shards=args.shards, db=args.db, window_s=args.segment,
                                 hop_s=args.hop, max_samples=max_samples, workers=args.workers,
                                 batch_size=args.batch_size, ray_address=args.ray_address, metadata=metadata,
                                 progress=progress)
        else:
            report = extract(args.paths, keys, db=args.db, window_s=args.segment, hop_s=args.hop,
                             metadata=metadata, progress=progress, max_samples=max_samples, device=args.device,
                             workers=args.workers or 0, batch_size=args.batch_size, precision=args.precision,
                             layers=layers)
    finally:
        if bar is not None:
            bar.close()
    for key, used in report.precisions.items():
        if used != args.precision:
            print(f"note: {key} ran in {used}: its bf16 vectors were not verified to stay within cosine "
                  f"{BF16_MIN_COSINE} of fp32 (see `python -m core models`).", file=sys.stderr)
    for space in report.replaced_spaces:
        print(f"note: {space} was re-extracted from scratch: its adapter version, weights or precision changed.",
              file=sys.stderr)
    if metadata is not None:
        print(f"metadata: {report.metadata_matched} of {report.metadata_rows} rows of {Path(args.metadata).name} "
              "matched a file found.", file=sys.stderr)
        if not report.metadata_matched:
            print("warning: no metadata row matched; its 'path' column must name the files relative to the folder "
                  "given (or absolutely).", file=sys.stderr)
    summary = (f"{count_label(report.files, 'file')}: {report.stored} stored, {report.skipped} already up to date, "
               f"{len(report.failed_paths)} failed; {report.audio_s:.1f} s of audio in {report.seconds:.1f} s.")
    print(summary, file=sys.stderr)
    return _failed(report)


def _failed(report) -> int:
    """List a run's failed files on stderr; the exit code says whether there were any."""
    if report.failures:
        print("Failed files:", file=sys.stderr)
        for f in report.failures:
            print(f"  {display(f.path)} [{f.model}]: {f.message}", file=sys.stderr)
        return PARTIAL
    return OK


def cmd_ingest(args) -> int:
    from core.shards import ingest, parse_path_map

    path_map = parse_path_map(args.path_map or [])
    report = ingest(args.shards, args.db, path_map=path_map, replace=args.replace)
    for space in report.replaced_spaces:
        print(f"note: {space} was replaced by the shards' vectors (--replace).", file=sys.stderr)
    print(f"{report.files} files in the shards: {report.stored} tracks stored, {report.skipped} already in the store, "
          f"{len(report.failed_paths)} failed.", file=sys.stderr)
    return _failed(report)


def cmd_models(args) -> int:
    rows = model_table()
    if args.json:
        _print_json(rows)
    else:
        from core.models.base import layer_range

        width = max(len(r["key"]) for r in rows)
        for r in rows:
            state = "available" if r["available"] else "unavailable"
            line = f"{r['key']:<{width}}  {r['dim']:>5}-D  {'fp32+bf16' if r['bf16'] else 'fp32     '}  {state}"
            line += f"  layers {layer_range(r['layers'])} (--layers)" if r["layers"] else ""
            print(line + (f"  ({r['reason']})" if r["reason"] else ""))
    return OK


def cmd_info(args) -> int:
    info = _existing_store(args.db).info()
    if args.json:
        _print_json(info)
    else:
        print(f"{count_label(info['tracks'], 'track')}, {count_label(info['segments'], 'segment')}, "
              f"grid {_grid_text(info['grid'])}")
        for space, n in info["embeddings"].items():
            print(f"  {space}: {count_label(n, 'vector')}")
        print(f"{count_label(info['failures'], 'failed file')} in the latest runs; "
              f"{count_label(info['missing_files'], 'track')} whose files are gone"
              + (f"; {count_label(info['remote_files'], 'remote track')} (URLs)" if info["remote_files"] else ""))
        for p in info["missing_paths"]:
            print(f"  missing: {display(p)}")
    return OK


def _grid_text(grid: dict | None) -> str:
    if not grid or grid.get("window_s") is None:
        return "not set (nothing extracted yet, or only imported vectors)"
    return f"{grid['window_s']:g} s windows every {grid['hop_s']:g} s"


def cmd_project(args) -> int:
    from core.reduce import cached_projection

    store = _existing_store(args.db)
    space = _stored_space(store, args.model)
    with _step_bar("point") as progress:
        result = cached_projection(store, space, args.method, level=args.level, progress=progress,
                                   sample_above=args.sample_above, fit_sample=args.fit_sample)
    out = {"model": space, "method": args.method, "level": args.level, "n": int(len(result["ids"])),
           "seconds": result["seconds"], "cached": result["cached"],
           "trustworthiness": result["info"].get("trustworthiness"), **{
               k: v for k, v in result["info"].items() if k != "trustworthiness"}}
    if args.json:
        _print_json(out)
    else:
        sampled = (f", fit on a sample of {out['fit_sample']:,} and the other {out['placed']:,} placed into it"
                   if "fit_sample" in out else "")
        print(f"{space} {args.method} ({args.level}): {out['n']} points in {out['seconds']:.2f} s"
              f"{' (cached)' if out['cached'] else ''}{sampled}, trustworthiness@10 = {out['trustworthiness']:.3f}")
    return OK


def _stored_space(store: Store, key: str) -> str:
    """The stored name of a space given in any spelling (``mert-v1-95m-l6`` finds ``mert-v1-95m/l6`` and back);
    a model that is not stored and cannot load here says why, not only that it is missing."""
    from core.models.base import why_unavailable

    space = stored_name(normalise_key(key), set(store.spaces()["space"]))
    if store.space(space) is None:
        reason = why_unavailable(space)
        if reason:
            raise UsageError(f"No embeddings for {space!r} in {store.path.name}, and none can be made here: {reason}")
    store.require_space(space)
    return space


def cmd_search(args) -> int:
    from core import spaces
    from core.config import settings
    from core.models.base import embeds_text, load_model, split_key
    from core.search import embed_clip, index_for, search_store

    store = _existing_store(args.db)
    key = _stored_space(store, args.model)
    model_key, _ = split_key(key)
    space = spaces.load(store, key, "segment")
    if args.text is not None:
        if not embeds_text(key):
            raise UsageError(f"{key} embeds audio only; text search needs a text-audio model such as clap-htsat-unfused.")
        query = load_model(model_key).embed_text([args.text])[0]
    else:
        if not Path(args.audio).is_file():
            raise UsageError(f"{args.audio} does not exist.")
        if store.grid() is None:
            raise UsageError(f"{store.path.name} has no segment grid (its vectors were imported); query it with --text.")
        window, hop = store.grid()
        try:
            query = embed_clip(load_model(model_key), args.audio, window, hop, space=key,
                               max_samples=settings().max_samples)
        except audio.AudioError as exc:
            raise UsageError(f"{args.audio}: {exc}") from None
    with _step_bar("vector") as progress:
        index = index_for(store, space, progress=progress)  # built once per data version, minutes at millions
    found = search_store(store, space, query, k=args.k, level=args.level, index=index)
    if args.json:
        _print_json([{k: r[k] for k in ("path", "path_escaped", "start_s", "end_s", "score", "metadata")} for r in found])
    else:
        for i, r in enumerate(found, 1):
            print(f"{i:>3}. {r['score']:.3f}  {display(r['path'])}  {r['start_s']:.1f}-{r['end_s']:.1f} s")
    return OK


def cmd_metrics(args) -> int:
    from core.analyses import layered_models, store_layers, store_metrics, with_baseline

    store = _existing_store(args.db)
    held = set(store.spaces()["space"])
    models = with_baseline(store, [stored_name(normalise_key(m), held) for m in args.model])
    with_layers = layered_models(store) if args.layers else {}
    layered = [m for m in models if m in with_layers]
    if args.layers and not layered:
        raise UsageError(f"None of {', '.join(models)} has stored layer spaces; "
                         "extract a model with layers using --layers (e.g. --model mert-v1-95m --layers all).")
    table = store_metrics(store, models, label=args.label, group=args.group, k=args.k, level=args.level,
                          method=args.method, probe=True)
    if layered:
        table["layers"] = {}
        for m in layered:
            found = store_layers(store, m, label=args.label, group=args.group, k=args.k, level=args.level,
                                 against=[o for o in models if o != m])
            table["layers"][m] = {key: v for key, v in found.items() if key != "cached"}
    if args.json:
        _print_json(table)
        return OK
    _print_metrics(table, models, args.k, args.level, args.label)
    for m, found in table.get("layers", {}).items():
        _print_layers(found)
    return OK


def _print_metrics(table: dict, models: list[str], k: int, level: str, label: str | None) -> None:
    probes = {m: table[m].pop("linear_probe") for m in models if "linear_probe" in table[m]}
    columns = list(dict.fromkeys(name for m in models for name, v in table[m].items()
                                 if not isinstance(v, (dict, list)) and name not in ("chance", "majority")))
    print(f"{'model':<28}" + "".join(f"{c:>16}" for c in columns) + ("    linear probe" if probes else ""))
    for m in models:
        probe = f"{_number(probes[m]['accuracy']):>16}" if m in probes else ""
        print(f"{m:<28}" + "".join(f"{_number(table[m].get(c)):>16}" for c in columns) + probe)
    for m in models:
        if "ci95" in table[m]:
            print(f"{m}: 95% intervals " + ", ".join(f"{metric} [{_number(lo)}, {_number(hi)}]"
                                                    for metric, (lo, hi) in table[m]["ci95"].items()))
    if label:
        first = table[models[0]]
        print(f"chance (label of a random other item) {_number(first['chance'])}, "
              f"majority label {_number(first['majority'])}")
    for pair, values in table["pairs"].items():
        print(f"{pair}: CKA {_number(values['cka'])}, Jaccard@{k} {_number(values['jaccard_at_k'])}")
    info = table["info"]
    scored = f"a sample of {info['sampled']:,}" if info["sampled"] else "all"
    took = "cached" if info["cached"] else f"{info['seconds']:.1f} s"
    dropped = f"; {info['dropped']:,} without a label or group value left out" if info.get("dropped") else ""
    print(f"{info['n']:,} {level}s shared by the models, {scored} scored ({took}){dropped}", file=sys.stderr)
    if probes:
        probe = next(iter(probes.values()))
        print(f"linear probe: logistic regression, {probe['folds']} grouped folds, on {probe['n']:,} of "
              f"{probe['of']:,} labelled {level}s", file=sys.stderr)


def _print_layers(found: dict) -> None:
    others = list(found["against"])
    print(f"\n{found['model']}, layer by layer (CKA: debiased, against the layer before and the other models)")
    print(f"{'layer':>5}" + (f"{'k-NN acc':>10}{'95 % interval':>18}" if "knn_acc" in found else "")
          + f"{'CKA prev':>10}" + "".join(f"{o[-14:]:>16}" for o in others))
    for i, layer in enumerate(found["layers"]):
        line = f"{layer:>5}"
        if "knn_acc" in found:
            low, high = found["ci95"][i]
            line += f"{_number(found['knn_acc'][i]):>10}{f'{_number(low)}–{_number(high)}':>18}"
        line += f"{_number(found['cka'][i][i - 1]) if i else '—':>10}"
        print(line + "".join(f"{_number(found['against'][o][i]):>16}" for o in others))


def _number(value) -> str:
    return "—" if value is None or value != value else f"{value:.3f}"


def cmd_export(args) -> int:
    store = _existing_store(args.db)
    space = _stored_space(store, args.model)
    if args.clips is None:
        from core.exchange import export_parquet

        if args.ids:
            raise UsageError("--ids chooses segments to cut as clips; pass --clips DIR with it.")
        n = export_parquet(store, space, args.out)
        print(f"wrote {n} rows to {args.out}", file=sys.stderr)
        return OK
    return _export_clips(store, space, args)


def _export_clips(store: Store, space: str, args) -> int:
    """One clip per segment of ``space`` (or of the ``--ids`` CSV) and ``segments.csv``; exit 1 when some failed."""
    import numpy as np
    import pandas as pd

    from core.clips import SEGMENTS_CSV, match_ids, write_clips

    ids = store.vectors(space)[0]
    if args.ids:
        if not Path(args.ids).is_file():
            raise UsageError(f"{args.ids} does not exist.")
        try:
            wanted = pd.read_csv(args.ids)
        except (ValueError, UnicodeDecodeError) as exc:
            raise UsageError(f"{args.ids} is not a readable CSV: {str(exc).splitlines()[0]}") from None
        chosen = match_ids(store.segments_frame(with_metadata=False), wanted)
        outside = chosen[~np.isin(chosen, ids)]
        if len(outside):
            raise UsageError(f"{len(outside)} segments of {args.ids} have no {space} vector; export them with their model.")
        ids = chosen
    written, failures = write_clips(store.rows(ids), args.clips)
    print(f"wrote {written} clips and {SEGMENTS_CSV} to {display(args.clips)}", file=sys.stderr)
    for line in failures:
        print(f"  failed: {line}", file=sys.stderr)
    return PARTIAL if failures else OK


def cmd_import(args) -> int:
    from core.exchange import import_parquet

    if not Path(args.file).is_file():
        raise UsageError(f"{args.file} does not exist.")
    n = import_parquet(Store(args.db), args.file, normalise_key(args.model), replace=args.replace)
    print(f"imported {n} vectors as {normalise_key(args.model)}", file=sys.stderr)
    return OK


def cmd_publish(args) -> int:
    from core.publish import publish

    store = _existing_store(args.db)
    keys = [normalise_key(m) for m in args.model] if args.model else None
    report = publish(store.path, args.out, models=keys, audio_mode=args.audio, max_mb=args.max_mb, label=args.label,
                     group=args.group, progress=lambda line: print(line, file=sys.stderr))
    print("\n".join(report.lines()))
    for path, reason in report.missing_audio:
        print(f"  no audio for {path}: {reason}", file=sys.stderr)
    return PARTIAL if report.missing_audio else OK


# ---------------------------------------------------------------------- parser


def _argument(parse):
    """An argparse type from a parser of :mod:`core.config`: its ``BadInput`` becomes argparse's one-line usage
    error instead of a traceback."""
    def checked(text: str):
        try:
            return parse(text)
        except BadInput as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return checked


def _points(name: str, minimum: int):
    return _argument(lambda text: whole_number(text, name, minimum, f"a whole number of at least {minimum}, such as "
                                                                    "50000"))


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors in one line as every other exit-2 reason."""

    def error(self, message):
        self.exit(NOTHING, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m core", description="Audio embedding browser, headless.")
    sub = parser.add_subparsers(dest="command", required=True)

    def db_arg(p):
        p.add_argument("--db", default=str(db_path()), help="DuckDB file (default: $AEB_DB, else cache/embeddings.duckdb)")

    p = sub.add_parser("extract", help="embed files and folders into the store")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--model", action="append", required=True, help="model key; repeat for several")
    db_arg(p)
    p.add_argument("--segment", type=float, default=audio.DEFAULT_WINDOW_S, help="segment window in seconds")
    p.add_argument("--hop", type=float, default=audio.DEFAULT_HOP_S, help="segment hop in seconds")
    p.add_argument("--metadata", help="CSV with a 'path' column (relative to the folder given)")
    p.add_argument("--max-samples", type=_argument(sample_count), default=None,
                   help="refuse files holding more decoded sample values (seconds × rate × channels) than this "
                        "(default: AEB_MAX_SAMPLES or 2e9)")
    p.add_argument("--device", help="where the models run: cpu, cuda or cuda:N (default: a GPU when there is one)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes that decode, mix and resample (default 0: this one; on a GPU machine, the CPU "
                        "cores less one); with --engine ray: actors per model and CPU tasks at once")
    p.add_argument("--batch-size", type=int, default=None,
                   help="items per forward pass (default: each model's own); with --engine ray: files per batch "
                        "and per shard")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="the networks' arithmetic; bf16 applies to the models verified for it, the others run in fp32")
    p.add_argument("--layers", metavar="LAYERS",
                   help="hidden states to store as well, for every model with layers: all, 6, 0-12 or 0-3,6 "
                        "(one forward pass fills them all; a model's own key always holds the mean of its layers)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process; ray: Ray Data, on this machine or a cluster (requirements-cluster.txt)")
    p.add_argument("--ray-address", help="with --engine ray: the cluster to join (default: start Ray here)")
    p.add_argument("--shards", help="with --engine ray: folder (local, s3://, gs://) for the Parquet shards "
                                    "(default: DB.shards beside the store)")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("ingest", help="take the Parquet shards of an --engine ray extraction into a store")
    p.add_argument("shards", metavar="SHARDS_DIR")
    db_arg(p)
    p.add_argument("--path-map", action="append", metavar="OLD=NEW",
                   help="rewrite path prefixes the shards hold (files now elsewhere); repeat for several")
    p.add_argument("--replace", action="store_true",
                   help="replace vectors the store holds for a model under another adapter version, weights or source")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("models", help="list the model catalogue")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("info", help="what the store holds")
    db_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("project", help="compute and cache a 2-D projection")
    p.add_argument("--model", required=True)
    p.add_argument("--method", required=True, choices=["pca", "std-pca", "tsne", "umap"])
    p.add_argument("--level", default="segment", choices=["segment", "track"])
    p.add_argument("--sample-above", type=_points("--sample-above", 0), metavar="N",
                   help="fit t-SNE and UMAP of more than N points on a sample and place the rest (default 100,000)")
    p.add_argument("--fit-sample", type=_points("--fit-sample", 3), metavar="N", help="points of that sample (default 50,000)")
    db_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_project)

    p = sub.add_parser("search", help="top-k segments or tracks for a text or an audio query")
    p.add_argument("--model", required=True)
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="a description (text-audio models such as CLAP)")
    query.add_argument("--audio", help="an audio file; longer than a segment, the mean of its segment vectors is used")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--level", default="segment", choices=["segment", "track"])
    db_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("metrics", help="compare models: k-NN accuracy, silhouette, CKA, neighbour overlap, …")
    p.add_argument("--model", action="append", required=True, help="model key; repeat for several (dsp is always added)")
    p.add_argument("--label", help="metadata column holding the labels")
    p.add_argument("--group", help="metadata column whose groups are excluded from each other's neighbours")
    p.add_argument("-k", type=int, default=10, help="k of the k-NN accuracy and of Jaccard@k")
    p.add_argument("--level", default="segment", choices=["segment", "track"])
    p.add_argument("--method", default="pca", choices=["pca", "std-pca", "tsne", "umap"],
                   help="map whose trustworthiness is reported")
    p.add_argument("--layers", action="store_true",
                   help="add a top-level 'layers' object for every model with stored layer spaces: k-NN accuracy "
                        "per layer, layer × layer CKA, and each layer's CKA against the other models")
    db_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("export", help="write a model's embeddings to Parquet, or its segments as audio clips")
    p.add_argument("--model", required=True)
    db_arg(p)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="Parquet file of the embeddings")
    target.add_argument("--clips", metavar="DIR", help="folder for one WAV clip per segment and segments.csv")
    p.add_argument("--ids", metavar="CSV", help="with --clips: only the segments named by path,start_s "
                                                "(the app's selection CSV, search --json)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="store precomputed embeddings from Parquet")
    p.add_argument("file")
    p.add_argument("--model", required=True)
    db_arg(p)
    p.add_argument("--replace", action="store_true", help="replace the vectors the space already holds")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("publish", help="write a self-contained folder that a public app opens read-only")
    db_arg(p)
    p.add_argument("--out", required=True, help="a new folder (AEB_COLLECTION=DIR opens it)")
    p.add_argument("--model", action="append", help="space to publish, with its other outputs; repeat; all by default")
    p.add_argument("--audio", default="ogg", choices=["ogg", "copy", "none"],
                   help="compact mono Ogg of what the segments cover (default), the original files, or no playback")
    p.add_argument("--max-mb", type=float, help="refuse, writing nothing, when the folder would be larger")
    p.add_argument("--label", help="metadata column of labels for the Compare metrics computed now")
    p.add_argument("--group", help="metadata column whose groups the Compare metrics keep apart")
    p.set_defaults(func=cmd_publish)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its one-line usage error
        return NOTHING if exc.code else OK
    try:
        return args.func(args)
    except (AEBError, audio.AudioError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return NOTHING
    except OSError as exc:  # a path that cannot be read or written
        where = f": {display(exc.filename)}" if exc.filename else ""
        print(f"error: {exc.strerror or type(exc).__name__}{where}", file=sys.stderr)
        return NOTHING
    except MemoryError as exc:
        print(f"error: not enough memory ({str(exc).splitlines()[0] if str(exc) else 'MemoryError'}); "
              "ask for less (a smaller -k, fewer models) or free memory", file=sys.stderr)
        return NOTHING
    except KeyboardInterrupt:
        print("interrupted: finished tracks are stored; run the same command again to resume.", file=sys.stderr)
        return PARTIAL

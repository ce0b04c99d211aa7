"""Search on constructed vectors whose answers are known by brute force."""

from __future__ import annotations

import numpy as np
import pytest

from core import search as search_module
from core.search import (
    SearchError,
    build_sketch,
    cosine_scores,
    mean_embedding,
    rank_segments,
    rank_tracks,
    search,
    top_k,
    zero_shot,
)
from core.vectors import normalize


@pytest.fixture(scope="module")
def stored():
    rng = np.random.default_rng(1)
    return normalize(rng.standard_normal((3000, 64)))


def test_normalize_gives_unit_rows_and_keeps_zero_rows_zero():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    unit = normalize(x)
    assert unit.dtype == np.float32 and unit.flags.c_contiguous
    np.testing.assert_allclose(unit, [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)
    assert x[0, 0] == 3.0


def test_normalize_in_place_saves_a_copy():
    x = np.array([[3.0, 4.0]], dtype=np.float32)
    assert np.shares_memory(normalize(x, copy=False), x)
    np.testing.assert_allclose(x, [[0.6, 0.8]], atol=1e-7)


def test_top_k_equals_brute_force_argsort(stored):
    rng = np.random.default_rng(2)
    queries = rng.standard_normal((5, 64))
    idx, scores = top_k(stored, queries, k=7)
    unit_queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    brute = stored.astype(np.float64) @ unit_queries.T
    for j in range(len(queries)):
        expected = np.argsort(-brute[:, j], kind="stable")[:7]
        np.testing.assert_array_equal(idx[j], expected)
        np.testing.assert_allclose(scores[j], brute[expected, j], atol=1e-5)
    single_idx, single_scores = top_k(stored, queries[0], k=7)
    np.testing.assert_array_equal(single_idx, idx[0])
    np.testing.assert_allclose(single_scores, scores[0], atol=1e-6)


def test_ties_are_broken_by_lower_index():
    stored = normalize(np.array([[1.0, 0.0]] * 5 + [[0.0, 1.0]]))
    idx, _ = top_k(stored, np.array([1.0, 0.0]), k=3)
    np.testing.assert_array_equal(idx, [0, 1, 2])


def test_excluded_rows_are_never_returned(stored):
    query = stored[10] * 5.0
    exclude = np.zeros(len(stored), dtype=bool)
    exclude[:100] = True
    idx, scores = rank_segments(cosine_scores(stored, query), k=20, exclude=exclude)
    assert len(idx) == 20 and idx.min() >= 100
    assert np.all(np.diff(scores) <= 0)
    own, _ = top_k(stored, query, k=1)
    assert own[0] == 10


def test_fewer_results_when_fewer_rows_are_left():
    stored = normalize(np.eye(4))
    idx, _ = top_k(stored, np.ones(4), k=10, exclude=np.array([True, False, True, False]))
    np.testing.assert_array_equal(np.sort(idx), [1, 3])


def test_track_ranking_uses_the_best_segment():
    scores = np.array([0.9, 0.1, 0.1, 0.5, 0.6, 0.8, 0.95], dtype=np.float32)
    tracks = np.array(["a", "a", "a", "b", "b", "c", "d"])
    exclude = tracks == "d"
    ids, track_scores, best = rank_tracks(scores, tracks, k=10, exclude=exclude)
    np.testing.assert_array_equal(ids, ["a", "c", "b"])
    np.testing.assert_allclose(track_scores, [0.9, 0.8, 0.6])
    np.testing.assert_array_equal(best, [0, 5, 4])


def test_track_ranking_equals_brute_force_max(stored):
    rng = np.random.default_rng(3)
    tracks = rng.integers(0, 400, len(stored))
    scores = cosine_scores(stored, rng.standard_normal(64))
    ids, track_scores, best = rank_tracks(scores, tracks, k=25)
    maxima = {t: scores[tracks == t].max() for t in np.unique(tracks)}
    expected = sorted(maxima, key=lambda t: -maxima[t])[:25]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(track_scores, [maxima[t] for t in expected])
    np.testing.assert_array_equal(tracks[best], ids)
    np.testing.assert_allclose(scores[best], track_scores)


def test_dimension_mismatch_names_both_dimensions(stored):
    with pytest.raises(SearchError, match="512 dimensions but the stored vectors have 64"):
        top_k(stored, np.ones(512))


@pytest.mark.parametrize(
    ("matrix", "query", "message"),
    [
        (np.zeros((0, 4), np.float32), np.ones(4), "no stored vectors"),
        (np.ones((3, 4), np.float32), np.ones(4), "not L2-normalised"),
        (np.eye(4, dtype=np.float64), np.ones(4), "float32"),
        (np.eye(4, dtype=np.float32), np.zeros(4), "all zeros"),
        (np.eye(4, dtype=np.float32), np.array([1.0, np.nan, 0, 0]), "NaN"),
    ],
)
def test_unusable_queries_raise_a_reason(matrix, query, message):
    with pytest.raises(SearchError, match=message):
        top_k(matrix, query)


def test_everything_excluded_raises(stored):
    with pytest.raises(SearchError, match="own track"):
        rank_segments(np.zeros(3), exclude=np.ones(3, bool))


def test_non_finite_stored_vector_raises():
    with pytest.raises(SearchError, match="vector 1"):
        normalize(np.array([[1.0, 0.0], [np.inf, 0.0]]))


def test_mean_embedding_is_the_normalised_mean_of_unit_segments():
    segments = np.array([[2.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(mean_embedding(segments), [np.sqrt(0.5), np.sqrt(0.5)], rtol=1e-6)
    with pytest.raises(SearchError):
        mean_embedding(np.zeros((0, 2)))


def test_zero_shot_best_label_and_clap_probability(stored):
    labels = stored[:3] * 2.0
    best, score = zero_shot(stored, labels)
    cos = stored @ (labels / 2.0).T
    np.testing.assert_array_equal(best, np.argmax(cos, axis=1))
    np.testing.assert_allclose(score, cos.max(axis=1), atol=1e-6)
    assert np.all(best[:3] == [0, 1, 2])
    _, prob = zero_shot(stored, labels, logit_scale=100.0)
    logits = 100.0 * cos
    soft = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(prob, (soft / soft.sum(axis=1, keepdims=True)).max(axis=1), rtol=1e-5)
    with pytest.raises(SearchError, match="dimensions"):
        zero_shot(stored, np.ones((2, 8)))


# ---------------------------------------------------------------------- the int8 sketch


@pytest.fixture(scope="module")
def clustered():
    """Clustered unit vectors with some spiky rows (one large component) and exact duplicates,
    the shapes that stress a per-row int8 scale; ten segments per track."""
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((40, 96))
    x = 3 * centres[rng.integers(0, 40, 20_000)] + rng.standard_normal((20_000, 96))
    x[::97, rng.integers(0, 96)] += 60.0
    x[1::500] = x[0::500]
    return normalize(x), np.repeat(np.arange(2_000), 10)


@pytest.fixture(scope="module")
def sketch(clustered):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(search_module, "SKETCH_MIN_VALUES", 0)
        return build_sketch(clustered[0])


def test_sketch_is_a_quarter_of_the_matrix(clustered, sketch):
    matrix, _ = clustered
    assert sketch.shape == matrix.shape
    assert sketch.nbytes <= matrix.nbytes / 4 + 6 * len(matrix)


def test_small_matrices_get_no_sketch(stored):
    assert build_sketch(stored) is None


def test_sketch_error_never_exceeds_its_bound(clustered, sketch):
    matrix, _ = clustered
    rng = np.random.default_rng(3)
    queries = [matrix[5], matrix[97], -matrix[11], *normalize(rng.standard_normal((20, 96)))]
    for q in queries:
        approx, slack = sketch.bounds(q)
        exact = (matrix.astype(np.float64) @ q.astype(np.float64))
        assert np.all(np.abs(approx - exact) <= slack)


@pytest.mark.parametrize("level", ["segment", "track"])
def test_search_with_a_sketch_equals_the_float32_scan(clustered, sketch, level):
    matrix, tracks = clustered
    rng = np.random.default_rng(11)
    queries = [*matrix[rng.integers(0, len(matrix), 15)], *normalize(rng.standard_normal((15, 96)))]
    scanned = 0
    for i, q in enumerate(queries):
        noisy = q + 0.3 * rng.standard_normal(96).astype(np.float32)
        exclude = tracks == tracks[i * 37] if i % 2 else None
        for k in (1, 10, 50):
            rows, scores = search(matrix, noisy, k=k, level=level, track_ids=tracks, exclude=exclude, sketch=sketch)
            want_rows, want_scores = search(matrix, noisy, k=k, level=level, track_ids=tracks, exclude=exclude)
            np.testing.assert_array_equal(rows, want_rows)
            np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-6)
        unit = noisy / np.linalg.norm(noisy)
        candidates = sketch.candidates(matrix, unit, 10, level, tracks, exclude)
        scanned += len(matrix) if candidates is None else len(candidates)
    # The point of the sketch: most queries rescore a small fraction of the rows.
    assert scanned < 0.05 * len(matrix) * len(queries)


def test_sketch_falls_back_to_the_scan_when_nothing_is_left(clustered, sketch):
    matrix, tracks = clustered
    exclude = np.ones(len(matrix), dtype=bool)
    exclude[:3] = False
    rows, _ = search(matrix, matrix[0], k=10, exclude=exclude, sketch=sketch)
    assert sorted(rows) == [0, 1, 2]
    exclude[:] = True
    with pytest.raises(SearchError, match="Nothing is left"):
        search(matrix, matrix[0], k=10, exclude=exclude, sketch=sketch)


def test_a_sketch_of_other_vectors_is_refused(clustered, sketch):
    with pytest.raises(SearchError, match="rebuild"):
        search(clustered[0][:100], clustered[0][0], sketch=sketch)


def test_precision_at_k_is_the_share_of_results_with_the_querys_label():
    from core.search import precision_at_k

    results = [{"metadata": {"family": "drum"}}, {"metadata": {"family": "bell"}}, {"metadata": {}},
               {"metadata": {"family": "drum"}}]
    assert precision_at_k(results, "family", "drum") == 0.5
    assert precision_at_k(results, "family", None) is None and precision_at_k(results, "family", float("nan")) is None
    assert precision_at_k([], "family", "drum") is None


def test_a_region_of_a_clip_embeds_as_that_region_alone(tmp_path):
    import soundfile as sf

    from core.models.base import load_model
    from core.search import embed_clip
    from tests.conftest import tone

    y = np.concatenate([tone(300, 3.0), tone(900, 3.0), tone(2000, 3.0)])
    sf.write(tmp_path / "whole.wav", y, 22050)
    sf.write(tmp_path / "middle.wav", y[3 * 22050:6 * 22050], 22050)
    dsp = load_model("dsp")
    region = embed_clip(dsp, tmp_path / "whole.wav", 3.0, 3.0, start_s=3.0, end_s=6.0)
    assert np.allclose(region, embed_clip(dsp, tmp_path / "middle.wav", 3.0, 3.0), atol=1e-5)
    assert not np.allclose(region, embed_clip(dsp, tmp_path / "whole.wav", 3.0, 3.0), atol=1e-3)

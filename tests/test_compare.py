"""Comparison metrics on constructed spaces whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ortho_group, skew
from sklearn.model_selection import StratifiedGroupKFold

from core import compare
from core.compare import (
    EXPLANATIONS,
    CompareError,
    cka,
    hubness,
    jaccard,
    kmeans_agreement,
    knn,
    knn_classification,
    metrics_table,
    neighbour_disagreement,
    procrustes_align,
    silhouette,
    trustworthiness,
)


def clustered(n: int, dim: int, n_labels: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_labels, n)
    centres = rng.standard_normal((n_labels, dim))
    return (centres[labels] + spread * rng.standard_normal((n, dim))).astype(np.float32), labels


def angles(degrees) -> np.ndarray:
    """Unit vectors in the plane, so that cosine neighbours are nearest angles."""
    r = np.radians(degrees)
    return np.column_stack([np.cos(r), np.sin(r)])


# CKA


def test_cka_is_one_for_a_space_with_itself_and_under_orthogonal_transform_and_scale():
    x, _ = clustered(300, 40, 5, 1.0, seed=0)
    rotation = ortho_group.rvs(40, random_state=1)
    assert cka(x, x) == pytest.approx(1.0, abs=1e-9)
    assert cka(x, 3.7 * x @ rotation) == pytest.approx(1.0, abs=1e-9)
    assert cka(x, x @ rotation, debiased=False) == pytest.approx(1.0, abs=1e-9)
    wider = ortho_group.rvs(64, random_state=2)[:40]
    assert cka(x, x @ wider) == pytest.approx(1.0, abs=1e-9)


def test_debiased_cka_of_independent_random_spaces_is_near_zero():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((800, 512)), rng.standard_normal((800, 512))
    plain, debiased = cka(a, b, debiased=False), cka(a, b)
    assert 0.25 < plain < 0.45
    assert abs(debiased) < 0.02
    assert debiased < plain - 0.2


def test_debiased_cka_equals_the_gram_matrix_formula():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((50, 7)), rng.standard_normal((50, 3))
    y[:, 0] += x[:, 0]

    def hsic(k, l):
        n = len(k)
        k, l = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
        ones = np.ones(n)
        return (np.trace(k @ l) + ones @ k @ ones * (ones @ l @ ones) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * ones @ k @ l @ ones) / (n * (n - 3))

    k, l = x @ x.T, y @ y.T
    assert cka(x, y) == pytest.approx(hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l)), rel=1e-10)


# Neighbours and labels


@pytest.mark.parametrize("block_values", [1 << 24, 37**2])
def test_knn_equals_brute_force_with_self_and_group_excluded(monkeypatch, block_values):
    monkeypatch.setattr(compare, "_BLOCK_VALUES", block_values)
    x, _ = clustered(400, 16, 4, 1.0, seed=5)
    groups = np.repeat(np.arange(40), 10)
    idx, sims = knn(x, k=5, groups=groups)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    full = unit.astype(np.float64) @ unit.T.astype(np.float64)
    full[groups[:, None] == groups[None, :]] = -np.inf
    np.testing.assert_array_equal(idx, np.argsort(-full, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(sims, np.take_along_axis(full, idx, axis=1), atol=1e-5)


def test_knn_pads_with_minus_one_when_exclusion_leaves_too_few():
    idx, sims = knn(angles([0, 1, 2, 3]), k=3, groups=np.array([0, 0, 0, 1]))
    np.testing.assert_array_equal(idx[:3], [[3, -1, -1]] * 3)
    assert np.isneginf(sims[0, 1:]).all()
    assert knn_classification(idx, np.array(["a", "a", "a", "b"]))["accuracy"] == 0.0


def test_group_exclusion_changes_the_knn_accuracy():
    # Two recordings, sliced; each slice's nearest neighbour is its sibling.
    x = angles([0, 1, 10, 11])
    labels = np.array(["dog", "dog", "rain", "rain"])
    recording = np.array([0, 0, 1, 1])
    assert knn_classification(knn(x, k=1)[0], labels)["accuracy"] == 1.0
    assert knn_classification(knn(x, k=1, groups=recording)[0], labels)["accuracy"] == 0.0


def test_several_group_columns_exclude_either():
    x = angles([0, 1, 2, 30])
    track = np.array([0, 0, 1, 2])
    speaker = np.array(["s", "t", "t", "u"])
    idx, _ = knn(x, k=1, groups=[track, speaker])
    np.testing.assert_array_equal(idx[:, 0], [2, 3, 0, 2])


def test_vote_ties_go_to_the_nearest_neighbours_label():
    labels = np.array(["a", "b", "c", "b", "c"])
    idx = np.array([[1, 2, 3, 4], [2, 0, 3, 4], [0, 1, 3, 4], [0, 1, 2, 4], [1, 2, 0, 3]])
    result = knn_classification(idx, labels)
    # Row 0 sees b, c, b, c: a 2-2 tie, won by b, the label of its nearest neighbour.
    np.testing.assert_array_equal(result["predictions"], ["b", "c", "b", "c", "b"])
    assert result["accuracy"] == np.mean(result["predictions"] == labels)
    assert knn_classification(idx, labels, k=1)["predictions"][2] == "a"


def test_macro_f1_is_sklearns_on_the_predictions():
    from sklearn.metrics import f1_score

    x, labels = clustered(300, 8, 3, 2.0, seed=6)
    result = knn_classification(knn(x, k=10)[0], labels)
    assert result["macro_f1"] == pytest.approx(f1_score(labels, result["predictions"].astype(int), average="macro"))


def test_silhouette_equals_sklearn_cosine():
    from sklearn.metrics import silhouette_score

    x, labels = clustered(500, 12, 6, 1.5, seed=7)
    x[0] = 0.0
    labels[1] = 99
    assert silhouette(x, labels) == pytest.approx(silhouette_score(x, labels, metric="cosine"), abs=1e-6)
    assert np.isnan(silhouette(x, np.zeros(len(x))))


def test_kmeans_finds_well_separated_labels():
    x, labels = clustered(600, 16, 4, 0.05, seed=8)
    result = kmeans_agreement(x, labels)
    assert result["nmi"] == pytest.approx(1.0) and result["ari"] == pytest.approx(1.0)


def test_missing_labels_are_refused():
    with pytest.raises(CompareError, match="missing"):
        knn_classification(np.array([[1], [0]]), np.array(["a", None], dtype=object))


# Disagreement, hubness, maps


def test_jaccard_disagreement_is_zero_for_identical_spaces():
    x, _ = clustered(300, 16, 3, 1.0, seed=9)
    rotated = x @ ortho_group.rvs(16, random_state=10)
    np.testing.assert_allclose(neighbour_disagreement(x, rotated, k=10), 0.0, atol=1e-12)
    other = np.random.default_rng(11).standard_normal((300, 16))
    assert neighbour_disagreement(x, other, k=10).mean() > 0.8


def test_jaccard_of_known_lists():
    a = np.array([[0, 1, 2], [3, -1, -1], [-1, -1, -1]])
    b = np.array([[1, 2, 3], [4, -1, -1], [-1, -1, -1]])
    np.testing.assert_allclose(jaccard(a, b), [0.5, 0.0, 1.0])


def test_hubness_is_zero_on_a_ring_and_positive_with_a_hub():
    ring = angles(np.arange(0, 360, 10))
    assert hubness(knn(ring, k=2)[0]) == 0.0
    # The axis of a cone is closer to every point of its rim than they are to each other.
    cone = np.array([[1, 0, 1], [0, 1, 1], [-1, 0, 1], [0, -1, 1], [0, 0, 1]], dtype=float)
    idx, _ = knn(cone, k=1)
    np.testing.assert_array_equal(idx[:4, 0], [4, 4, 4, 4])
    assert hubness(idx) > 1.0


def test_procrustes_recovers_a_rotated_reflected_scaled_shifted_map():
    rng = np.random.default_rng(12)
    target = rng.standard_normal((200, 2))
    turn = np.radians(37.0)
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]]) @ np.diag([1.0, -1.0])
    source = 2.5 * target @ rotation + np.array([10.0, -4.0])
    np.testing.assert_allclose(procrustes_align(source, target), target, atol=1e-10)


def test_trustworthiness_is_sklearns_on_the_sample():
    from sklearn.manifold import trustworthiness as sk_trustworthiness

    x, _ = clustered(400, 10, 4, 1.0, seed=13)
    xy = x[:, :2]
    assert trustworthiness(x, xy, k=5) == pytest.approx(sk_trustworthiness(x, xy, n_neighbors=5, metric="cosine"))
    sampled = trustworthiness(x, xy, k=5, max_points=100, seed=3)
    assert sampled == trustworthiness(x, xy, k=5, max_points=100, seed=3)
    assert 0.0 <= sampled <= 1.0


# The table


def test_metrics_table_shape_and_known_values():
    x, labels = clustered(300, 32, 3, 0.5, seed=14)
    noise = np.random.default_rng(15).standard_normal((300, 20))
    spaces = {"a": x, "a-rotated": x @ ortho_group.rvs(32, random_state=16), "noise": noise}
    track = np.arange(300) // 3
    table = metrics_table(spaces, labels=labels, groups=track, k=5, maps={"a": x[:, :2]})
    assert list(table["a"]) == ["knn_acc_k1", "knn_acc_k5", "macro_f1", "silhouette", "nmi", "ari", "hubness",
                                "trustworthiness", "chance", "majority", "per_class", "ci95", "confusion"]
    assert table["a"]["knn_acc_k5"] > 0.95 and table["noise"]["knn_acc_k5"] < 0.6
    shares = np.bincount(labels) / len(labels)
    assert table["noise"]["chance"] == pytest.approx(np.sum(shares ** 2))
    assert table["noise"]["majority"] == pytest.approx(shares.max())
    assert set(table["a"]["per_class"]) == {"0", "1", "2"} and min(table["a"]["per_class"].values()) > 0.9
    for name in ("a", "noise"):
        for metric in ("knn_acc_k1", "knn_acc_k5", "macro_f1"):
            low, high = table[name]["ci95"][metric]
            assert low <= table[name][metric] <= high
    low, high = table["noise"]["ci95"]["knn_acc_k5"]
    assert low < table["noise"]["chance"] + 0.15 and high - low < 0.2
    assert np.sum(table["a"]["confusion"]["counts"]) == 300
    assert table["info"]["resampled"] == "items" and table["info"]["n_resamples"] == 1000
    assert table["pairs"]["a|a-rotated"] == pytest.approx({"cka": 1.0, "jaccard_at_k": 1.0})
    assert abs(table["pairs"]["a|noise"]["cka"]) < 0.1
    assert table["info"]["sampled"] is None and table["info"]["groups_excluded"]
    assert {"knn_acc", "macro_f1", "silhouette", "nmi", "ari", "hubness", "trustworthiness", "cka",
            "jaccard_at_k"} <= set(EXPLANATIONS)


def test_metrics_table_samples_large_collections_and_says_so():
    x, labels = clustered(500, 8, 3, 1.0, seed=17)
    table = metrics_table({"a": x, "b": x[:, ::-1]}, max_points=200)
    assert table["info"] == {"n": 500, "sampled": 200, "k": 10, "seed": 0, "groups_excluded": False,
                             "trustworthiness_points": None}
    assert set(table["a"]) == {"hubness"}


def test_metrics_table_refuses_spaces_of_different_items():
    with pytest.raises(CompareError, match="same segments"):
        metrics_table({"a": np.ones((10, 3)), "b": np.ones((9, 3))})


# Certainty: bootstrap intervals, per-label accuracy, chance


def test_bootstrap_interval_of_a_mean_matches_the_normal_approximation():
    rng = np.random.default_rng(5)
    x = rng.normal(2.0, 1.0, 2_000)
    low, high = compare.bootstrap_ci(lambda w: (w @ x) / w.sum(axis=1), len(x))
    half = 1.96 * x.std() / np.sqrt(len(x))
    assert low == pytest.approx(x.mean() - half, abs=0.25 * half)
    assert high == pytest.approx(x.mean() + half, abs=0.25 * half)
    again = compare.bootstrap_ci(lambda w: (w @ x) / w.sum(axis=1), len(x))
    assert np.array_equal(again, [low, high])  # seed 0: the same resamples every time


def test_bootstrap_by_group_draws_whole_groups_and_widens_for_correlated_items():
    rng = np.random.default_rng(6)
    groups = np.repeat(np.arange(20), 50)  # 20 sources of 50 near-identical slices each
    x = np.repeat(rng.normal(0, 1, 20), 50) + rng.normal(0, 0.01, 1_000)
    seen = []

    def mean(w):
        seen.append(w)
        return (w @ x) / w.sum(axis=1)

    by_item = compare.bootstrap_ci(mean, len(x))
    by_group = compare.bootstrap_ci(mean, len(x), groups=groups)
    weights = seen[-1]
    assert weights.shape[1] == 1_000 and np.all(weights.sum(axis=1) == 1_000)
    for row in weights[:50]:  # every slice of a source is drawn as often as the others
        assert np.all(row.reshape(20, 50).std(axis=1) == 0)
    assert (by_group[1] - by_group[0]) > 4 * (by_item[1] - by_item[0])


def test_bootstrap_of_several_statistics_and_nan_resamples():
    x = np.arange(10, dtype=float)
    interval = compare.bootstrap_ci(lambda w: np.stack([(w @ x) / 10, np.full(len(w), np.nan)], axis=1), 10,
                                    n_resamples=200)
    assert interval.shape == (2, 2) and interval[0, 0] < 4.5 < interval[0, 1] and np.isnan(interval[1]).all()
    with pytest.raises(CompareError, match="bootstrap"):
        compare.bootstrap_ci(lambda w: w.sum(axis=1), 0)


def test_weighted_classification_scores_are_sklearns():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(7)
    truth = rng.integers(0, 5, 300)
    predicted = np.where(rng.random(300) < 0.6, truth, rng.integers(-1, 5, 300))
    weights = rng.integers(0, 3, (4, 300)).astype(np.float32)
    weights[0] = 1
    weights[1, truth == 2] = 0  # a label absent from a resample leaves its macro average
    scores = compare.classification_scores(weights, truth, predicted, 5)
    for w, (accuracy, macro) in zip(weights, scores):
        present = np.unique(truth[w > 0])
        assert accuracy == pytest.approx(np.average(predicted == truth, weights=w))
        assert macro == pytest.approx(f1_score(truth, predicted, labels=present, average="macro", zero_division=0,
                                               sample_weight=w))


def test_label_report_gives_per_class_accuracy_chance_and_confusion():
    labels = np.array(["a"] * 6 + ["b"] * 3 + ["c"], dtype=object)
    predictions = np.array(["a"] * 4 + ["b", None] + ["b", "b", "a"] + ["c"], dtype=object)
    report = compare.label_report(labels, predictions)
    assert report["per_class"] == pytest.approx({"a": 4 / 6, "b": 2 / 3, "c": 1.0})
    assert report["chance"] == pytest.approx(0.6 ** 2 + 0.3 ** 2 + 0.1 ** 2)
    assert report["majority"] == pytest.approx(0.6)
    assert report["confusion"] == {"labels": ["a", "b", "c", "(no neighbour)"],
                                   "counts": [[4, 1, 0, 1], [1, 2, 0, 0], [0, 0, 1, 0]]}
    interval = compare.classification_ci(labels, predictions)
    accuracy = np.mean(predictions == labels)
    assert interval["accuracy"][0] <= accuracy <= interval["accuracy"][1]


def test_chance_is_what_a_space_without_information_scores():
    rng = np.random.default_rng(8)
    labels = rng.choice(["dog", "rain", "bell"], size=3_000, p=[0.6, 0.3, 0.1])
    idx, _ = knn(rng.standard_normal((3_000, 16)).astype(np.float32), k=1)
    predictions = knn_classification(idx, labels, k=1)["predictions"]
    report = compare.label_report(labels, predictions)
    interval = compare.classification_ci(labels, predictions)
    assert interval["accuracy"][0] < report["chance"] < interval["accuracy"][1]
    assert report["chance"] < report["majority"]


def test_metric_rows_put_each_interval_beside_its_metric_and_confusion_is_long():
    from core.compare import confusion_frame, metric_rows

    table = {"a": {"knn_acc_k1": 0.5, "macro_f1": 0.4, "hubness": 1.0, "chance": 0.3, "majority": 0.6,
                   "per_class": {"x": 1.0}, "ci95": {"knn_acc_k1": [0.41, 0.6], "macro_f1": [0.3, 0.5]}}}
    rows = metric_rows(table, ["a"])
    assert list(rows.columns) == ["knn_acc_k1", "knn_acc_k1 95% CI", "macro_f1", "macro_f1 95% CI", "hubness"]
    assert rows.loc["a", "knn_acc_k1 95% CI"] == "[0.410, 0.600]"
    frame = confusion_frame({"labels": ["x", "y", "(no neighbour)"], "counts": [[3, 1, 0], [0, 2, 2]]})
    assert len(frame) == 6 and frame["count"].sum() == 8
    row = frame[(frame["true"] == "y") & (frame["predicted"] == "(no neighbour)")].iloc[0]
    assert row["count"] == 2 and row["share"] == 0.5


# layers, linear probe, k-occurrence


def test_cka_matrix_is_symmetric_with_ones_on_the_diagonal_and_matches_pairwise_cka():
    rng = np.random.default_rng(0)
    spaces = [rng.standard_normal((60, d)) for d in (8, 12, 5)]
    spaces.append(spaces[0] @ ortho_group.rvs(8, random_state=1) * 3.0)  # a rotated, scaled copy of the first
    other = rng.standard_normal((60, 4))
    within, against = compare.cka_matrix(spaces, [other])
    assert within.shape == (4, 4) and against.shape == (4, 1)
    np.testing.assert_allclose(np.diag(within), 1.0, atol=1e-12)
    np.testing.assert_allclose(within, within.T)
    assert within[0, 3] == pytest.approx(1.0, abs=1e-9)
    for i, j in [(0, 1), (1, 2), (2, 3)]:
        assert within[i, j] == pytest.approx(cka(spaces[i], spaces[j]), abs=1e-12)
    assert against[1, 0] == pytest.approx(cka(spaces[1], other), abs=1e-12)


def test_layer_table_gives_per_layer_accuracy_with_intervals_and_cka():
    x, labels = clustered(90, 6, 3, 0.2, seed=3)
    noise = np.random.default_rng(4).standard_normal((90, 6))
    table = compare.layer_table([noise, x], labels=labels, k=5, others={"same": x})
    assert table["knn_acc"][1] == pytest.approx(1.0) and table["knn_acc"][0] < 0.6
    for accuracy, (low, high) in zip(table["knn_acc"], table["ci95"]):
        assert low <= accuracy <= high
    assert np.asarray(table["cka"]).shape == (2, 2) and table["against"]["same"][1] == pytest.approx(1.0)
    assert table["n"] == 90 and table["sampled"] is None
    assert "knn_acc" not in compare.layer_table([noise, x])


def test_linear_probe_reads_a_separable_space_and_not_label_noise():
    x, labels = clustered(600, 16, 5, 0.3, seed=5)
    groups = np.arange(600) // 4  # four items per recording
    separable = compare.linear_probe(x, labels, groups=groups)
    assert separable["accuracy"] > 0.98 and separable["macro_f1"] > 0.98
    assert separable == {**separable, "n": 600, "of": 600, "folds": 3}
    shuffled = np.random.default_rng(6).permutation(labels)
    noisy = compare.linear_probe(x, shuffled, groups=groups)
    chance = np.sum((np.bincount(shuffled) / 600) ** 2)
    assert abs(noisy["accuracy"] - chance) < 0.08


def test_linear_probe_never_splits_a_group_samples_and_refuses_too_few_groups(monkeypatch):
    """Items of one group are copies: if a group were split, a probe would score them by memory."""
    rng = np.random.default_rng(7)
    copies = np.repeat(rng.standard_normal((30, 40)), 10, axis=0)
    labels = np.repeat(rng.integers(0, 3, 30), 10)
    groups = np.repeat(np.arange(30), 10)
    seen = []
    real_split = StratifiedGroupKFold.split

    def split(self, x, y, g):
        for train, test in real_split(self, x, y, g):
            seen.append((set(g[train]), set(g[test])))
            yield train, test

    monkeypatch.setattr(StratifiedGroupKFold, "split", split)
    grouped = compare.linear_probe(copies, labels, groups=groups)
    assert len(seen) == 3 and all(not (train & test) for train, test in seen)
    assert grouped["accuracy"] < 0.75  # random labels of 30 sources: no memory to lean on
    assert compare.linear_probe(copies, labels)["accuracy"] == pytest.approx(1.0)  # split copies are memorised
    sampled = compare.linear_probe(copies, labels, groups=groups, max_points=120)
    assert (sampled["n"], sampled["of"]) == (120, 300)
    two_labels, two_sources = np.repeat([0, 1, 0, 1], 10), np.repeat([0, 0, 1, 1], 10)
    two = compare.linear_probe(copies[:40], two_labels, groups=two_sources)  # train on one source, test on the other
    assert two["folds"] == 2 and 0.0 <= two["accuracy"] <= 1.0
    one = compare.linear_probe(copies[:20], two_labels[:20], groups=two_sources[:20])
    assert one["folds"] == 0 and np.isnan(one["accuracy"])


def test_k_occurrence_counts_each_item_among_the_others_neighbours():
    indices = np.array([[1, 2], [0, 2], [0, 1], [2, -1]])
    counts = compare.k_occurrence(indices)
    assert counts.tolist() == [2, 2, 3, 0] and counts.sum() == 7
    assert hubness(indices) == pytest.approx(float(skew(counts)))

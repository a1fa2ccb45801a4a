"""Latent-space tools: Eq. 6 linear paths, PCA fitted on training data (exact variance ratios of
constructed data, isometric projection of a plane) and spectral clustering scored by the best
one-to-one cluster → class matching (hand-computed cases, label-permutation invariance)."""

from __future__ import annotations

import numpy as np
import pytest

from latentmech.core.errors import InputError
from latentmech.ve.latent import (
    UNMATCHED,
    components_for_variance,
    cumulative_explained_variance,
    fit_pca,
    linear_path,
    matched_accuracy,
    project,
    spectral_clustering_accuracy,
)

# ---------------------------------------------------------------------------------------------
# linear paths


def test_linear_path_endpoints_and_equal_spacing() -> None:
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=256), rng.normal(size=256)
    path = linear_path(z1, z2)
    assert path.shape == (8, 256)
    np.testing.assert_array_equal(path[0], z1)
    np.testing.assert_allclose(path[-1], z2, atol=1e-14)
    steps = np.diff(path, axis=0)
    np.testing.assert_allclose(steps, np.broadcast_to((z2 - z1) / 7, steps.shape), atol=1e-14)
    # Eq. 6 term by term for n = 3 of N = 5: z1 + 2/4 (z2 − z1), the midpoint
    np.testing.assert_allclose(linear_path(z1, z2, n=5)[2], (z1 + z2) / 2, atol=1e-14)
    np.testing.assert_array_equal(linear_path(z1, z2, n=2), np.stack([z1, z1 + (z2 - z1)]))


def test_linear_path_rejects_bad_input() -> None:
    with pytest.raises(InputError, match="at least 2"):
        linear_path(np.zeros(3), np.ones(3), n=1)
    with pytest.raises(InputError, match="equal shape"):
        linear_path(np.zeros(3), np.ones(4))


# ---------------------------------------------------------------------------------------------
# PCA


def _orthonormal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(rows, cols)))
    return q


def test_pca_of_a_plane_captures_everything_in_two_components() -> None:
    rng = np.random.default_rng(1)
    basis = _orthonormal(rng, 10, 2).T  # a 2D plane in 10D, offset from the origin
    offset = rng.normal(size=10) * 5
    train = rng.normal(size=(300, 2)) @ basis + offset
    pca = fit_pca(train, n_components=5, seed=0)
    cumulative = cumulative_explained_variance(pca)
    assert cumulative[1] == pytest.approx(1.0, abs=1e-12)
    assert 0.3 < cumulative[0] < 0.7  # equal spreads: no single direction dominates
    assert components_for_variance(pca) == {0.95: 2, 0.99: 2}
    # unseen points of the plane: a rigid map, pairwise distances are kept
    new = rng.normal(size=(20, 2)) @ basis + offset
    coordinates = project(pca, new)[:, :2]
    distances = np.linalg.norm(new[:, None] - new[None], axis=-1)
    projected = np.linalg.norm(coordinates[:, None] - coordinates[None], axis=-1)
    np.testing.assert_allclose(projected, distances, atol=1e-9)
    np.testing.assert_allclose(project(pca, new)[:, 2:], 0.0, atol=1e-9)


def test_explained_variance_ratios_of_constructed_data() -> None:
    rng = np.random.default_rng(2)
    n = 400
    centred = rng.normal(size=(n, 3))
    centred -= centred.mean(axis=0)
    q, _ = np.linalg.qr(centred)  # orthonormal, zero-mean columns
    data = (q * np.array([3.0, 2.0, 1.0])) @ _orthonormal(rng, 6, 3).T + 1.5
    pca = fit_pca(data, seed=0)  # all components
    np.testing.assert_allclose(pca.explained_variance_ratio_[:3], np.array([9, 4, 1]) / 14)
    counts = components_for_variance(pca, (0.5, 0.9, 0.95, 0.99))
    assert counts == {0.5: 1, 0.9: 2, 0.95: 3, 0.99: 3}  # 9/14 = .64, 13/14 = .93
    truncated = fit_pca(data, n_components=1, seed=0)
    assert components_for_variance(truncated, (0.5, 0.9)) == {0.5: 1, 0.9: None}


def test_pca_rejects_bad_input() -> None:
    with pytest.raises(InputError, match="n_components"):
        fit_pca(np.zeros((5, 3)), n_components=4)
    pca = fit_pca(np.random.default_rng(0).normal(size=(10, 3)))
    with pytest.raises(InputError, match="fitted on 3"):
        project(pca, np.zeros((2, 4)))


# ---------------------------------------------------------------------------------------------
# cluster → class matching


def test_matched_accuracy_is_the_best_one_to_one_matching() -> None:
    # contingency [[3, 2], [3, 0]]: greedy (largest cell first) would give 3 + 0 = 3 of 8;
    # the best one-to-one matching (class a → cluster 1, class b → cluster 0) gives 2 + 3 = 5
    labels = np.array(["a", "a", "a", "a", "a", "b", "b", "b"])
    clusters = np.array([0, 0, 0, 1, 1, 0, 0, 0])
    accuracy, predicted, confusion = matched_accuracy(labels, clusters)
    assert accuracy == pytest.approx(5 / 8)
    np.testing.assert_array_equal(predicted, [1, 1, 1, 0, 0, 1, 1, 1])  # indices into (a, b)
    assert confusion.index.tolist() == ["a", "b"] and confusion.columns.tolist() == ["a", "b"]
    np.testing.assert_array_equal(confusion.to_numpy(), [[2, 3], [0, 3]])


def test_matched_accuracy_three_classes_and_leftover_cluster() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    clusters = np.array([7, 7, 5, 3, 3, 3, 5, 5, 5, 7])
    # class 0 → cluster 7 (2), class 1 → cluster 3 (3), class 2 → cluster 5 (3): 8 of 10
    result = matched_accuracy(labels, clusters)
    assert result.accuracy == pytest.approx(0.8)
    np.testing.assert_array_equal(result.predicted, [0, 0, 2, 1, 1, 1, 2, 2, 2, 0])
    np.testing.assert_array_equal(np.diag(result.confusion.to_numpy()), [2, 3, 3])
    # four clusters for two classes: the two unmatched clusters' points count as wrong
    more = matched_accuracy(np.array([0, 0, 0, 1, 1, 1]), np.array([0, 0, 2, 1, 1, 3]))
    assert more.accuracy == pytest.approx(4 / 6)
    assert more.confusion.columns.tolist() == [0, 1, UNMATCHED]
    np.testing.assert_array_equal(more.confusion[UNMATCHED].to_numpy(), [1, 1])
    np.testing.assert_array_equal(more.predicted, [0, 0, -1, 1, 1, -1])


# ---------------------------------------------------------------------------------------------
# spectral clustering


def _blobs(spread: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Four Gaussian blobs of 60 points in 3D (like the four textures in 3 PCA components)."""
    centres = np.array([[0, 0, 0], [4, 0, 0], [0, 4, 0], [0, 0, 4]], dtype=float)
    labels = np.repeat(np.arange(4), 60)
    return centres[labels] + spread * rng.normal(size=(len(labels), 3)), labels


def test_spectral_clustering_of_separated_blobs_is_perfect_for_any_labelling() -> None:
    features, labels = _blobs(0.3, np.random.default_rng(3))
    accuracy, predicted, confusion = spectral_clustering_accuracy(features, labels, seed=0)
    assert accuracy == 1.0
    np.testing.assert_array_equal(predicted, labels)
    np.testing.assert_array_equal(confusion.to_numpy(), 60 * np.eye(4, dtype=int))
    names = np.array(["goss", "brass", "cube", "copper"])[labels]  # any labels, any order
    named = spectral_clustering_accuracy(features, names, seed=0)
    assert named.accuracy == 1.0
    np.testing.assert_array_equal(named.classes[named.predicted], names)
    rbf = spectral_clustering_accuracy(features, labels, affinity="rbf", gamma=1.0, seed=0)
    assert rbf.accuracy == 1.0


def test_spectral_clustering_of_overlapping_blobs_is_worse() -> None:
    features, labels = _blobs(2.5, np.random.default_rng(4))
    result = spectral_clustering_accuracy(features, labels, seed=0)
    assert 0.3 < result.accuracy < 0.9
    assert result.confusion.to_numpy().sum() == len(labels)
    # relabelling the classes by a permutation changes nothing but the names
    permuted = np.array([2, 0, 3, 1])[labels]
    again = spectral_clustering_accuracy(features, permuted, seed=0)
    assert again.accuracy == result.accuracy
    # and the accuracy is that of the hand-checked matching of the same clusters
    clusters = result.predicted  # class indices are one relabelling of the cluster ids
    assert matched_accuracy(labels, clusters).accuracy == result.accuracy
    assert np.mean(clusters == labels) == pytest.approx(result.accuracy)


def test_spectral_clustering_rejects_bad_input() -> None:
    features, labels = _blobs(0.3, np.random.default_rng(5))
    with pytest.raises(InputError, match="one label per sample"):
        spectral_clustering_accuracy(features, labels[:-1])
    with pytest.raises(InputError, match="affinity"):
        spectral_clustering_accuracy(features, labels, affinity="cosine")
    with pytest.raises(InputError, match="n_clusters"):
        spectral_clustering_accuracy(features, labels, n_clusters=0)

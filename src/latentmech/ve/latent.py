"""Exploring the fingerprint (latent) space: linear paths, PCA and spectral clustering (§3.3).

* Linear paths (Eq. 6): N equispaced fingerprints from z₁ to z₂, to be decoded (Fig. 9, N = 8).
* PCA (§3.3.2): fitted on training fingerprints only (the paper: 20 000 sampled from the training
  set), then used to project anything else (the edge cases, Fig. 10). The paper notes that the
  variance is only fully captured by about 200 of 256 components; :func:`components_for_variance`
  says how many reach given fractions (95 %, 99 %).
* Spectral clustering (§3.3.3): the textured VEs' fingerprints reduced to three components by
  that PCA, clustered without labels, and scored by classification accuracy (paper: 96.5 % over
  four textures). The paper names neither the affinity nor how clusters become classes.

Our choices (configurable):

* Affinity ``"nearest_neighbors"`` (a symmetrised k-nearest-neighbour graph, k = 10) by default:
  it does not depend on the scale of the PCA coordinates, whereas scikit-learn's default
  ``"rbf"`` kernel with γ = 1 does (``affinity="rbf"`` and ``gamma`` are available). A graph
  that falls apart into one piece per cluster, i.e. perfectly separated classes, is what spectral
  clustering is built for, so scikit-learn's "graph is not fully connected" warning is silenced.
* Clusters become classes by the best **one-to-one** matching (Hungarian algorithm on the
  contingency table, ``scipy.optimize.linear_sum_assignment``), so accuracy is invariant to how
  the clusters happen to be numbered, and two classes can never share one cluster. With more
  clusters than classes the unmatched clusters count as wrong; with fewer, the unmatched classes.
"""

from __future__ import annotations

import warnings
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import SpectralClustering
from sklearn.decomposition import PCA

from latentmech.core.errors import InputError

#: Column of the confusion table for points in clusters no class was matched to.
UNMATCHED = "unmatched"


def linear_path(z1: np.ndarray, z2: np.ndarray, n: int = 8) -> np.ndarray:
    """Eq. 6: zₙ = z₁ + (n − 1)/(N − 1) · (z₂ − z₁), n = 1 … N, as an (N, d) array."""
    z1 = np.asarray(z1, dtype=np.float64)
    z2 = np.asarray(z2, dtype=np.float64)
    if z1.ndim != 1 or z1.shape != z2.shape:
        raise InputError(
            "linear path", "z1/z2", f"expected two fingerprints of equal shape (d,), got "
            f"{z1.shape} and {z2.shape}"
        )  # fmt: skip
    if n < 2:
        raise InputError("linear path", "n", f"expected at least 2 points (both ends), got {n}")
    t = np.arange(n, dtype=np.float64) / (n - 1)
    return z1 + t[:, None] * (z2 - z1)


# ---------------------------------------------------------------------------------------------
# PCA


def _features(x: np.ndarray, source: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise InputError(source, "shape", f"expected (samples, features), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError(source, "values", "non-finite values")
    return x


def fit_pca(train_fingerprints: np.ndarray, n_components: int | None = None, seed: int = 0) -> PCA:
    """scikit-learn PCA fitted on training fingerprints (N, d); ``None`` keeps min(N, d)."""
    x = _features(train_fingerprints, "training fingerprints")
    largest = min(x.shape)
    if n_components is not None and not 1 <= n_components <= largest:
        raise InputError(
            "PCA", "n_components",
            f"expected 1 … {largest} (min of samples and features) for data of shape {x.shape}, "
            f"got {n_components}",
        )  # fmt: skip
    return PCA(n_components=n_components, random_state=seed).fit(x)


def project(pca: PCA, x: np.ndarray) -> np.ndarray:
    """Principal-component coordinates (N, k) of fingerprints (N, d) by a fitted PCA."""
    x = _features(x, "fingerprints to project")
    if x.shape[1] != pca.n_features_in_:
        raise InputError(
            "fingerprints to project", "shape",
            f"{x.shape[1]} features, but the PCA was fitted on {pca.n_features_in_}",
        )  # fmt: skip
    return pca.transform(x)


def cumulative_explained_variance(pca: PCA) -> np.ndarray:
    """Fraction of the training data's total variance captured by the first 1, 2, … components."""
    return np.cumsum(pca.explained_variance_ratio_)


def components_for_variance(
    pca: PCA, fractions: tuple[float, ...] = (0.95, 0.99)
) -> dict[float, int | None]:
    """Fewest components capturing each fraction of the variance; None if the kept ones do not.

    The fractions are of the total variance of the training data, also for a PCA that keeps
    fewer components than the data have.
    """
    cumulative = cumulative_explained_variance(pca)
    counts: dict[float, int | None] = {}
    for fraction in fractions:
        reached = np.flatnonzero(cumulative >= fraction - 1e-12)
        counts[fraction] = int(reached[0]) + 1 if reached.size else None
    return counts


# ---------------------------------------------------------------------------------------------
# spectral clustering


class ClusteringResult(NamedTuple):
    """Accuracy of the best one-to-one cluster → class matching, per-point predictions, table.

    ``predicted`` holds indices into ``classes`` (−1: a cluster no class was matched to);
    ``confusion`` counts points by true class (rows) and predicted class (columns, plus
    ``"unmatched"`` when some cluster is left over), both labelled by the class labels.
    """

    accuracy: float
    predicted: np.ndarray
    confusion: pd.DataFrame

    @property
    def classes(self) -> np.ndarray:
        return self.confusion.index.to_numpy()


def matched_accuracy(labels: np.ndarray, clusters: np.ndarray) -> ClusteringResult:
    """Score cluster ids against class labels after the best one-to-one matching (Hungarian)."""
    labels = np.asarray(labels)
    clusters = np.asarray(clusters)
    if labels.ndim != 1 or labels.shape != clusters.shape or labels.size == 0:
        raise InputError(
            "clustering", "labels/clusters", f"expected two equal non-empty (N,) arrays, got "
            f"{labels.shape} and {clusters.shape}"
        )  # fmt: skip
    classes, class_index = np.unique(labels, return_inverse=True)
    cluster_ids, cluster_index = np.unique(clusters, return_inverse=True)
    contingency = np.zeros((len(classes), len(cluster_ids)), dtype=np.int64)
    np.add.at(contingency, (class_index, cluster_index), 1)
    rows, cols = linear_sum_assignment(contingency, maximize=True)
    cluster_to_class = np.full(len(cluster_ids), -1, dtype=np.int64)
    cluster_to_class[cols] = rows
    predicted = cluster_to_class[cluster_index]
    accuracy = float(contingency[rows, cols].sum() / labels.size)
    return ClusteringResult(accuracy, predicted, _confusion(classes, class_index, predicted))


def _confusion(classes: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> pd.DataFrame:
    """True class × predicted class counts (an ``unmatched`` column when needed)."""
    k = len(classes)
    table = np.zeros((k, k + 1), dtype=np.int64)
    np.add.at(table, (truth, np.where(predicted < 0, k, predicted)), 1)
    columns = [*classes.tolist(), UNMATCHED]
    frame = pd.DataFrame(table, index=pd.Index(classes, name="true"), columns=columns)
    frame.columns.name = "predicted"
    return frame if table[:, k].any() else frame.iloc[:, :k]


def spectral_clustering_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    n_clusters: int | None = None,
    seed: int = 0,
    affinity: Literal["nearest_neighbors", "rbf"] = "nearest_neighbors",
    n_neighbors: int = 10,
    gamma: float = 1.0,
) -> ClusteringResult:
    """Spectral clustering of ``features`` (N, k), scored against ``labels`` (N,).

    ``n_clusters`` defaults to the number of distinct labels. Unpacks as
    ``(accuracy, predicted, confusion)``; see :class:`ClusteringResult` and the module docstring.
    """
    x = _features(features, "clustering features")
    labels = np.asarray(labels)
    if labels.shape != (len(x),):
        raise InputError(
            "clustering", "labels", f"expected one label per sample ({len(x)},), got {labels.shape}"
        )
    if affinity not in ("nearest_neighbors", "rbf"):
        raise InputError(
            "clustering", "affinity", f"expected nearest_neighbors or rbf, got {affinity!r}"
        )
    k = len(np.unique(labels)) if n_clusters is None else n_clusters
    if not 1 <= k < len(x):
        raise InputError("clustering", "n_clusters", f"expected 1 … {len(x) - 1}, got {k}")
    model = SpectralClustering(
        n_clusters=k, affinity=affinity, n_neighbors=min(n_neighbors, len(x) - 1), gamma=gamma,
        random_state=seed, assign_labels="kmeans",
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        clusters = model.fit_predict(x)
    return matched_accuracy(labels, clusters)

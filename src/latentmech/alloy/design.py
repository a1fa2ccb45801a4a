"""Algorithm 2 of paper 003 (section 2.4, SI F): concentration fields that raise ⟨τ_p²⟩.

A trained AlloyVAE (:class:`latentmech.alloy.cvae.AlloyCVAE`, conditions c and w, target the
six stress components) predicts the residual stress σ = 𝒟(𝒞(c), 𝒲(w), z) of a concentration
field c. The resolved shear stress of the slip system b = (1, −1, 0)/√2, n = (1, 1, 1)/√3 is
(Eq. 6) τ_p = n·σ·b/|b| = (σ11 − σ22 + σ13 − σ23)/√6, with σ in GPa (inverse min–max scaling;
component order xx yy zz xy xz yz, so σ13 = xz, σ23 = yz), and ⟨τ_p²⟩ is its mean square over
the blocks of a candidate (Rida et al.: the slip resistance scales with it). Gradient descent
on c and z minimises (Eq. 8)

    f(c, z) = α / ⟨τ_p²⟩ + ξ Σ_i (c_i − c_equi)² + β ‖c̄ − c̄*‖² + γ ‖w̄ − w̄*‖²,

c̄ = 𝒞(c), w̄ = 𝒲(w) from the smoothers, c̄*, w̄* = ℰ(σ) from the encoder (the self-check),
plain steps c ← c − η ∇_c f, z ← z − η ∇_z f (paper: η = 1e-2, α = 0.1, β = γ = 50, ξ = 1,
1000 iterations, 2000 candidates). Each candidate's f depends on its own c and z only (eval
mode: batch norm uses running statistics), so all candidates run as one batch (optionally in
``chunk``-sized pieces) and the gradient of Σ_candidates f is every candidate's own gradient.

Choices where the paper is silent or approximate (each a parameter where it matters):

* **Variables.** The optimised c is the model's input: the first n_el − 1 concentrations
  (Ni, Co), min–max normalised. The last element (Cr) is 1 − Σ of the others in *physical*
  units, normalised by its own stored scaler (the paper: "c_Cr = 1 − (c_Ni + c_Co)").
  After every step the candidates are put back into ``bounds`` (default the simplex of atom
  fractions; :func:`project`), which the paper does not say.
* **Fixed w.** The paper sets every normalised WC parameter to "0.5", the approximate image of
  physical 0; we use the scalers' exact image of 0 (``wc_scaler.transform(0)``). Likewise
  c_equi is each element's exact normalised image of 1/n_el (not 0.5 for all).
* **Equiatomic term.** Σ_i over the n_el elements of (mean over blocks of the normalised c_i −
  c_equi,i)²: on the cell-mean concentration, because a per-block term would forbid the growth
  of the concentration variance the paper reports.
* **Latent initialisation.** ``method="random"``: z ~ N(0, I) per candidate (Random Latent
  Method); ``"fixed"``: the same z for every candidate, every entry ``fixed_latent`` (default
  0, the prior's mode; Fixed Latent Method). In both z is then optimised with c
  (``optimise_latent=False`` keeps it fixed).
* **Initial c.** Normal with the training set's per-entry mean and standard deviation of the
  normalised c (:func:`concentration_prior`), drawn from the seeded generator.

:func:`cluster_concentrations` projects optimised fields with Isomap to 2D and splits them
with KMeans (paper: two clusters) and gives each cluster's mean concentration per element
(SI Table 2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from latentmech.alloy.cvae import MinMax, condition_mre
from latentmech.core.errors import InputError

SOURCE = "design settings"
METHODS = ("random", "fixed")
#: Where the optimised concentrations may go (see :func:`project`).
BOUNDS = ("training", "physical", "none")
#: Slip direction and plane normal of Eq. 6.
BURGERS = np.array([1.0, -1.0, 0.0]) / math.sqrt(2.0)
NORMAL = np.array([1.0, 1.0, 1.0]) / math.sqrt(3.0)
#: Index of each Voigt-ordered component (xx yy zz xy xz yz) in the symmetric 3 × 3 tensor.
VOIGT = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
TERMS = ("total", "tau_term", "equiatomic", "c_check", "w_check", "tau2", "mre_c", "mre_w")


# ---------------------------------------------------------------------------------------------
# resolved shear stress


def resolved_shear_stress(stress: Any, axis: int = 1) -> Any:
    """Eq. 6: τ_p = (σxx − σyy + σxz − σyz)/√6 from Voigt-ordered components along ``axis``."""
    if stress.shape[axis] != 6:
        raise InputError("resolved shear stress", f"axis {axis}",
                         f"6 components xx yy zz xy xz yz, got shape {tuple(stress.shape)}")  # fmt: skip
    take = (lambda i: stress.select(axis, i)) if torch.is_tensor(stress) else (
        lambda i: np.take(stress, i, axis=axis))  # fmt: skip
    return (take(0) - take(1) + take(4) - take(5)) / math.sqrt(6.0)


def mean_square_shear(stress: Any) -> Any:
    """⟨τ_p²⟩ per candidate: the mean over blocks of τ_p² of (B, 6, r, r, r) stress (GPa²)."""
    tau = resolved_shear_stress(stress, axis=1)
    flat = tau.reshape(tau.shape[0], -1)
    return (flat**2).mean(dim=1) if torch.is_tensor(flat) else np.mean(flat**2, axis=1)


# ---------------------------------------------------------------------------------------------
# settings and the fixed parts of the problem


@dataclass(frozen=True)
class DesignSettings:
    """Hyperparameters of Algorithm 2 (defaults: the paper's) and of the cluster analysis."""

    iterations: int = 1000
    candidates: int = 2000
    lr: float = 1e-2
    alpha: float = 0.1
    beta: float = 50.0
    gamma: float = 50.0
    xi: float = 1.0
    method: str = "random"
    fixed_latent: float = 0.0
    optimise_latent: bool = True
    seed: int = 0
    history_every: int = 10
    keep_fields: int = 3
    chunk: int | None = None
    concentration: str = "c"
    wc: str = "w"
    n_clusters: int = 2
    isomap_neighbors: int = 10
    bounds: str = "physical"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(SOURCE, "method", f"one of {list(METHODS)}, got {self.method!r}")
        if self.bounds not in BOUNDS:
            raise InputError(SOURCE, "bounds", f"one of {list(BOUNDS)}, got {self.bounds!r}")
        for key in ("iterations", "candidates", "history_every", "n_clusters", "isomap_neighbors"):
            value = getattr(self, key)
            minimum = 0 if key == "iterations" else 1
            if isinstance(value, bool) or int(value) != value or value < minimum:
                raise InputError(SOURCE, key, f"an integer ≥ {minimum}, got {value!r}")
        if self.chunk is not None and (int(self.chunk) != self.chunk or self.chunk < 1):
            raise InputError(SOURCE, "chunk", f"a positive integer or null, got {self.chunk!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = SOURCE) -> DesignSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(source, ", ".join(unknown),
                             f"unknown design setting(s); known: {sorted(known)}")  # fmt: skip
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class DesignProblem:
    """The scalers and fixed vectors the objective needs (built by :func:`design_problem`)."""

    concentration_scaler: MinMax  # all n_el elements
    stress_scaler: MinMax
    c_equi: torch.Tensor  # (n_el,) normalised image of 1/n_el per element
    w_bar: torch.Tensor  # (1, condition_dim) 𝒲(w) of the fixed w
    concentration: str = "c"
    wc: str = "w"
    weights: dict[str, float] = field(default_factory=dict)  # alpha, xi, beta, gamma


def design_problem(
    model: nn.Module, concentration_scaler: MinMax, wc_scaler: MinMax, stress_scaler: MinMax,
    settings: DesignSettings = DesignSettings(),
) -> DesignProblem:  # fmt: skip
    """Check that model and scalers fit together; fix c_equi and w̄ = 𝒲(image of physical 0)."""
    config = model.config
    c, w = settings.concentration, settings.wc
    if set(config.condition_names) != {c, w}:
        raise InputError(SOURCE, "concentration/wc", f"a model conditioned on exactly {c!r} and "
                         f"{w!r}; this one has {list(config.condition_names)}")  # fmt: skip
    channels = config.condition_channels
    expected = {"concentration scaler": (concentration_scaler, channels[c] + 1),
                "wc scaler": (wc_scaler, channels[w]),
                "stress scaler": (stress_scaler, 6)}  # fmt: skip
    for name, (scaler, n) in expected.items():
        if scaler.channels != n:
            raise InputError(SOURCE, name, f"{n} channels for this model, got {scaler.channels}")
    if config.target_channels != 6:
        raise InputError(
            SOURCE, "model target", f"6 stress components, got {config.target_channels}"
        )
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype
    n_el = concentration_scaler.channels
    c_equi = concentration_scaler.transform(torch.full((n_el,), 1.0 / n_el, dtype=dtype), axis=0)
    r = config.blocks
    w_field = wc_scaler.transform(torch.zeros(channels[w], dtype=dtype), axis=0)
    w_field = w_field.view(1, -1, 1, 1, 1).expand(1, -1, r, r, r).to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            w_bar = model.smooth({w: w_field})[w]
    finally:
        model.train(was_training)
    weights = {"alpha": settings.alpha, "xi": settings.xi, "beta": settings.beta,
               "gamma": settings.gamma}  # fmt: skip
    return DesignProblem(concentration_scaler, stress_scaler, c_equi.to(device), w_bar, c, w,
                         weights)  # fmt: skip


def full_concentration(c: torch.Tensor, scaler: MinMax) -> tuple[torch.Tensor, torch.Tensor]:
    """(physical, normalised) concentration of all n_el elements from the n_el − 1 normalised
    independent ones (B, n_el − 1, r, r, r): the last is 1 − Σ of the others, physically."""
    n_el = scaler.channels
    physical = scaler.select(range(n_el - 1)).inverse(c, axis=1)
    last = 1.0 - physical.sum(dim=1, keepdim=True)
    physical = torch.cat([physical, last], dim=1)
    return physical, scaler.transform(physical, axis=1)


def equiatomic_term(c: torch.Tensor, scaler: MinMax, c_equi: torch.Tensor) -> torch.Tensor:
    """Σ_i (cell mean of the normalised c_i − c_equi,i)² per candidate (B,), unweighted."""
    _, normalised = full_concentration(c, scaler)
    means = normalised.flatten(2).mean(dim=2)
    return ((means - c_equi.to(means)) ** 2).sum(dim=1)


def objective_terms(
    model: nn.Module, c: torch.Tensor, z: torch.Tensor, problem: DesignProblem
) -> dict[str, torch.Tensor]:
    """Eq. 8 per candidate (B,) and its parts, for normalised c (B, n_el − 1, r, r, r), z.

    ``total`` = ``tau_term`` + ``equiatomic`` + ``c_check`` + ``w_check`` (each weighted),
    plus ``tau2`` (⟨τ_p²⟩, GPa²), ``mre_c``, ``mre_w`` (self-check MREs of c̄*, w̄* against
    c̄, w̄) and ``stress`` (B, 6, r, r, r) in GPa.
    """
    name_c, name_w = problem.concentration, problem.wc
    weights = problem.weights
    c_bar = model.smooth({name_c: c})[name_c]
    w_bar = problem.w_bar.expand(c.shape[0], -1)
    sigma = model.decode(z, {name_c: c_bar, name_w: w_bar})
    again = model.encode_conditions(sigma)
    stress = problem.stress_scaler.inverse(sigma, axis=1)
    tau2 = mean_square_shear(stress)
    terms = {
        "tau_term": weights["alpha"] / tau2,
        "equiatomic": weights["xi"]
        * equiatomic_term(c, problem.concentration_scaler, problem.c_equi),
        "c_check": weights["beta"] * ((c_bar - again[name_c]) ** 2).sum(dim=1),
        "w_check": weights["gamma"] * ((w_bar - again[name_w]) ** 2).sum(dim=1),
    }
    total = terms["tau_term"] + terms["equiatomic"] + terms["c_check"] + terms["w_check"]
    return {"total": total, **terms, "tau2": tau2,
            "mre_c": condition_mre(again[name_c], c_bar),
            "mre_w": condition_mre(again[name_w], w_bar), "stress": stress}  # fmt: skip


def concentration_prior(c_train: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-entry mean and standard deviation over the training samples of normalised c
    (N, n_el − 1, r, r, r): the initial distribution of Algorithm 2's candidates."""
    data = np.asarray(c_train, dtype=np.float64)
    if data.ndim != 5 or data.shape[0] < 2:
        raise InputError("concentration prior", "c_train",
                         f"(N ≥ 2, channels, r, r, r) training fields, got {data.shape}")  # fmt: skip
    return data.mean(axis=0), data.std(axis=0, ddof=1)


# ---------------------------------------------------------------------------------------------
# Algorithm 2


@dataclass
class DesignResult:
    """Optimised candidates of Algorithm 2 (numpy), with before/after statistics and history.

    ``concentration`` / ``initial_concentration`` (B, n_el, r, r, r) physical atom fractions
    (all elements); ``normalised`` / ``initial_normalised`` (B, n_el − 1, r, r, r) the
    optimised variables; ``latent`` / ``initial_latent`` (B, latent); ``stress`` (B, 6, r, r,
    r) GPa at the end; ``tau2_before``/``tau2_after`` ⟨τ_p²⟩ (GPa²); ``mre`` the final
    self-check MREs (``"c"``, ``"w"``: (B,)); ``variance_before``/``variance_after`` (B, n_el)
    the variance over blocks of each element's physical concentration; ``history``: per
    recorded iteration (``history["iteration"]``) each term of :data:`TERMS` (n_hist, B) and
    ``fields`` (n_hist, keep_fields, n_el, r, r, r) the physical concentrations of the first
    candidates.
    """

    concentration: np.ndarray
    initial_concentration: np.ndarray
    normalised: np.ndarray
    initial_normalised: np.ndarray
    latent: np.ndarray
    initial_latent: np.ndarray
    stress: np.ndarray
    tau2_before: np.ndarray
    tau2_after: np.ndarray
    mre: dict[str, np.ndarray]
    variance_before: np.ndarray
    variance_after: np.ndarray
    history: dict[str, np.ndarray]

    def summary(self) -> dict[str, float]:
        """Means over candidates, for a table row."""
        return {
            "candidates": int(self.tau2_after.shape[0]),
            "tau2_before": float(self.tau2_before.mean()),
            "tau2_after": float(self.tau2_after.mean()),
            "mre_c": float(self.mre["c"].mean()),
            "mre_w": float(self.mre["w"].mean()),
            "max_mre": float(max(self.mre["c"].max(), self.mre["w"].max())),
            "variance_before": float(self.variance_before.mean()),
            "variance_after": float(self.variance_after.mean()),
            "objective_before": float(self.history["total"][0].mean()),
            "objective_after": float(self.history["total"][-1].mean()),
        }


def _initial_state(
    model: nn.Module, init_mean: Any, init_std: Any, settings: DesignSettings,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    config = model.config
    r = config.blocks
    shape = (config.condition_channels[settings.concentration], r, r, r)
    mean = torch.as_tensor(np.asarray(init_mean, dtype=np.float64))
    std = torch.as_tensor(np.asarray(init_std, dtype=np.float64))
    for name, value in (("init_mean", mean), ("init_std", std)):
        if tuple(value.shape) != shape:
            raise InputError(SOURCE, name, f"shape {shape} (normalised c per entry), got "
                             f"{tuple(value.shape)}")  # fmt: skip
    b = settings.candidates
    noise = torch.randn((b, *shape), generator=generator, dtype=torch.float32)
    c = mean.float() + std.float() * noise
    if settings.method == "random":
        z = torch.randn((b, config.latent_dim), generator=generator, dtype=torch.float32)
    else:
        z = torch.full((b, config.latent_dim), float(settings.fixed_latent))
    parameter = next(model.parameters())
    return c.to(parameter.device, parameter.dtype), z.to(parameter.device, parameter.dtype)


def project(c: torch.Tensor, problem: DesignProblem, bounds: str) -> torch.Tensor:
    """The normalised independent concentrations moved back into their allowed region.

    ``"training"``: each within its training range (normalised [0, 1]), where the model has
    seen data; ``"physical"``: atom fractions in [0, 1] whose sum is at most 1 (a clipped,
    then rescaled point of the simplex); ``"none"``: unconstrained, as Algorithm 2 is written.
    A choice (the paper is silent): unconstrained steps on the demo's model leave the simplex
    (fractions from −1.4 to 2.4 after 200 iterations), where the smoothers' sigmoids saturate and
    the self-check terms stop guarding the candidates.
    """
    if bounds == "none":
        return c
    if bounds == "training":
        return c.clamp(0.0, 1.0)
    scaler = problem.concentration_scaler.select(range(problem.concentration_scaler.channels - 1))
    physical = scaler.inverse(c, axis=1).clamp(0.0, 1.0)
    total = physical.sum(dim=1, keepdim=True)
    physical = torch.where(total > 1.0, physical / total, physical)
    return scaler.transform(physical, axis=1).to(c.dtype)


def _history_iterations(settings: DesignSettings) -> list[int]:
    n = settings.iterations
    return sorted({0, n, *range(0, n, settings.history_every)})


def _step(model: nn.Module, c: torch.Tensor, z: torch.Tensor, problem: DesignProblem,
          settings: DesignSettings, record: bool) -> dict[str, torch.Tensor]:  # fmt: skip
    """One gradient step of every candidate, in place; the terms at the point before the step."""
    chunk = settings.chunk or c.shape[0]
    parts: list[dict[str, torch.Tensor]] = []
    for start in range(0, c.shape[0], chunk):
        c_part = c[start : start + chunk].detach().requires_grad_(True)
        z_part = z[start : start + chunk].detach().requires_grad_(settings.optimise_latent)
        terms = objective_terms(model, c_part, z_part, problem)
        inputs = [c_part, z_part] if settings.optimise_latent else [c_part]
        grads = torch.autograd.grad(terms["total"].sum(), inputs)
        with torch.no_grad():
            c[start : start + chunk] -= settings.lr * grads[0]
            c[start : start + chunk] = project(c[start : start + chunk], problem, settings.bounds)
            if settings.optimise_latent:
                z[start : start + chunk] -= settings.lr * grads[1]
        if record:
            parts.append({k: v.detach() for k, v in terms.items() if k != "stress"})
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]} if record else {}


def _evaluate(model: nn.Module, c: torch.Tensor, z: torch.Tensor, problem: DesignProblem,
              settings: DesignSettings) -> dict[str, torch.Tensor]:  # fmt: skip
    chunk = settings.chunk or c.shape[0]
    with torch.no_grad():
        parts = [objective_terms(model, c[s : s + chunk], z[s : s + chunk], problem)
                 for s in range(0, c.shape[0], chunk)]  # fmt: skip
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def inverse_design(
    model: nn.Module, concentration_scaler: MinMax, wc_scaler: MinMax, stress_scaler: MinMax,
    init_mean: Any, init_std: Any, settings: DesignSettings = DesignSettings(),
    generator: torch.Generator | None = None,
) -> DesignResult:  # fmt: skip
    """Algorithm 2 for ``settings.candidates`` candidates at once (see the module docstring).

    ``init_mean``/``init_std`` (n_el − 1, r, r, r): normalised-c statistics of the training set
    (:func:`concentration_prior`); the scalers are the dataset's (concentration with all n_el
    elements). ``generator`` (CPU) or ``settings.seed`` fixes the initial draws.
    """
    problem = design_problem(model, concentration_scaler, wc_scaler, stress_scaler, settings)
    gen = generator if generator is not None else torch.Generator().manual_seed(settings.seed)
    c, z = _initial_state(model, init_mean, init_std, settings, gen)
    c = project(c, problem, settings.bounds)  # every candidate evaluated lies in the region
    c0, z0 = c.clone(), z.clone()
    recorded = _history_iterations(settings)
    history: dict[str, list] = {k: [] for k in (*TERMS, "fields")}
    keep = min(settings.keep_fields, c.shape[0])
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            for t in range(settings.iterations):
                record = t in recorded
                at = c[:keep].clone() if record else None
                terms = _step(model, c, z, problem, settings, record=record)
                if record:
                    _record(history, terms, at, problem)
        final = _evaluate(model, c, z, problem, settings)
        _record(history, final, c[:keep], problem)
        start = history["tau2"][0]
    finally:
        model.train(was_training)
    return _result(c, c0, z, z0, final, start, history, recorded, problem)


def _record(history: dict[str, list], terms: dict[str, torch.Tensor], at: torch.Tensor,
            problem: DesignProblem) -> None:  # fmt: skip
    """Append the terms of one recorded iteration and the kept candidates' fields ``at`` it."""
    for key in TERMS:
        history[key].append(terms[key].detach().cpu().double().numpy())
    with torch.no_grad():
        physical, _ = full_concentration(at.detach(), problem.concentration_scaler)
    history["fields"].append(physical.cpu().double().numpy())


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().double().numpy()


def _variance(physical: torch.Tensor) -> np.ndarray:
    return _numpy(physical.flatten(2).var(dim=2, unbiased=False))


def _result(c: torch.Tensor, c0: torch.Tensor, z: torch.Tensor, z0: torch.Tensor,
            final: dict[str, torch.Tensor], start: np.ndarray, history: dict[str, list],
            recorded: list[int], problem: DesignProblem) -> DesignResult:  # fmt: skip
    scaler = problem.concentration_scaler
    with torch.no_grad():
        after, _ = full_concentration(c, scaler)
        before, _ = full_concentration(c0, scaler)
    arrays = {k: np.stack(v) for k, v in history.items()}
    arrays["iteration"] = np.asarray(recorded[: len(arrays["total"])], dtype=np.int64)
    return DesignResult(
        concentration=_numpy(after), initial_concentration=_numpy(before),
        normalised=_numpy(c), initial_normalised=_numpy(c0),
        latent=_numpy(z), initial_latent=_numpy(z0), stress=_numpy(final["stress"]),
        tau2_before=np.asarray(start), tau2_after=_numpy(final["tau2"]),
        mre={"c": _numpy(final["mre_c"]), "w": _numpy(final["mre_w"])},
        variance_before=_variance(before), variance_after=_variance(after), history=arrays,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Isomap and clusters (Fig. 7, SI Table 2)


@dataclass
class Clusters:
    """Isomap embedding (B, 2), KMeans labels (B,), per-cluster mean of each element (k, n_el)
    over its candidates and blocks, and cluster sizes (k,). Clusters are ordered by their mean
    of the first element, highest first, so labels do not depend on KMeans' numbering."""

    embedding: np.ndarray
    labels: np.ndarray
    means: np.ndarray
    sizes: np.ndarray


def cluster_concentrations(
    concentration: Any, n_clusters: int = 2, n_neighbors: int = 10, seed: int = 0
) -> Clusters:
    """Isomap (scikit-learn) of the flattened fields (B, n_el, r, r, r) to 2D, KMeans on the
    embedding (the paper's clusters are those of its Isomap plot), cluster means per element."""
    from sklearn.cluster import KMeans
    from sklearn.manifold import Isomap

    data = np.asarray(concentration, dtype=np.float64)
    if data.ndim != 5 or data.shape[0] <= max(n_clusters, 2):
        raise InputError("cluster concentrations", "concentration",
                         f"(B > {max(n_clusters, 2)}, n_el, r, r, r) fields, got {data.shape}")  # fmt: skip
    flat = data.reshape(data.shape[0], -1)
    neighbors = min(n_neighbors, data.shape[0] - 1)
    embedding = Isomap(n_neighbors=neighbors, n_components=2).fit_transform(flat)
    labels = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(embedding)
    per_candidate = data.reshape(data.shape[0], data.shape[1], -1).mean(axis=2)  # (B, n_el)
    means = np.stack([per_candidate[labels == k].mean(axis=0) for k in range(n_clusters)])
    order = np.argsort(-means[:, 0], kind="stable")
    relabel = np.empty_like(order)
    relabel[order] = np.arange(n_clusters)
    labels = relabel[labels]
    sizes = np.bincount(labels, minlength=n_clusters)
    return Clusters(embedding, labels, means[order], sizes)

"""Algorithm 1 of paper 003 (section 2.1.2): residual-stress predictions with a self-check.

For each input (condition fields c, w, … of one sample) the smoothers give the reference
vectors c̄ = 𝒞(c), w̄ = 𝒲(w). Latent vectors z ~ N(0, I) are drawn one after the other; each
gives a prediction σ = 𝒟(z, c̄, w̄), which the encoder maps back to c̄*, w̄*. The prediction is
*accepted* when every condition group's MRE(ḡ*, ḡ) = mean over the vector of |ḡ* − ḡ| / |ḡ|
is ≤ k. The paper draws at most N = 500 latents, wants N_g = 3 accepted predictions and takes
k = 4 %.

Batched: :func:`self_checked_predictions` runs every input and ``chunk`` draws per input in one
pass of the decoder and encoder (on the model's device, no gradients, eval mode so batch norm
uses its running statistics and rows are independent); inputs that have their ``n_accept``
predictions drop out of later chunks. The draws are fixed up front: input b's n-th draw is
``z[b, n]`` of one ``torch.randn((B, N, latent))`` from the generator (CPU, float32), so the
result depends on the seed only, not on ``chunk`` or the device, and equals the literal
per-input loop :func:`self_checked_loop` (tested). The z of all draws take B·N·latent floats
(600 kB per input at the paper's N = 500, latent = 300).

*Stopping*: the paper's loop checks ``n > N_g`` after incrementing, i.e. it stops after
N_g + 1 acceptances; we stop at n = N_g (the N_g realisations asked for). ``stop_early=False``
makes every input use all N draws (keeping the first ``n_accept`` accepted ones), which gives
the acceptance rate over the N draws rather than over the draws needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from latentmech.alloy.cvae import condition_mre
from latentmech.core.errors import InputError

#: Default upper bound of rows (inputs × draws) in one pass of the networks.
MAX_ROWS = 4096


@dataclass
class SelfCheckResult:
    """Outcome of Algorithm 1 for B inputs; predictions in the model's (min–max scaled) units.

    Per input b and slot s < ``n_accept`` (in draw order): ``predictions[b, s]`` (C, r, r, r),
    its latent ``latents[b, s]``, the draw it came from ``draw_index[b, s]`` (0-based), the
    encoder's reproduced condition vectors ``reproduced[name][b, s]`` and their
    ``mre[name][b, s]``; ``valid[b, s]`` is False (and the entries NaN / −1) when fewer than
    ``n_accept`` draws passed. ``smoothed[name][b]`` are the smoothers' reference vectors,
    ``attempts[b]`` the draws made and ``accepted[b]`` how many of them passed.
    """

    predictions: torch.Tensor
    valid: torch.Tensor
    latents: torch.Tensor
    draw_index: torch.Tensor
    reproduced: dict[str, torch.Tensor]
    mre: dict[str, torch.Tensor]
    smoothed: dict[str, torch.Tensor]
    attempts: torch.Tensor
    accepted: torch.Tensor
    n_max: int
    n_accept: int
    k: float

    @property
    def acceptance_rate(self) -> float:
        """Accepted / attempted over all inputs' draws (all N of them if not stopping early)."""
        return float(self.accepted.sum()) / max(1, int(self.attempts.sum()))

    @property
    def reached_fraction(self) -> float:
        """Fraction of inputs that found their ``n_accept`` predictions within N draws."""
        return float((self.accepted >= self.n_accept).double().mean())

    def summary(self) -> dict[str, Any]:
        """Scalars for a table row."""
        return {
            "inputs": int(self.attempts.numel()),
            "n_max": self.n_max,
            "n_accept": self.n_accept,
            "k": self.k,
            "acceptance_rate": self.acceptance_rate,
            "reached_fraction": self.reached_fraction,
            "mean_attempts": float(self.attempts.double().mean()),
            "accepted": int(self.accepted.sum()),
        }


def draw_latents(n_inputs: int, n_max: int, latent_dim: int,
                 generator: torch.Generator) -> torch.Tensor:  # fmt: skip
    """The draws of Algorithm 1: ``z[b, n]`` is input b's n-th latent, (B, N, latent) float32."""
    return torch.randn((n_inputs, n_max, latent_dim), generator=generator, dtype=torch.float32)


def _check_settings(n_max: int, k: float, n_accept: int, chunk: int | None) -> None:
    for key, value in {"n_max": n_max, "n_accept": n_accept, "chunk": chunk or 1}.items():
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise InputError("self-checked sampling", key, f"a positive integer, got {value!r}")
    if not k >= 0:
        raise InputError("self-checked sampling", "k", f"a threshold ≥ 0, got {k!r}")


def _inputs(model: nn.Module, conditions: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    names = model.config.condition_names
    missing = [n for n in names if n not in conditions]
    if missing:
        raise InputError("self-checked sampling", ", ".join(missing),
                         f"missing condition field(s); the model needs {list(names)}")  # fmt: skip
    parameter = next(model.parameters())
    fields = {n: torch.as_tensor(conditions[n]).to(parameter.device, parameter.dtype)
              for n in names}  # fmt: skip
    sizes = {n: int(f.shape[0]) for n, f in fields.items()}
    if len(set(sizes.values())) != 1:
        raise InputError("self-checked sampling", "conditions",
                         f"the same number of inputs in every field, got {sizes}")  # fmt: skip
    return fields


def _generator(generator: torch.Generator | None, seed: int) -> torch.Generator:
    return generator if generator is not None else torch.Generator().manual_seed(int(seed))


def self_checked_predictions(
    model: nn.Module, conditions: Mapping[str, Any], n_max: int = 500, k: float = 0.04,
    n_accept: int = 3, chunk: int | None = None, generator: torch.Generator | None = None,
    seed: int = 0, stop_early: bool = True, max_rows: int = MAX_ROWS,
) -> SelfCheckResult:  # fmt: skip
    """Algorithm 1 for every input at once (see the module docstring).

    ``conditions`` maps the model's condition names to (B, channels, r, r, r) fields (scaled).
    ``chunk`` draws per input go through the networks together (default: as many as keep
    inputs × draws ≤ ``max_rows``). ``generator`` (CPU) or ``seed`` fixes the draws.
    """
    _check_settings(n_max, k, n_accept, chunk)
    fields = _inputs(model, conditions)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            smoothed = model.smooth(fields)
            b = next(iter(smoothed.values())).shape[0]
            z_all = draw_latents(b, n_max, model.config.latent_dim, _generator(generator, seed))
            step = chunk or max(1, max_rows // max(1, b))
            state = _State.empty(model, smoothed, b, n_accept)
            for start in range(0, n_max, step):
                rows = state.open_rows(stop_early)
                if rows.numel() == 0:
                    break
                z = z_all[rows.cpu(), start : start + step]
                state.check(model, rows, z, start, k, stop_early)
    finally:
        model.train(was_training)
    return state.result(n_max, k)


@dataclass
class _State:
    """Buffers Algorithm 1 fills chunk by chunk."""

    out: SelfCheckResult
    smoothed: dict[str, torch.Tensor]

    @classmethod
    def empty(cls, model: nn.Module, smoothed: dict[str, torch.Tensor], b: int,
              n_accept: int) -> _State:  # fmt: skip
        config = model.config
        first = next(iter(smoothed.values()))
        device, dtype = first.device, first.dtype
        r = config.blocks

        def nan(*shape: int) -> torch.Tensor:
            return torch.full(shape, float("nan"), device=device, dtype=dtype)

        out = SelfCheckResult(
            predictions=nan(b, n_accept, config.target_channels, r, r, r),
            valid=torch.zeros((b, n_accept), dtype=torch.bool, device=device),
            latents=nan(b, n_accept, config.latent_dim),
            draw_index=torch.full((b, n_accept), -1, dtype=torch.long, device=device),
            reproduced={n: nan(b, n_accept, v.shape[1]) for n, v in smoothed.items()},
            mre={n: nan(b, n_accept) for n in smoothed},
            smoothed=smoothed,
            attempts=torch.zeros(b, dtype=torch.long, device=device),
            accepted=torch.zeros(b, dtype=torch.long, device=device),
            n_max=0, n_accept=n_accept, k=0.0,
        )  # fmt: skip
        return cls(out, smoothed)

    def open_rows(self, stop_early: bool) -> torch.Tensor:
        accepted = self.out.accepted
        if not stop_early:
            return torch.arange(accepted.numel(), device=accepted.device)
        return torch.nonzero(accepted < self.out.n_accept).flatten()

    def check(self, model: nn.Module, rows: torch.Tensor, z: torch.Tensor, start: int, k: float,
              stop_early: bool) -> None:  # fmt: skip
        """Decode, re-encode and test ``m`` draws of each open input (rows a·m + j)."""
        out = self.out
        a, m = z.shape[:2]
        first = next(iter(self.smoothed.values()))
        z = z.to(first.device, first.dtype)
        given = {n: v[rows].repeat_interleave(m, dim=0) for n, v in self.smoothed.items()}
        prediction = model.decode(z.reshape(a * m, -1), given)
        again = model.encode_conditions(prediction)
        errors = {n: condition_mre(again[n], given[n]).view(a, m) for n in given}
        ok = torch.stack([e <= k for e in errors.values()]).all(dim=0)  # (a, m)
        after = out.accepted[rows][:, None] + ok.cumsum(dim=1)  # acceptances after each draw
        slot = after - 1
        take = ok & (slot < out.n_accept)
        if stop_early:  # draws after the n_accept-th acceptance are not made
            reached = after >= out.n_accept
            used = torch.where(reached.any(dim=1), reached.int().argmax(dim=1) + 1, m)
            out.accepted[rows] = torch.clamp(after[:, -1], max=out.n_accept)
        else:
            used = torch.full_like(rows, m)
            out.accepted[rows] = after[:, -1]
        out.attempts[rows] += used
        i, j = torch.nonzero(take, as_tuple=True)
        target, s = rows[i], slot[i, j]
        out.predictions[target, s] = prediction.view(a, m, *prediction.shape[1:])[i, j]
        out.latents[target, s] = z[i, j]
        out.draw_index[target, s] = start + j
        out.valid[target, s] = True
        for n in given:
            out.reproduced[n][target, s] = again[n].view(a, m, -1)[i, j]
            out.mre[n][target, s] = errors[n][i, j]

    def result(self, n_max: int, k: float) -> SelfCheckResult:
        self.out.n_max, self.out.k = n_max, float(k)
        return self.out


def self_checked_loop(
    model: nn.Module, conditions: Mapping[str, Any], n_max: int = 500, k: float = 0.04,
    n_accept: int = 3, generator: torch.Generator | None = None, seed: int = 0,
    stop_early: bool = True,
) -> list[dict[str, Any]]:  # fmt: skip
    """Algorithm 1 literally, one input and one draw at a time (the reference for tests and the
    benchmark). Same draws as :func:`self_checked_predictions`; per input a dict with
    ``predictions`` (list of (C, r, r, r)), ``draw_index``, ``mre`` (name → list), ``attempts``
    and ``accepted``.
    """
    _check_settings(n_max, k, n_accept, None)
    fields = _inputs(model, conditions)
    was_training = model.training
    model.eval()
    results: list[dict[str, Any]] = []
    try:
        with torch.no_grad():
            b = next(iter(fields.values())).shape[0]
            z_all = draw_latents(b, n_max, model.config.latent_dim, _generator(generator, seed))
            for index in range(b):  # the reference is unbatched on purpose
                one = {name: f[index : index + 1] for name, f in fields.items()}
                results.append(_loop_one(model, one, z_all[index], k, n_accept, stop_early))
    finally:
        model.train(was_training)
    return results


def _loop_one(model: nn.Module, fields: dict[str, torch.Tensor], z_all: torch.Tensor, k: float,
              n_accept: int, stop_early: bool) -> dict[str, Any]:  # fmt: skip
    smoothed = model.smooth(fields)  # c̄ = 𝒞(c), w̄ = 𝒲(w)
    first = next(iter(smoothed.values()))
    found: dict[str, Any] = {"predictions": [], "draw_index": [], "mre": {n: [] for n in smoothed},
                             "attempts": 0, "accepted": 0}  # fmt: skip
    for n, z in enumerate(z_all):
        sigma = model.decode(z[None].to(first.device, first.dtype), smoothed)
        again = model.encode_conditions(sigma)
        errors = {g: float(condition_mre(again[g], smoothed[g])[0]) for g in smoothed}
        found["attempts"] = n + 1
        if all(e <= k for e in errors.values()):
            found["accepted"] += 1
            if len(found["predictions"]) < n_accept:
                found["predictions"].append(sigma[0])
                found["draw_index"].append(n)
                for g, e in errors.items():
                    found["mre"][g].append(e)
        if stop_early and found["accepted"] >= n_accept:
            break
    return found

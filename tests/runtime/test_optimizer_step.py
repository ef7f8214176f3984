"""The backend's optimizer step: clipping folded into the fused AdamW kernel steps exactly like
clip_grad_norm_ followed by a plain step, whether or not the norm is over the limit."""

from __future__ import annotations

import copy

import pytest

pytestmark = pytest.mark.runtime


@pytest.mark.parametrize("loss_scale", [1e-3, 10.0])  # under and over max_norm
def test_folded_clipping_steps_like_clip_grad_norm(loss_scale: float) -> None:
    import torch

    from llama_runtime.backends import select_backend

    torch.manual_seed(0)
    backend = select_backend("cpu")
    ours = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.Linear(32, 4))
    reference = copy.deepcopy(ours)
    fused = torch.optim.AdamW(ours.parameters(), lr=1e-2, fused=True)
    plain = torch.optim.AdamW(reference.parameters(), lr=1e-2, foreach=False)
    x = torch.randn(16, 32)
    norms = []
    for _ in range(4):
        for model in (ours, reference):
            (model(x) ** 2).sum().mul(loss_scale).backward()
        norms.append(float(torch.nn.utils.get_total_norm([p.grad for p in reference.parameters()])))
        backend.optimizer_step(fused, list(ours.parameters()), max_norm=1.0)
        torch.nn.utils.clip_grad_norm_(list(reference.parameters()), 1.0)
        plain.step()
        for opt in (fused, plain):
            opt.zero_grad(set_to_none=True)
    assert (min(norms) > 1.0) if loss_scale > 1 else (max(norms) < 1.0), norms
    for a, b in zip(ours.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert getattr(fused, "grad_scale", None) is None  # nothing left behind for a later step

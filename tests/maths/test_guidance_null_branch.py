"""The unconditional (null) branch of classifier-free guidance, for class labels and for context sequences, and
guidance rescale at every scale through GaussianDiffusion (Ho & Salimans 2021, §3.1; Lin et al. 2024, Alg. 2).

test_guidance.py checks the arithmetic of combining two branches; these tests check the branches themselves:

* the null branch is one function of its own: it ignores the label, the context, the context's length and its
  mask; it is no class's conditional branch; and it has learned weights that no conditional call reaches (the
  null class's row, the null token), so training the dropped samples trains *it*;
* a dropped sample stays dropped for the whole training step, the self-conditioning estimate included;
* GaussianDiffusion's guided denoiser is Lin et al.'s rescaled combination of its conditional and unconditional
  predictions, written out here per sample, at s = 0, 0.5, 1, 3 and 7.5 (the s = 0 shortcut included).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from denoising_diffusion import ConditionSpec, GaussianDiffusion, Unet

SMALL = {"dim": 8, "dim_mults": (1, 2), "resnet_block_groups": 4, "attn_heads": 2, "attn_dim_head": 8}
K = 3  # classes
D = 6  # context width


def unet(**kwargs) -> Unet:
    torch.manual_seed(0)
    net = Unet(**{**SMALL, **kwargs})
    with torch.no_grad():  # a trained-looking network: zero-initialised output layers would hide the condition
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def inputs(batch: int, seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 8, 8, generator=g), torch.randint(0, 10, (batch,), generator=g)


def contexts(batch: int, length: int, seed: int) -> Tensor:
    return torch.randn(batch, length, D, generator=torch.Generator().manual_seed(seed))


def drop(batch: int, value: bool) -> Tensor:
    return torch.full((batch,), value, dtype=torch.bool)


# ----- the null class ------------------------------------------------------------------------------------------------


def test_the_null_class_ignores_the_label_and_is_no_class() -> None:
    net = unet(num_classes=K)
    x, t = inputs(K)
    with torch.no_grad():
        nulls = [net(x, t, classes=torch.full((K,), k), drop=drop(K, True)) for k in range(K)]
        conditional = [net(x, t, classes=torch.full((K,), k)) for k in range(K)]
    for k in range(1, K):
        torch.testing.assert_close(nulls[k], nulls[0], rtol=0, atol=0)  # the label of a dropped sample is unread
    for k in range(K):  # ... and the null branch is not the branch of any class
        assert float((nulls[0] - conditional[k]).abs().amax(dim=(1, 2, 3)).min()) > 1e-4, k


def exclusive_gradient(net: nn.Module, dropped: Tensor, kept: list[Tensor]) -> float:
    """The largest gradient the dropped call puts on a weight entry that none of the kept (conditional) calls
    reaches: > 0 iff the null branch has weights of its own."""

    def grads(out: Tensor) -> list[Tensor]:
        net.zero_grad()
        out.square().sum().backward()
        return [(p.grad if p.grad is not None else torch.zeros_like(p)).abs() for p in net.parameters()]

    null = grads(dropped)
    reached = [sum(parts) for parts in zip(*(grads(out) for out in kept))]
    return max(float(n[r == 0].max()) if bool((r == 0).any()) else 0.0 for n, r in zip(null, reached))


def test_the_null_class_is_a_learned_row_of_its_own() -> None:
    """Dropped samples train a weight that no label reaches (the (K+1)-th row of the class table): without it the
    unconditional branch would be some class's, or untrained."""
    net = unet(num_classes=K).train()
    x, t = inputs(2)
    dropped = net(x, t, classes=torch.tensor([0, 1]), drop=drop(2, True))
    kept = [net(x, t, classes=torch.full((2,), k)) for k in range(K)]
    assert exclusive_gradient(net, dropped, kept) > 0


# ----- the null context ----------------------------------------------------------------------------------------------


def test_the_null_context_ignores_the_context_its_length_and_its_mask() -> None:
    """The unconditional model is one function: a dropped sample's output is the same whatever context (of any
    length) and mask it came with, and it is not the output of any of those contexts."""
    net = unet(context_dim=D)
    x, t = inputs(2)
    with torch.no_grad():
        reference = net(x, t, context=contexts(2, 4, seed=2), drop=drop(2, True))
        for length, seed in ((1, 3), (4, 4), (7, 5)):
            context = contexts(2, length, seed)
            mask = torch.ones(2, length, dtype=torch.bool)
            mask[1, length // 2 :] = length == 1  # sample 1 masks its second half (none of a single token)
            for kwargs in ({}, {"context_mask": mask}):
                out = net(x, t, context=context, drop=drop(2, True), **kwargs)
                torch.testing.assert_close(out, reference, rtol=0, atol=1e-6)
                conditional = net(x, t, context=context, **kwargs)
                assert float((conditional - reference).abs().amax(dim=(1, 2, 3)).min()) > 1e-4


def test_the_null_context_is_a_learned_token_of_its_own() -> None:
    net = unet(context_dim=D).train()
    x, t = inputs(2)
    dropped = net(x, t, context=contexts(2, 3, seed=6), drop=drop(2, True))
    kept = [net(x, t, context=contexts(2, length, seed=7 + length)) for length in (1, 3, 5)]
    assert exclusive_gradient(net, dropped, kept) > 0


def test_dropping_is_per_sample_for_labels_and_contexts_together() -> None:
    """drop[b] replaces both conditions of sample b and nothing of the others."""
    net = unet(num_classes=K, context_dim=D)
    x, t = inputs(2)
    mask = torch.tensor([True, False])
    with torch.no_grad():
        a = net(x, t, classes=torch.tensor([0, 1]), context=contexts(2, 3, seed=8), drop=mask)
        b = net(x, t, classes=torch.tensor([2, 1]), context=contexts(2, 5, seed=9), drop=mask)
        c = net(x, t, classes=torch.tensor([0, 2]), context=contexts(2, 3, seed=8), drop=mask)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-6)  # sample 0 dropped: new label and context unread
    assert float((a[1] - c[1]).abs().max()) > 1e-4  # sample 1 kept: its label is read


# ----- the training step ---------------------------------------------------------------------------------------------


class SelfConditionedRecorder(nn.Module):
    """A self-conditioned class-conditional network that records, per call, which label each sample was seen with
    (−1 for the null class) and whether the call was the self-conditioning estimate (no x_self_cond)."""

    channels, self_condition, learned_variance = 3, True, False
    condition_spec = ConditionSpec(num_classes=4)
    cond_drop_prob = 0.5

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))
        self.calls: list[tuple[bool, Tensor]] = []

    def forward(self, x, t, x_self_cond=None, *, classes, drop=None):
        seen = torch.where(drop, -1, classes) if drop is not None else classes
        self.calls.append((x_self_cond is None, seen.clone()))
        return self.scale * x + 0.1 * seen.float()[:, None, None, None]


def test_a_dropped_sample_is_dropped_in_the_self_conditioning_estimate_too() -> None:
    """The estimate x̂_0 fed back to a self-conditioned network is part of the same training example: a sample
    dropped for the step must be unconditional in both calls, or its label leaks into the null branch."""
    net = SelfConditionedRecorder()
    d = GaussianDiffusion(net, image_size=4, timesteps=10)
    torch.manual_seed(3)
    for _ in range(12):
        d(torch.rand(16, 3, 4, 4), classes=torch.randint(0, 4, (16,)))
    pairs = [(net.calls[i - 1][1], seen) for i, (first, seen) in enumerate(net.calls) if not first]
    assert pairs and all(net.calls[i - 1][0] for i, (first, _) in enumerate(net.calls) if not first)
    assert sum(int((seen == -1).sum()) for _, seen in pairs) > 0
    for estimate, final in pairs:
        assert torch.equal(estimate, final)


# ----- guidance rescale at every scale, through GaussianDiffusion -----------------------------------------------------


def lin_et_al(eps_cond: Tensor, eps_uncond: Tensor, scale: float, rescale: float) -> Tensor:
    """Lin et al. 2024, Alg. 2, per sample: x_cfg = ε_∅ + s (ε_y − ε_∅), rescaled to ε_y's std, mixed by φ."""
    out = []
    for c, u in zip(eps_cond, eps_uncond):
        cfg = u + scale * (c - u)
        out.append(rescale * cfg * (c.std() / cfg.std()) + (1 - rescale) * cfg)
    return torch.stack(out)


@pytest.mark.parametrize("condition", ["classes", "context"])
@pytest.mark.parametrize("rescale", [0.0, 0.5, 1.0])
def test_the_guided_denoiser_is_the_rescaled_combination_at_every_scale(condition: str, rescale: float) -> None:
    """ε̃ of GaussianDiffusion.denoiser(guidance_scale=s, guidance_rescale=φ) is Lin et al.'s formula applied to
    the network's own conditional output and its output with the condition dropped (pred_noise: the output is ε̂),
    for s = 0 (the null-branch shortcut), 0.5, 1, 3 and 7.5; x̂_0 follows ε̃ (x_t = α x̂_0 + σ ε̃)."""
    net = unet(num_classes=K) if condition == "classes" else unet(context_dim=D)
    d = GaussianDiffusion(net, image_size=8, timesteps=20, clip_denoised=False)
    x, _ = inputs(3, seed=11)
    t = torch.tensor([3, 11, 18])
    cond = {"classes": torch.tensor([0, 2, 1])} if condition == "classes" else {"context": contexts(3, 4, seed=12)}
    with torch.no_grad():
        eps_cond = net(x, t, **cond)
        eps_uncond = net(x, t, **cond, drop=drop(3, True))
        alphabar = torch.cumprod(1 - d.schedule.betas.double(), 0)[t].view(-1, 1, 1, 1)
        for scale in (0.0, 0.5, 1.0, 3.0, 7.5):
            pred = d.denoiser(guidance_scale=scale, guidance_rescale=rescale, **cond)(x, t)
            expected = lin_et_al(eps_cond.double(), eps_uncond.double(), scale, rescale)
            torch.testing.assert_close(pred.eps.double(), expected, rtol=1e-4, atol=1e-5)
            x_back = alphabar.sqrt() * pred.x0.double() + (1 - alphabar).sqrt() * pred.eps.double()
            torch.testing.assert_close(x_back, x.double(), rtol=1e-4, atol=1e-4)

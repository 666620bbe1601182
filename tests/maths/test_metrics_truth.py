"""Precision and recall's k-NN balls are closed (Kynkäänniemi et al. 2019, eq. 1: f(φ, Φ) = 1 iff
‖φ − φ'‖ ≤ ‖φ' − NN_k(φ')‖ for some φ' ∈ Φ): a point exactly at a real point's k-th-neighbour distance is inside.
Points on a line with integer coordinates make every distance exact."""

from __future__ import annotations

import torch

from denoising_diffusion.evaluation.metrics import precision_recall


def test_a_point_on_the_boundary_of_a_ball_is_inside() -> None:
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]], dtype=torch.float64)  # k = 3: the radius of 0 (and of 3) is 3
    on_boundary = torch.full((4, 1), -3.0, dtype=torch.float64)  # distance 3 to the real point 0
    just_outside = torch.full((4, 1), -3.5, dtype=torch.float64)
    assert precision_recall(real, on_boundary, neighbours=3)[0] == 1.0
    assert precision_recall(real, just_outside, neighbours=3)[0] == 0.0

"""Each dataset item is read under a seed derived from the run's data seed AND its position in the data order
(training/rng.item_seed): two runs with different seeds augment their items differently, and within a run no two
positions share a stream."""

from __future__ import annotations

from denoising_diffusion.training.rng import item_seed


def test_item_seeds_depend_on_the_run_and_the_position() -> None:
    seeds = {(run, position): item_seed(run, position) for run in range(4) for position in range(200)}
    assert len(set(seeds.values())) == len(seeds)  # every (run, position) its own stream
    assert all(0 <= s < 2**63 for s in seeds.values())
    assert item_seed(7, 3) == item_seed(7, 3)  # a function of the two, nothing else

"""Which configured settings a tuning space holds (they become the study's first trial)."""

from __future__ import annotations

from lakestory.config.models import SearchSpace
from lakestory.training.tune import within


def test_a_choice_is_within_only_if_listed() -> None:
    space = SearchSpace(choices=[[32], [64, 32]])
    assert within(space, [64, 32]) and not within(space, [64])


def test_a_range_holds_its_ends_and_its_grid() -> None:
    plain = SearchSpace(low=0.001, high=0.01, log=True)
    assert within(plain, 0.001) and within(plain, 0.01) and within(plain, 0.003)
    assert not within(plain, 0.02) and not within(plain, "0.003")
    grid = SearchSpace(low=16, high=256, step=16)
    assert within(grid, 128) and not within(grid, 100)

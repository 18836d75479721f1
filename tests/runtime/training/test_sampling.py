"""ftspec's length-grouped row order: every row once per epoch, batches of rows of
about one length, batches in random order, the same order for the same seed and
epoch (so a resumed run sees the same batches)."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("torch")

from ftspec.runtime.training.sampling import LengthBuckets  # noqa: E402


def _padding(lengths, batches):
    real = sum(lengths[i] for b in batches for i in b)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - real / padded


def _lengths(n, seed=0):
    rng = random.Random(seed)
    return [rng.randint(20, 300) for _ in range(n)]


@pytest.mark.parametrize("n, batch", [(256, 16), (1000, 16), (5003, 8), (7, 16)])
def test_every_row_once_per_epoch_in_full_batches_with_a_short_one_last(n, batch):
    sampler = LengthBuckets(_lengths(n), batch, seed=3)
    batches = sampler.batches()
    assert sorted(i for b in batches for i in b) == list(range(n))
    assert list(sampler) == [i for b in batches for i in b]
    assert len(sampler) == n
    assert all(len(b) == batch for b in batches[:-1])
    assert len(batches[-1]) == (n % batch or batch)


def test_batches_are_nearly_unpadded_and_much_less_than_random_or_transformers():
    from transformers.trainer_pt_utils import get_length_grouped_indices

    lengths = _lengths(256)
    ours = _padding(lengths, LengthBuckets(lengths, 16, seed=0).batches())
    order = list(range(256))
    random.Random(0).shuffle(order)
    shuffled = _padding(lengths, [order[i:i + 16] for i in range(0, 256, 16)])
    theirs = get_length_grouped_indices(lengths, 16)
    grouped = _padding(lengths, [theirs[i:i + 16] for i in range(0, 256, 16)])
    assert ours < 0.08 and 2 * ours < grouped < shuffled, (ours, grouped, shuffled)


def test_the_order_depends_on_seed_and_epoch_only():
    lengths = _lengths(500)
    a, b = LengthBuckets(lengths, 16, seed=1), LengthBuckets(lengths, 16, seed=1)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b), "each epoch reshuffles"
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(LengthBuckets(lengths, 16, seed=2)) != list(LengthBuckets(lengths, 16, seed=1))


def test_batch_order_is_random_not_sorted():
    lengths = _lengths(2000)
    longest = [max(lengths[i] for i in b) for b in LengthBuckets(lengths, 16, seed=0).batches()[:-1]]
    descents = sum(1 for x, y in zip(longest, longest[1:]) if y < x)
    assert 0.3 < descents / (len(longest) - 1) < 0.7

from collections import Counter

from ftspec.splitting import split_indices, split_sizes


def test_sizes():
    assert split_sizes(1500, 0.1, 0.1) == (1200, 150, 150)
    assert split_sizes(10, 0.01, 0) == (9, 1, 0)  # a requested split is never empty
    assert split_sizes(0, 0.1, 0.1) == (0, 0, 0)


def test_split_is_a_seeded_partition():
    a = split_indices(1000, 0.1, 0.2, seed=3)
    assert a == split_indices(1000, 0.1, 0.2, seed=3)
    assert a != split_indices(1000, 0.1, 0.2, seed=4)
    train, val, test = a
    assert sorted(train + val + test) == list(range(1000))
    assert (len(train), len(val), len(test)) == split_sizes(1000, 0.1, 0.2)


def test_stratified_split_keeps_proportions_and_exact_sizes():
    labels = ["a"] * 600 + ["b"] * 300 + ["c"] * 100
    train, val, test = split_indices(1000, 0.1, 0.1, seed=0, labels=labels)
    assert (len(train), len(val), len(test)) == (800, 100, 100)
    assert Counter(labels[i] for i in val) == {"a": 60, "b": 30, "c": 10}
    assert Counter(labels[i] for i in test) == {"a": 60, "b": 30, "c": 10}

from collections import Counter

from ftspec.data.splitting import split_indices, split_sizes


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


def test_limits_of_each_split_from_a_number_a_mapping_or_nothing():
    from ftspec.data.splitting import split_limits

    assert split_limits(None) == {"train": None, "validation": None, "test": None}
    assert split_limits(64) == {"train": 64, "validation": 64, "test": 64}
    assert split_limits({"train": 200}) == {"train": 200, "validation": None, "test": None}


def test_counts_follow_filter_split_and_a_limit_on_the_training_rows_alone():
    from types import SimpleNamespace

    from ftspec.data.splitting import split_counts

    split = SimpleNamespace(validation=0.1, test=0.1)
    assert split_counts({"train": 1500}, split, None) == {"train": 1200, "validation": 150, "test": 150}
    assert split_counts({"train": 1500}, split, {"train": 200}) == {"train": 200, "validation": 150, "test": 150}
    assert split_counts({"train": 1500}, split, 64) == {"train": 64, "validation": 64, "test": 64}
    # A validation file is its split (a spec holds out no validation rows beside one).
    test_only = SimpleNamespace(validation=0.0, test=0.1)
    assert split_counts({"train": 1000, "validation": 40}, test_only,
                        {"validation": 30}) == {"train": 900, "validation": 30, "test": 100}
    assert split_counts({"train": None}, split, 10) == {"train": None, "validation": None, "test": None}

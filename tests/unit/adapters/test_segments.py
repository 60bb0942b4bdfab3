"""Pure batching functions, table-driven."""
import pytest

from adapters.segments import group_rows, length_sorted_chunks, split_sizes


@pytest.mark.parametrize("lengths,max_rows,expected", [
    ([], 4, []),
    ([5], 4, [[0]]),
    ([9, 3, 7, 1], 4, [[3, 1, 2, 0]]),
    ([9, 3, 7, 1], 2, [[3, 1], [2, 0]]),
    ([9, 3, 7, 1], 3, [[3, 1, 2], [0]]),
    ([4, 4, 4], 2, [[0, 1], [2]]),  # stable for ties
])
def test_length_sorted_chunks(lengths, max_rows, expected):
    assert length_sorted_chunks(lengths, max_rows) == expected


def test_chunks_cover_every_row_once():
    lengths = [(i * 37) % 11 + 1 for i in range(100)]
    chunks = length_sorted_chunks(lengths, 7)
    assert sorted(i for c in chunks for i in c) == list(range(100))
    assert all(len(c) <= 7 for c in chunks)


def test_chunks_reject_bad_size():
    with pytest.raises(ValueError):
        length_sorted_chunks([1], 0)


@pytest.mark.parametrize("keys,expected", [
    ([], {}),
    (["a"], {"a": [0]}),
    (["a", "b", "a", None, "b"], {"a": [0, 2], "b": [1, 4], None: [3]}),
])
def test_group_rows(keys, expected):
    got = group_rows(keys)
    assert got == expected
    assert list(got) == list(expected)  # first-appearance order


@pytest.mark.parametrize("items,sizes,expected", [
    ([1, 2, 3], [1, 2], [[1], [2, 3]]),
    ([], [], []),
    ([1, 2], [0, 2, 0], [[], [1, 2], []]),
])
def test_split_sizes(items, sizes, expected):
    assert split_sizes(items, sizes) == expected


def test_split_sizes_mismatch():
    with pytest.raises(ValueError):
        split_sizes([1, 2], [3])

"""Pure batching functions, table-driven."""
import pytest

from adapters.segments import group_rows, length_sorted_chunks, split_sizes, token_balanced_chunks


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


@pytest.mark.parametrize("lengths,max_rows,parts,expected", [
    ([], 4, 2, []),
    ([5], 4, 2, [[0]]),
    ([9, 3, 7, 1], 4, 1, [[3, 1, 2, 0]]),
    ([9, 3, 7, 1], 2, 1, [[2, 0], [3, 1]]),  # max_rows wins over parts
    # padded sizes: [7, 9] 18 and [1, 3] 6; [9] 9 and [1, 3, 7] 21 would wait longer
    ([9, 3, 7, 1], 4, 2, [[2, 0], [3, 1]]),
    # by count 5/5: 50 and 5 x 10 = 50; by padded tokens: 40 and 12
    ([10, 10, 10, 10, 2, 2, 2, 2, 2, 2], 8, 2, [[0, 1, 2, 3], [4, 5, 6, 7, 8, 9]]),
])
def test_token_balanced_chunks(lengths, max_rows, parts, expected):
    assert token_balanced_chunks(lengths, max_rows, parts) == expected


def test_token_balanced_chunks_even_out_the_largest_chunk():
    """64 short questions (6-19 tokens): cut 32/32 the longest chunk pads to far more tokens
    than the other; balanced, the largest chunk (what a batch waits for) is smaller."""
    lengths = [6 + (i * 5) % 14 for i in range(64)]

    def padded(chunks):
        return [len(c) * max(lengths[i] for i in c) for c in chunks]

    by_count = padded(length_sorted_chunks(lengths, 32))
    balanced = token_balanced_chunks(lengths, 64, 2)
    assert sorted(i for c in balanced for i in c) == list(range(64)) and len(balanced) == 2
    assert max(padded(balanced)) < 0.85 * max(by_count), (padded(balanced), by_count)
    for max_rows, parts in [(7, 1), (7, 3), (64, 5), (3, 64)]:
        chunks = token_balanced_chunks(lengths, max_rows, parts)
        assert sorted(i for c in chunks for i in c) == list(range(64))
        assert all(len(c) <= max_rows for c in chunks)
        assert -(-64 // max_rows) <= len(chunks) <= max(parts, -(-64 // max_rows))
    with pytest.raises(ValueError):
        token_balanced_chunks([1], 4, 0)

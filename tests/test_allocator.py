"""The caching-allocator model against cases worked out by hand from the rules in
helpers/allocator.py's docstring (torch 2.13's CUDACachingAllocator.cpp). Each expected number
is derived in the comment above it; none was copied from the model's output."""

import pytest

from helpers.allocator import CachingAllocator, OutOfMemoryError, get_allocation_size, replay, round_size

KiB = 1024
MiB = 1024 * 1024


def test_round_size_and_segment_size():
    # round_size: below 512 -> 512; otherwise up to a multiple of 512.
    assert round_size(1) == 512
    assert round_size(512) == 512
    assert round_size(513) == 1024
    assert round_size(1000) == 1024
    # get_allocation_size of a rounded size: <= 1 MiB -> 2 MiB; < 10 MiB -> 20 MiB; else up to 2 MiB.
    assert get_allocation_size(512) == 2 * MiB
    assert get_allocation_size(1 * MiB) == 2 * MiB
    assert get_allocation_size(1 * MiB + 512) == 20 * MiB
    assert get_allocation_size(10 * MiB - 512) == 20 * MiB
    assert get_allocation_size(10 * MiB) == 10 * MiB
    assert get_allocation_size(11 * MiB) == 12 * MiB
    assert get_allocation_size(100 * MiB + 512) == 102 * MiB


def test_small_request_packs_into_a_2_mib_segment():
    a = CachingAllocator()
    # 100 B -> 512 B, small pool, nothing cached: a 2 MiB segment, split (remainder 2 MiB - 512 >= 512).
    a.malloc("x", 100)
    assert (a.allocated, a.reserved) == (512, 2 * MiB)
    # 1000 B -> 1024 B: best fit is the 2 MiB - 512 remainder, split again; no new segment.
    a.malloc("y", 1000)
    assert (a.allocated, a.reserved) == (512 + 1024, 2 * MiB)
    assert a.segments() == [[(512, True), (1024, True), (2 * MiB - 1536, False)]]
    # 1 MiB exactly is still small (<= kSmallSize): it fits the 2 MiB - 1536 remainder.
    a.malloc("z", 1 * MiB)
    assert (a.allocated, a.reserved) == (1536 + 1 * MiB, 2 * MiB)


def test_1_5_mib_request_splits_a_20_mib_segment():
    a = CachingAllocator()
    # 1.5 MiB (a multiple of 512) is large (> 1 MiB) and < 10 MiB: a 20 MiB segment,
    # split because the remainder 18.5 MiB > 1 MiB.
    a.malloc("x", 1536 * KiB)
    assert (a.allocated, a.reserved) == (1536 * KiB, 20 * MiB)
    assert a.segments() == [[(1536 * KiB, True), (18 * MiB + 512 * KiB, False)]]
    # A second 1.5 MiB comes out of the 18.5 MiB remainder: 3 MiB allocated, still 20 MiB reserved.
    a.malloc("y", 1536 * KiB)
    assert (a.allocated, a.reserved) == (3 * MiB, 20 * MiB)


def test_100_mib_request_gets_exactly_100_mib():
    a = CachingAllocator()
    # 100 MiB >= 10 MiB: segment = 100 MiB rounded to 2 MiB = 100 MiB; remainder 0, no split.
    a.malloc("x", 100 * MiB)
    assert (a.allocated, a.reserved) == (100 * MiB, 100 * MiB)
    # One byte more: round_size -> 100 MiB + 512, segment 102 MiB, remainder 2 MiB - 512 > 1 MiB: split.
    a.malloc("y", 100 * MiB + 1)
    assert (a.allocated, a.reserved) == (200 * MiB + 512, 202 * MiB)


def test_no_split_when_the_remainder_is_at_most_1_mib():
    a = CachingAllocator()
    # 11 MiB -> a 12 MiB segment; remainder exactly 1 MiB is not > 1 MiB: the whole 12 MiB is
    # handed out and counted as allocated.
    a.malloc("x", 11 * MiB)
    assert (a.allocated, a.reserved) == (12 * MiB, 12 * MiB)
    assert a.segments() == [[(12 * MiB, True)]]


def test_freed_block_is_reused_whole_when_the_remainder_is_small():
    a = CachingAllocator()
    # 10 MiB -> a 10 MiB segment (>= kMinLargeAlloc), not split.
    a.malloc("x", 10 * MiB)
    a.free("x")
    assert (a.allocated, a.reserved) == (0, 10 * MiB)
    # 9.5 MiB: best fit is the cached 10 MiB block (no 20 MiB segment); remainder 0.5 MiB <= 1 MiB,
    # so no split and allocated counts 10 MiB.
    a.malloc("y", 9 * MiB + 512 * KiB)
    assert (a.allocated, a.reserved) == (10 * MiB, 10 * MiB)
    assert (a.peak_allocated, a.peak_reserved) == (10 * MiB, 10 * MiB)


def test_freed_block_is_reused_and_merged_back():
    a = CachingAllocator()
    # 4 MiB -> 20 MiB segment split into 4 allocated + 16 free.
    a.malloc("x", 4 * MiB)
    # Freed: merges with its free 16 MiB neighbour into one free 20 MiB block.
    a.free("x")
    assert a.segments() == [[(20 * MiB, False)]]
    # The next 4 MiB reuses it: no second segment.
    a.malloc("y", 4 * MiB)
    assert (a.allocated, a.reserved) == (4 * MiB, 20 * MiB)
    assert a.segments() == [[(4 * MiB, True), (16 * MiB, False)]]


def test_merge_of_free_neighbours():
    a = CachingAllocator()
    # Three 4 MiB requests share one 20 MiB segment: [4 a][4 b][4 c][8 free].
    for key in "abc":
        a.malloc(key, 4 * MiB)
    assert a.segments() == [[(4 * MiB, True)] * 3 + [(8 * MiB, False)]]
    # b's neighbours a and c are allocated: no merge.
    a.free("b")
    assert a.segments() == [[(4 * MiB, True), (4 * MiB, False), (4 * MiB, True), (8 * MiB, False)]]
    # c merges with free b before it and the free 8 MiB after it: [4 a][16 free].
    a.free("c")
    assert a.segments() == [[(4 * MiB, True), (16 * MiB, False)]]
    # The segment is not entirely free: empty_cache keeps it.
    a.empty_cache()
    assert (a.allocated, a.reserved) == (4 * MiB, 20 * MiB)
    a.free("a")
    assert a.segments() == [[(20 * MiB, False)]]


def test_best_fit_takes_the_smallest_block_that_fits():
    a = CachingAllocator()
    # A 16 MiB segment first (lower address), then a 12 MiB one; both freed.
    a.malloc("big", 16 * MiB)
    a.malloc("small", 12 * MiB)
    a.free("big")
    a.free("small")
    # 11 MiB: the smallest free block >= 11 MiB is the 12 MiB one, though it lies higher;
    # remainder 1 MiB, not split: 12 MiB allocated.
    a.malloc("x", 11 * MiB)
    assert (a.allocated, a.reserved) == (12 * MiB, 28 * MiB)
    assert a.segments() == [[(16 * MiB, False)], [(12 * MiB, True)]]


def test_equal_sizes_go_to_the_lower_address():
    a = CachingAllocator()
    # Two 12 MiB segments, the second freed first; a new 12 MiB takes the first (lower) one.
    a.malloc("p", 12 * MiB)
    a.malloc("q", 12 * MiB)
    a.free("q")
    a.free("p")
    a.malloc("r", 12 * MiB)
    assert a.segments() == [[(12 * MiB, True)], [(12 * MiB, False)]]


def test_pools_are_separate():
    a = CachingAllocator()
    # A cached free 20 MiB large block does not serve a small request: 512 B needs a 2 MiB segment.
    a.malloc("x", 2 * MiB)
    a.free("x")
    a.malloc("y", 1)
    assert (a.allocated, a.reserved) == (512, 22 * MiB)


def test_empty_cache_releases_only_entirely_free_segments():
    a = CachingAllocator()
    a.malloc("keep", 100)  # 2 MiB small segment, stays partly allocated
    a.malloc("gone", 30 * MiB)  # 30 MiB segment, freed entirely below
    a.malloc("half", 4 * MiB)  # 20 MiB segment, 4 MiB of it stays allocated
    a.free("gone")
    # reserved = 2 + 30 + 20 = 52 MiB; empty_cache drops only the 30 MiB: 22 MiB left.
    a.empty_cache()
    assert a.reserved == 22 * MiB
    assert a.allocated == 512 + 4 * MiB
    assert a.peak_reserved == 52 * MiB


def test_peaks_and_reset_peak():
    a = CachingAllocator()
    a.malloc("x", 100 * MiB)
    a.free("x")
    # Freed but cached: allocated 0 (peak 100 MiB), reserved still 100 MiB.
    assert (a.allocated, a.peak_allocated, a.reserved, a.peak_reserved) == (0, 100 * MiB, 100 * MiB, 100 * MiB)
    # reset_peak: peaks become the current values.
    a.reset_peak()
    assert (a.peak_allocated, a.peak_reserved) == (0, 100 * MiB)
    # empty_cache lowers reserved, not its peak; the next reset_peak does.
    a.empty_cache()
    assert (a.reserved, a.peak_reserved) == (0, 100 * MiB)
    a.reset_peak()
    assert a.peak_reserved == 0


def test_zero_bytes_allocate_nothing():
    a = CachingAllocator()
    a.malloc("empty", 0)
    assert (a.allocated, a.reserved, a.segments()) == (0, 0, [])
    a.free("empty")
    assert (a.allocated, a.reserved) == (0, 0)


def test_capacity_releases_the_cache_and_retries():
    a = CachingAllocator(capacity=40 * MiB)
    a.malloc("x", 30 * MiB)
    a.free("x")
    # 32 MiB: nothing cached fits (30 < 32); a new 32 MiB segment would make 62 > 40 MiB, so the
    # entirely free 30 MiB segment is released (reserved 0) and the retry fits: 32 MiB reserved.
    a.malloc("y", 32 * MiB)
    assert (a.allocated, a.reserved, a.peak_reserved) == (32 * MiB, 32 * MiB, 32 * MiB)
    assert a.num_alloc_retries == 1
    # A 100 B request: 2 MiB segment, 34 <= 40 MiB.
    a.malloc("s", 100)
    a.free("s")
    assert a.reserved == 34 * MiB
    # 10 MiB needs a 10 MiB segment: 34 + 10 > 40; releasing frees the cached 2 MiB segment
    # (32 + 10 = 42 still > 40), so: OOM, with the cache left released.
    with pytest.raises(OutOfMemoryError) as oom:
        a.malloc("z", 10 * MiB)
    assert (oom.value.requested, oom.value.segment_size) == (10 * MiB, 10 * MiB)
    assert (oom.value.reserved, oom.value.allocated, oom.value.capacity) == (32 * MiB, 32 * MiB, 40 * MiB)
    assert isinstance(oom.value, MemoryError)
    assert (a.allocated, a.reserved, a.num_ooms) == (32 * MiB, 32 * MiB, 1)
    # A 1.5 MiB request reports the 20 MiB segment it tried to get.
    with pytest.raises(OutOfMemoryError) as oom:
        a.malloc("w", 1536 * KiB)
    assert oom.value.segment_size == 20 * MiB


def test_max_split_size():
    a = CachingAllocator(max_split_size=20 * MiB)
    a.malloc("big", 60 * MiB)
    a.free("big")
    # 4 MiB < max_split_size: the cached 60 MiB block is oversize, refused; a new 20 MiB segment,
    # split (4 MiB < 20 MiB and remainder 16 MiB > 1 MiB).
    a.malloc("x", 4 * MiB)
    assert (a.allocated, a.reserved) == (4 * MiB, 80 * MiB)
    # 30 MiB >= max_split_size: 60 MiB >= 30 + 20 (max_non_split_rounding) is refused: new 30 MiB.
    a.malloc("y", 30 * MiB)
    assert (a.allocated, a.reserved) == (34 * MiB, 110 * MiB)
    # 45 MiB: 60 < 45 + 20, taken whole and not split (45 MiB >= max_split_size): 60 MiB allocated.
    a.malloc("z", 45 * MiB)
    assert (a.allocated, a.reserved) == (94 * MiB, 110 * MiB)


def test_max_split_size_releases_one_oversize_block_first():
    a = CachingAllocator(capacity=100 * MiB, max_split_size=20 * MiB)
    a.malloc("A", 60 * MiB)
    a.malloc("B", 24 * MiB)
    a.free("A")
    a.free("B")
    # 4 MiB: both cached blocks are oversize (refused); a 20 MiB segment makes 104 > 100 MiB.
    # release_available_cached_blocks frees the smallest oversize block >= max(4, 20) MiB: B (24 MiB);
    # the retry fits (60 + 20 = 80 MiB). A stays cached; release_cached_blocks never ran.
    a.malloc("x", 4 * MiB)
    assert (a.allocated, a.reserved, a.num_alloc_retries) == (4 * MiB, 80 * MiB, 0)


def test_replay_and_loud_misuse():
    a = replay(
        [
            ("malloc", "a", 1536 * KiB),  # 20 MiB segment, 1.5 MiB allocated
            ("malloc", "b", 100 * MiB),  # 100 MiB segment
            ("free", "b"),
            ("reset_peak",),  # peaks: allocated 1.5 MiB, reserved 120 MiB
            ("empty_cache",),  # releases the 100 MiB segment
        ]
    )
    assert (a.allocated, a.reserved, a.peak_allocated, a.peak_reserved) == (1536 * KiB, 20 * MiB, 1536 * KiB, 120 * MiB)
    with pytest.raises(KeyError):
        a.malloc("a", 10)
    with pytest.raises(KeyError):
        a.free("never")
    with pytest.raises(ValueError):
        replay([("realloc", "a", 10)])
    with pytest.raises(OutOfMemoryError):
        replay([("malloc", "a", 30 * MiB)], capacity=20 * MiB)

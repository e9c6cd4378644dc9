"""A pure-Python model of PyTorch's CUDA caching allocator (torch 2.13, default settings).

Turns a trace of storage allocations and frees, recorded without a GPU, into the four
numbers a real run reports: ``torch.cuda.memory_allocated()`` / ``max_memory_allocated()``
(``allocated_bytes.all.current`` / ``.peak``: the sizes of the blocks handed out, not the
tensors' nbytes) and ``memory_reserved()`` / ``max_memory_reserved()``
(``reserved_bytes.all.current`` / ``.peak``: the sum of the segments obtained from cudaMalloc).

    alloc = replay([("malloc", "a", 1500 * 1024), ("malloc", "b", 100), ("free", "a")])
    alloc.allocated, alloc.reserved, alloc.peak_allocated, alloc.peak_reserved

Sources. The rules below were read in ``c10/cuda/CUDACachingAllocator.cpp`` (class
``DeviceCachingAllocator`` unless said otherwise) as of
huydhn/pytorch@82536757744883ea9eb331949817947750e05d0b, a copy of pytorch/pytorch main whose
allocator matches the installed 2.13 headers in every feature checked (``allocateWithAddress``,
``markCaptureBegin``/``End``, ``reserved_bytes_by_private_pools``, ``large_segment_size``,
``throw_on_cudamalloc_oom``). pytorch/pytorch's own v2.13.0 file could not be read here: the
installed wheel was built from cf30153c4c131c8164ee7798e5022d810682e2cb, whose copy is not
in the stored index, and the repository is too large to fetch. Every rule used here is the
same in two other copies read, one older (mara-werils/pytorch@20c4398accadb0f4f747d31f44b36e47d20fa002,
2.13 window) and one much older (bbopen/pytorch@68f6712458d54288c010c1c7323d5d8c9a3194ca,
before ``AcceleratorAllocatorConfig``), except the tie-break (see Addresses). Constants and
defaults were read in the installed 2.13 headers (``torch/include/c10/core/AllocatorConfig.h``,
``c10/cuda/CUDAAllocatorConfig.h``, ``c10/core/Allocator.h``) and in
``c10/core/AllocatorConfig.cpp`` (pytorch/pytorch@065861fba7598880aa3216822742a1172d0a197c).

- ``round_size``: a request below ``kMinBlockSize`` (512) becomes 512; otherwise it is
  rounded up to a multiple of 512. (``roundup_power2_divisions`` rounds to power-of-two
  divisions instead; its default, all intervals 0, is off: not modelled.)
- ``get_pool``: a rounded size <= ``kSmallSize`` (1 MiB) goes to the small pool, anything
  larger to the large pool. Free blocks of one pool never serve the other.
- ``get_allocation_size``: the segment cudaMalloc'd when no free block fits:
  size <= ``kSmallSize`` -> ``kSmallBuffer`` (2 MiB); size < ``kMinLargeAlloc`` (10 MiB) ->
  ``AcceleratorAllocatorConfig::large_segment_size()`` (default 20 MiB, the old
  ``kLargeBuffer``; 2.13's ``large_segment_size_mb`` option changes it: not modelled);
  otherwise size rounded up to a multiple of ``kRoundLarge`` (2 MiB).
- ``get_free_block``: best fit. ``pool.blocks.lower_bound(search_key)`` on a set ordered by
  (stream, size, tie-break): the smallest free block whose size >= the request. Then the
  ``max_split_size`` rules (default ``SIZE_MAX``, i.e. off): a request < max_split_size
  gets no block >= max_split_size, and a request >= max_split_size gets no block
  >= request + ``max_non_split_rounding_size`` (default 20 MiB); in either case the search
  fails (the set is size-ordered, so no later block could pass).
- ``should_split`` (``alloc_found_block`` does the split): small pool: split when the
  remainder >= ``kMinBlockSize``; large pool: when request < max_split_size and the
  remainder > ``kSmallSize`` (1 MiB). The block handed out is the low-address part; the
  remainder goes back to the pool. Unsplit, the whole block is handed out and
  ``allocated_bytes`` grows by the whole block's size (``alloc_found_block`` increases it
  by ``block->size``, not by the request).
- ``free`` / ``free_block`` / ``try_merge_blocks``: the block returns to its pool and
  absorbs its free neighbours (``prev``, ``next``) of the same segment.
- ``alloc_block``: a new segment; ``reserved_bytes`` grows by its size. It fails when
  ``total_allocated_memory + size > allowed_memory_maximum`` (set by
  ``set_per_process_memory_fraction``) or when cudaMalloc fails. ``capacity`` here plays
  both parts: a new segment fails when reserved + its size > capacity.
- ``malloc``'s retry chain after a failed ``alloc_block``:
  ``release_available_cached_blocks`` (only when max_split_size is set: cudaFree the
  smallest free oversize block >= max(request, max_split_size), else oversize blocks from
  the largest down until that much is freed) then ``alloc_block``; then
  ``release_cached_blocks`` (cudaFree every free block that has no prev/next, i.e. every
  entirely free segment) then ``alloc_block`` again; then OutOfMemoryError, whose message
  reports ``alloc_size`` (the segment size), not the request. The cache stays released.
- ``emptyCache`` -> ``release_cached_blocks``: every entirely free segment is released.
- Stats (``Stat::increase`` in ``c10/core/Allocator.h``): peak = max(peak, current) on each
  increase; ``resetPeakStats`` (``torch.cuda.reset_peak_memory_stats``) sets peak = current.
- ``NativeCachingAllocator::allocate``: a zero-byte request calls no malloc and returns a
  null pointer, whose free is a no-op: here it allocates nothing.

Addresses. Each new segment gets a fresh base address above all earlier ones (released
ones included), and free blocks of equal size tie-break by address. The source read orders a
pool by ``BlockComparatorSizeCounterAddress``: (stream, size, ``registration_counter``,
address), the counter taken at each cudaMalloc and inherited by every block split from that
segment (pytorch/pytorch#183591). Under this model's addresses, (size, address) is that very
order: segments in cudaMalloc order, blocks of one segment in address order. Earlier states of
the 2.13 window ordered the default pools by (size, address) of the real pointers (the old
``BlockComparatorSize``; again after #182929/#183489) or by a counter taken at every Block
construction (#178362). If torch 2.13 shipped the address order, real cudaMalloc addresses may
order differently from this model's (a released range can be handed out again below live
segments): then, between free blocks of equal size, the real allocator may pick another one,
which can change later splits and merges and so which segments become entirely free (what
``empty_cache`` and the OOM retry release), the totals after such a release, and whether a
later request fits. The rules themselves (sizes, when to split, what merges) never look at
addresses.

Not modelled (all off by default): streams and ``record_stream`` (one stream; a free is
immediate), expandable segments (``expandable_segments:True``), ``garbage_collection_threshold``,
``roundup_power2_divisions``, CUDA graph and ``MemPool`` private pools, the
``FreeCudaMemoryCallbacksRegistry`` callbacks. Memory outside the allocator (the CUDA
context, other processes) is not in these numbers, as it is not in torch's.
"""

from __future__ import annotations

from bisect import bisect_left, insort

# c10/core/AllocatorConfig.h (torch 2.13)
K_MIN_BLOCK_SIZE = 512  # kMinBlockSize: all sizes are rounded to at least 512 bytes
K_SMALL_SIZE = 1048576  # kSmallSize: largest "small" allocation is 1 MiB
K_SMALL_BUFFER = 2097152  # kSmallBuffer: "small" allocations are packed in 2 MiB blocks
K_MIN_LARGE_ALLOC = 10485760  # kMinLargeAlloc: allocations between 1 and 10 MiB may use large_segment_size
K_ROUND_LARGE = 2097152  # kRoundLarge: round up large allocations to 2 MiB
K_LARGE_SEGMENT_SIZE = 20971520  # AcceleratorAllocatorConfig::large_segment_size_ default (20 MiB)
SIZE_MAX = 2**64 - 1  # std::numeric_limits<size_t>::max(): max_split_size_ default, "unlimited"
K_MAX_NON_SPLIT_ROUNDING = 20971520  # max_non_split_rounding_size_ default (kLargeBuffer)


def round_size(nbytes: int) -> int:
    """``DeviceCachingAllocator::round_size`` with ``roundup_power2_divisions`` off."""
    if nbytes < K_MIN_BLOCK_SIZE:
        return K_MIN_BLOCK_SIZE
    return K_MIN_BLOCK_SIZE * ((nbytes + K_MIN_BLOCK_SIZE - 1) // K_MIN_BLOCK_SIZE)


def get_allocation_size(size: int) -> int:
    """``DeviceCachingAllocator::get_allocation_size``: the segment for a rounded request."""
    if size <= K_SMALL_SIZE:
        return K_SMALL_BUFFER
    if size < K_MIN_LARGE_ALLOC:
        return K_LARGE_SEGMENT_SIZE
    return K_ROUND_LARGE * ((size + K_ROUND_LARGE - 1) // K_ROUND_LARGE)


class OutOfMemoryError(MemoryError):
    """A new segment did not fit in ``capacity`` even after releasing the cache (torch raises
    ``torch.OutOfMemoryError`` there). ``requested`` is the caller's nbytes, ``segment_size`` the
    segment the allocator tried to get (what torch's "Tried to allocate" reports)."""

    def __init__(self, requested: int, segment_size: int, allocated: int, reserved: int, capacity: int):
        self.requested = requested
        self.segment_size = segment_size
        self.allocated = allocated
        self.reserved = reserved
        self.capacity = capacity
        super().__init__(
            f"modelled CUDA out of memory: requested {requested} bytes, tried to allocate a segment of "
            f"{segment_size} bytes; {reserved} bytes reserved ({allocated} allocated) of a capacity of "
            f"{capacity} bytes, after releasing every entirely free cached segment"
        )


class _Block:
    """One ``Block``: a range of a segment, allocated or free, linked to its neighbours."""

    __slots__ = ("addr", "size", "small", "allocated", "prev", "next")

    def __init__(self, addr: int, size: int, small: bool):
        self.addr = addr
        self.size = size
        self.small = small
        self.allocated = False
        self.prev: _Block | None = None
        self.next: _Block | None = None


class CachingAllocator:
    """One device's ``DeviceCachingAllocator`` on one stream. ``capacity``: the bytes the
    allocator may reserve in all (None: unlimited). ``max_split_size``: the
    ``max_split_size_mb`` option in bytes (None: unset, torch's default)."""

    def __init__(self, capacity: int | None = None, max_split_size: int | None = None):
        if capacity is not None and capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        if max_split_size is not None and max_split_size < K_LARGE_SEGMENT_SIZE:
            # parseMaxSplitSize: "max_split_size_mb too small, must be >= 20"
            raise ValueError(f"max_split_size must be >= {K_LARGE_SEGMENT_SIZE}, got {max_split_size}")
        self.capacity = capacity
        self.max_split_size = SIZE_MAX if max_split_size is None else max_split_size
        self.max_non_split_rounding_size = K_MAX_NON_SPLIT_ROUNDING
        self.allocated = 0
        self.reserved = 0
        self.peak_allocated = 0
        self.peak_reserved = 0
        self.num_alloc_retries = 0  # stats.num_alloc_retries: alloc_block calls after release_cached_blocks
        self.num_ooms = 0
        self._live: dict = {}  # key -> allocated _Block, or None for a zero-byte storage
        self._blocks: dict[int, _Block] = {}  # addr -> every block, allocated or free
        self._free: dict[bool, list[tuple[int, int]]] = {True: [], False: []}  # small? -> sorted (size, addr)
        self._segments: dict[int, int] = {}  # base addr -> segment size
        self._next_addr = 0

    # --- public API -----------------------------------------------------------------

    def malloc(self, key, nbytes: int) -> None:
        """A storage of ``nbytes`` bytes, known as ``key`` until ``free(key)``."""
        if key in self._live:
            raise KeyError(f"malloc of {key!r}, which is already allocated")
        if nbytes < 0:
            raise ValueError(f"malloc of {key!r} with negative size {nbytes}")
        if nbytes == 0:
            self._live[key] = None
            return
        size = round_size(nbytes)
        small = size <= K_SMALL_SIZE
        alloc_size = get_allocation_size(size)
        block = self._get_free_block(size, small)
        if block is None:
            block = self._alloc_block(alloc_size, small)
        if block is None and self._release_available_cached_blocks(size, small):
            block = self._alloc_block(alloc_size, small)
        if block is None:
            self._release_cached_blocks()
            self.num_alloc_retries += 1
            block = self._alloc_block(alloc_size, small)
        if block is None:
            self.num_ooms += 1
            raise OutOfMemoryError(nbytes, alloc_size, self.allocated, self.reserved, self.capacity)
        if self._should_split(block, size):
            block = self._split(block, size)
        block.allocated = True
        self._live[key] = block
        self.allocated += block.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)

    def free(self, key) -> None:
        """The storage ``key`` is freed: its block returns to the pool and merges with free neighbours."""
        if key not in self._live:
            raise KeyError(f"free of {key!r}, which is not allocated")
        block = self._live.pop(key)
        if block is None:
            return
        block.allocated = False
        self.allocated -= block.size
        for neighbour in (block.prev, block.next):
            if neighbour is not None and not neighbour.allocated:
                self._merge(block, neighbour)
        insort(self._free[block.small], (block.size, block.addr))

    def empty_cache(self) -> None:
        """``torch.cuda.empty_cache()``: every entirely free segment goes back to the device."""
        self._release_cached_blocks()

    def reset_peak(self) -> None:
        """``torch.cuda.reset_peak_memory_stats()``: peaks become the current values."""
        self.peak_allocated = self.allocated
        self.peak_reserved = self.reserved

    def segments(self) -> list[list[tuple[int, bool]]]:
        """Each segment, in address order, as its blocks' ``(size, allocated)`` in address order
        (what ``torch.cuda.memory_snapshot()`` lists per segment)."""
        layout = []
        for base in sorted(self._segments):
            blocks, block = [], self._blocks[base]
            while block is not None:
                blocks.append((block.size, block.allocated))
                block = block.next
            layout.append(blocks)
        return layout

    # --- DeviceCachingAllocator's private methods -----------------------------------

    def _get_free_block(self, size: int, small: bool) -> _Block | None:
        pool = self._free[small]
        i = bisect_left(pool, (size, -1))
        if i == len(pool):
            return None
        block_size, addr = pool[i]
        if size < self.max_split_size and block_size >= self.max_split_size:
            return None
        if size >= self.max_split_size and block_size >= size + self.max_non_split_rounding_size:
            return None
        del pool[i]
        return self._blocks[addr]

    def _should_split(self, block: _Block, size: int) -> bool:
        remaining = block.size - size
        if block.small:
            return remaining >= K_MIN_BLOCK_SIZE
        return size < self.max_split_size and remaining > K_SMALL_SIZE

    def _split(self, block: _Block, size: int) -> _Block:
        """``alloc_found_block`` with split_remainder: the front ``size`` bytes become the
        returned block, the rest stays in the pool."""
        front = _Block(block.addr, size, block.small)
        front.prev, front.next = block.prev, block
        if block.prev is not None:
            block.prev.next = front
        block.prev = front
        block.addr += size
        block.size -= size
        self._blocks[front.addr] = front
        self._blocks[block.addr] = block
        insort(self._free[block.small], (block.size, block.addr))
        return front

    def _merge(self, dst: _Block, src: _Block) -> None:
        """``try_merge_blocks``: ``dst`` (being freed) absorbs the free neighbour ``src``."""
        self._free[src.small].remove((src.size, src.addr))
        del self._blocks[src.addr]
        if dst.prev is src:
            del self._blocks[dst.addr]
            dst.addr = src.addr
            dst.prev = src.prev
            if dst.prev is not None:
                dst.prev.next = dst
            self._blocks[dst.addr] = dst
        else:
            dst.next = src.next
            if dst.next is not None:
                dst.next.prev = dst
        dst.size += src.size

    def _alloc_block(self, alloc_size: int, small: bool) -> _Block | None:
        if self.capacity is not None and self.reserved + alloc_size > self.capacity:
            return None
        block = _Block(self._next_addr, alloc_size, small)
        self._next_addr += alloc_size
        self._blocks[block.addr] = block
        self._segments[block.addr] = alloc_size
        self.reserved += alloc_size
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        return block

    def _release_block(self, block: _Block) -> None:
        assert block.prev is None and block.next is None and not block.allocated, "release of a split or live block"
        self._free[block.small].remove((block.size, block.addr))
        del self._blocks[block.addr]
        del self._segments[block.addr]
        self.reserved -= block.size

    def _release_available_cached_blocks(self, size: int, small: bool) -> bool:
        if self.max_split_size == SIZE_MAX:
            return False
        pool = self._free[small]
        target = max(size, self.max_split_size)
        i = bisect_left(pool, (target, -1))
        if i < len(pool):
            self._release_block(self._blocks[pool[i][1]])
            return True
        released = 0
        while released < target and pool and pool[-1][0] >= self.max_split_size:
            block = self._blocks[pool[-1][1]]
            released += block.size
            self._release_block(block)
        return released >= target

    def _release_cached_blocks(self) -> bool:
        for small in (False, True):  # release_blocks(large_blocks), then small_blocks
            for _, addr in list(self._free[small]):
                block = self._blocks[addr]
                if block.prev is None and block.next is None:
                    self._release_block(block)
        return True


def replay(events, capacity: int | None = None) -> CachingAllocator:
    """Run a trace through a fresh allocator. ``events``: ``("malloc", key, nbytes)``,
    ``("free", key)``, and optionally ``("empty_cache",)`` / ``("reset_peak",)`` where the
    traced program called ``torch.cuda.empty_cache()`` / ``reset_peak_memory_stats()``.
    Raises ``OutOfMemoryError`` where the real run would have."""
    allocator = CachingAllocator(capacity=capacity)
    for event in events:
        op = event[0]
        if op == "malloc":
            _, key, nbytes = event
            allocator.malloc(key, nbytes)
        elif op == "free":
            _, key = event
            allocator.free(key)
        elif op == "empty_cache" and len(event) == 1:
            allocator.empty_cache()
        elif op == "reset_peak" and len(event) == 1:
            allocator.reset_peak()
        else:
            raise ValueError(f"unknown allocator event {event!r}")
    return allocator

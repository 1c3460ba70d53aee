"""The base's next-token logits kept on the model's device, least recently used first out, under a byte budget."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class LogitStore:
    """Least-recently-used vocabulary rows under a byte budget, in one block.

    The rows live in a single tensor of ``budget // row bytes`` rows, allocated
    on the first ``put`` and reused slot by slot: no allocation per row, so the
    allocator has nothing to fragment (with a tensor per row, glibc's heap grew
    with the number of rows that passed through). ``get`` and ``put`` return
    views of the block, valid until that row is evicted.
    """

    def __init__(self, budget: int):
        self.budget = max(0, int(budget))
        self.bytes = 0
        self.row_bytes = 0
        self._items: OrderedDict[Any, int] = OrderedDict()  # key -> slot, least recently used first
        self._block: Any = None  # one tensor of rows, allocated on first use
        self._free: list[int] = []

    @property
    def rows(self) -> int:
        """Rows the block holds (0 before the first ``put``)."""
        return 0 if self._block is None else self._block.shape[0]

    def capacity(self, row) -> int:
        """How many rows like ``row`` the budget holds."""
        return self.budget // max(1, row.numel() * row.element_size())

    def get(self, key):
        slot = self._items.get(key)
        if slot is None:
            return None
        self._items.move_to_end(key)
        return self._block[slot]

    def make_room(self, size: int) -> None:
        """Evict the least recently used until ``size`` more bytes fit (or nothing is left)."""
        while self._items and self.bytes + size > self.budget:
            self._evict()

    def put(self, key, value):
        """Keep a copy of ``value`` (evicting the least recently used as needed) and
        return it; ``value`` itself when it cannot be kept."""
        if self._block is None:
            rows = self.capacity(value)
            if rows == 0:
                return value
            import torch

            self._block = torch.empty((rows, *value.shape), dtype=value.dtype, device=value.device)
            self._free = list(range(rows - 1, -1, -1))
            self.row_bytes = value.numel() * value.element_size()
        if value.shape != self._block.shape[1:]:
            return value
        slot = self._items.get(key)
        if slot is None:
            if not self._free:
                self._evict()
            slot = self._free.pop()
            self._items[key] = slot
            self.bytes += self.row_bytes
        self._items.move_to_end(key)
        self._block[slot].copy_(value)
        return self._block[slot]

    def _evict(self) -> None:
        _, slot = self._items.popitem(last=False)
        self._free.append(slot)
        self.bytes -= self.row_bytes

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()
        self._block, self._free, self.bytes = None, [], 0

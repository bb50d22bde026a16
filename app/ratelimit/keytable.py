"""A fixed-capacity table of 16-byte keys kept in least-recently-used order, in storage
allocated (and written, so it is resident) when the table is built: the index of the in-memory
rate limiter (`app.ratelimit.memory`), which keeps the data of each key by its slot."""

from __future__ import annotations

from array import array

KEY_BYTES = 16

_NONE = -1


class KeyTable:
    """At most `capacity` distinct 16-byte keys, each in a slot (0 to `capacity - 1`) of its
    own, ordered by when each was last inserted or touched.

    Open addressing with linear probing over `2 * capacity` buckets, so the table is at most
    half full (a lookup reads about 1.5 buckets for a key it holds, 2.5 for one it does not).
    Deletion shifts the rest of a probe run back over the freed bucket (no tombstones, so the
    runs never grow with deletions). The order is a doubly linked list through the slots.

    A key's first bucket is its first 8 bytes modulo the bucket count: the keys must be spread
    evenly, as keyed hashes are (and then nobody can aim at one run).
    """

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, not {capacity}")
        self.capacity = capacity
        self._buckets_n = 2 * capacity
        self._keys = bytearray(KEY_BYTES * capacity)
        # the slot in each bucket, or _NONE
        self._buckets = array("i", [_NONE]) * self._buckets_n
        # each slot's first bucket (kept, as deletions read it for every key they may move)
        self._homes = array("i", [0]) * capacity
        # each slot's neighbours in the order (for a free slot, `_newer` is the next free one)
        self._older = array("i", [_NONE]) * capacity
        self._newer = array("i", [_NONE]) * capacity
        self._oldest = _NONE
        self._newest = _NONE
        self._size = 0
        self._used = 0  # slots 0 to _used - 1 have held a key; the others never have
        self._free = _NONE  # released slots, linked through `_newer`

    @property
    def reserved_bytes(self) -> int:
        """The bytes of the table's storage, fixed since it was built."""
        return (
            len(self._keys)
            + self._buckets.itemsize * len(self._buckets)
            + self._homes.itemsize * len(self._homes)
            + self._older.itemsize * (len(self._older) + len(self._newer))
        )

    def __len__(self) -> int:
        return self._size

    @property
    def oldest(self) -> int:
        """The slot of the least recently inserted or touched key, or -1 when empty."""
        return self._oldest

    def find(self, key: bytes) -> int:
        """The slot of `key`, or -1."""
        buckets, keys, buckets_n = self._buckets, self._keys, self._buckets_n
        bucket = int.from_bytes(key[:8], "little") % buckets_n
        while (slot := buckets[bucket]) != _NONE:
            at = slot * KEY_BYTES
            if keys[at : at + KEY_BYTES] == key:
                return slot
            bucket = bucket + 1 if bucket + 1 < buckets_n else 0
        return _NONE

    def insert(self, key: bytes) -> int:
        """Add `key` (not in the table) as the newest; its slot.

        Raises:
            OverflowError: the table holds `capacity` keys already (`pop_oldest` first).
        """
        if self._size == self.capacity:
            raise OverflowError(f"the table holds {self.capacity} keys already")
        if self._free != _NONE:
            slot = self._free
            self._free = self._newer[slot]
        else:
            slot = self._used
            self._used += 1
        at = slot * KEY_BYTES
        self._keys[at : at + KEY_BYTES] = key
        buckets, buckets_n = self._buckets, self._buckets_n
        bucket = self._homes[slot] = int.from_bytes(key[:8], "little") % buckets_n
        while buckets[bucket] != _NONE:
            bucket = bucket + 1 if bucket + 1 < buckets_n else 0
        buckets[bucket] = slot
        self._older[slot] = self._newest
        self._newer[slot] = _NONE
        if self._newest != _NONE:
            self._newer[self._newest] = slot
        else:
            self._oldest = slot
        self._newest = slot
        self._size += 1
        return slot

    def touch(self, slot: int) -> None:
        """Make the key in `slot` the newest."""
        newest = self._newest
        if slot == newest:
            return
        older_of, newer_of = self._older, self._newer
        older, newer = older_of[slot], newer_of[slot]  # `newer` exists: slot is not the newest
        if older != _NONE:
            newer_of[older] = newer
        else:
            self._oldest = newer
        older_of[newer] = older
        older_of[slot] = newest
        newer_of[slot] = _NONE
        newer_of[newest] = slot
        self._newest = slot

    def pop_oldest(self) -> int:
        """Remove the oldest key; the slot it had (free now, for a later `insert`).

        Raises:
            KeyError: the table is empty.
        """
        slot = self._oldest
        if slot == _NONE:
            raise KeyError("the table is empty")
        newer = self._newer[slot]
        self._oldest = newer
        if newer != _NONE:
            self._older[newer] = _NONE
        else:
            self._newest = _NONE
        self._unindex(slot)
        self._newer[slot] = self._free
        self._free = slot
        self._size -= 1
        return slot

    def _unindex(self, slot: int) -> None:
        """Empty the bucket of `slot`, moving back the keys after it in its probe run that
        could not otherwise be found past the emptied bucket (backward-shift deletion)."""
        buckets, buckets_n, homes = self._buckets, self._buckets_n, self._homes
        hole = homes[slot]
        while buckets[hole] != slot:
            hole = hole + 1 if hole + 1 < buckets_n else 0
        bucket = hole
        while True:
            bucket = bucket + 1 if bucket + 1 < buckets_n else 0
            moved = buckets[bucket]
            if moved == _NONE:
                break
            home = homes[moved]
            # it fills the hole if its lookups pass there: the hole lies from its home on,
            # before its bucket (counting around the end of the table)
            if (hole - home) % buckets_n < (bucket - home) % buckets_n:
                buckets[hole] = moved
                hole = bucket
        buckets[hole] = _NONE

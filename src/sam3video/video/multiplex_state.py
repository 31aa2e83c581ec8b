"""Bucket bookkeeping of the SAM 3.1 multiplex tracker.

SAM 3.1 tracks objects in *buckets* of ``multiplex_count`` slots (16 in Meta's model): one
shared tracker pass per bucket instead of one per object. `MultiplexState` records which object
sits in which slot and moves per-object tensors between the two layouts:

- data space: ``(N, ...)``, row ``i`` = object index ``i`` (``0 <= i < N``);
- mux space: ``(num_buckets, multiplex_count, ...)``, empty slots hold zeros.

The rules (which slot a new object takes, what removal does to the other objects' indices)
follow the official ``MultiplexState`` of ``sam3/model/multiplex_utils.py`` exactly, so that a
tracker built on this class puts every object in the same slot as the official one (the slot
decides which learned per-slot embedding an object gets, hence its outputs). Proven against the
official class by ``tests/test_multiplex_state.py``.

Slot values:

- ``>= 0``: the object index of a live object;
- `PADDING` (-1): an empty slot, filled by later additions;
- `REMOVED` (-1116): a slot whose object was removed. It is *not* refilled: the official
  tracker keeps such a slot's memories in the bucket's past frames, so reusing it would mix two
  objects' histories. A bucket whose slots are all empty or removed is dropped.

Differences from the official class, none of them visible in the assignments:

- mux/demux gather and scatter rows by index instead of multiplying by dense 0/1 matrices:
  O(N) instead of O(N * num_buckets * multiplex_count) work, any dtype (integer and bool too),
  and a non-finite value stays in its own row (``0 * inf`` would turn a whole dense column
  into NaN);
- no device or dtype at construction: index tensors are made on the device of the input;
- removing every object leaves an *empty* state (``num_buckets == 0``) that accepts new
  objects, where the official state becomes unusable (``assignments = None``);
- invalid calls raise `InvalidInputError` before anything changes (the official asserts,
  sometimes after having changed the state).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sam3video.errors import InvalidInputError

PADDING = -1
REMOVED = -1116


class MultiplexState:
    """Which object sits in which slot of which bucket.

    Args:
        assignments: one list per bucket, each of ``multiplex_count`` slot values (object
            indices ``0..N-1`` once each, `PADDING`, `REMOVED`). Copied.
        capacity: how many slots of a bucket may be used (``allowed_bucket_capacity`` of the
            official; ``<= multiplex_count``). Slots past it always stay `PADDING`.
        multiplex_count: slots per bucket; needed only when ``assignments`` is empty.
        object_ids: optional user-facing id of each object index (``len == N``), carried along
            through additions and removals.
    """

    def __init__(
        self,
        assignments: Sequence[Sequence[int]],
        capacity: int | None = None,
        *,
        multiplex_count: int | None = None,
        object_ids: Sequence[int] | None = None,
    ) -> None:
        buckets = [list(map(int, b)) for b in assignments]
        if multiplex_count is None:
            if not buckets:
                raise InvalidInputError(
                    "multiplex_count: expected it when assignments is empty, got None"
                )
            multiplex_count = len(buckets[0])
        if multiplex_count < 1:
            raise InvalidInputError(f"multiplex_count: expected >= 1, got {multiplex_count}")
        capacity = multiplex_count if capacity is None else int(capacity)
        if not 1 <= capacity <= multiplex_count:
            raise InvalidInputError(
                f"capacity: expected 1..{multiplex_count} (multiplex_count), got {capacity}"
            )
        self.multiplex_count = int(multiplex_count)
        self.capacity = capacity
        self._set(buckets, None if object_ids is None else list(object_ids))

    @classmethod
    def for_objects(
        cls,
        num_objects: int,
        multiplex_count: int,
        capacity: int | None = None,
        *,
        object_ids: Sequence[int] | None = None,
    ) -> MultiplexState:
        """Objects ``0..num_objects-1`` packed in order into ``ceil(N / capacity)`` buckets.

        The official controller's layout at inference (``get_state(random=False)`` without
        full shuffle): object ``i`` in bucket ``i // capacity``, slot ``i % capacity``.
        """
        capacity = multiplex_count if capacity is None else capacity
        if num_objects < 0:
            raise InvalidInputError(f"num_objects: expected >= 0, got {num_objects}")
        if not 1 <= capacity <= multiplex_count:
            raise InvalidInputError(
                f"capacity: expected 1..{multiplex_count} (multiplex_count), got {capacity}"
            )
        buckets = []
        for start in range(0, num_objects, capacity):
            filled = list(range(start, min(start + capacity, num_objects)))
            buckets.append(filled + [PADDING] * (multiplex_count - len(filled)))
        return cls(buckets, capacity, multiplex_count=multiplex_count, object_ids=object_ids)

    # ------------------------------------------------------------------ bookkeeping
    def _set(self, buckets: list[list[int]], object_ids: list[int] | None) -> None:
        """Validate and install ``buckets``; rebuild the slot index tables."""
        seen: set[int] = set()
        for b, bucket in enumerate(buckets):
            if len(bucket) != self.multiplex_count:
                raise InvalidInputError(
                    f"assignments[{b}]: expected {self.multiplex_count} slots, got {len(bucket)}"
                )
            used = sum(1 for v in bucket if v != PADDING)
            if used > self.capacity:
                raise InvalidInputError(
                    f"assignments[{b}]: expected at most {self.capacity} used slots "
                    f"(capacity), got {used}"
                )
            for v in bucket:
                if v < 0 and v not in (PADDING, REMOVED):
                    raise InvalidInputError(
                        f"assignments[{b}]: expected object indices >= 0, {PADDING} (padding) "
                        f"or {REMOVED} (removed), got {v}"
                    )
                if v >= 0:
                    if v in seen:
                        raise InvalidInputError(
                            f"assignments: object index {v} appears more than once"
                        )
                    seen.add(v)
        if seen != set(range(len(seen))):
            raise InvalidInputError(
                f"assignments: expected object indices 0..{len(seen) - 1}, got {sorted(seen)}"
            )
        if object_ids is not None and len(object_ids) != len(seen):
            raise InvalidInputError(
                f"object_ids: expected one per object ({len(seen)}), got {len(object_ids)}"
            )
        self.assignments = buckets
        self.object_ids = object_ids
        # slot_of[i] = flat slot (bucket * multiplex_count + slot) of object index i
        slot_of = [0] * len(seen)
        for b, bucket in enumerate(buckets):
            for s, v in enumerate(bucket):
                if v >= 0:
                    slot_of[v] = b * self.multiplex_count + s
        self._slot_of = slot_of
        self._index_cache: dict[torch.device, torch.Tensor] = {}

    @property
    def num_buckets(self) -> int:
        return len(self.assignments)

    @property
    def num_objects(self) -> int:
        """Live objects, ``N`` (``total_valid_entries`` of the official)."""
        return len(self._slot_of)

    @property
    def num_used_slots(self) -> int:
        """Slots that are not `PADDING` (live or removed; ``total_non_padding_entries``)."""
        return sum(1 for bucket in self.assignments for v in bucket if v != PADDING)

    @property
    def available_slots(self) -> int:
        """Slots additions can fill without a new bucket."""
        return self.num_buckets * self.capacity - self.num_used_slots

    def position(self, index: int) -> tuple[int, int]:
        """``(bucket, slot)`` of object index ``index``."""
        if not 0 <= index < self.num_objects:
            raise InvalidInputError(
                f"index: expected an object index in 0..{self.num_objects - 1}, got {index}"
            )
        return divmod(self._slot_of[index], self.multiplex_count)

    def next_indices(self, count: int) -> list[int]:
        """The object indices the next ``count`` additions take: ``N..N+count-1``."""
        return list(range(self.num_objects, self.num_objects + count))

    def copy(self) -> MultiplexState:
        return MultiplexState(
            self.assignments,
            self.capacity,
            multiplex_count=self.multiplex_count,
            object_ids=self.object_ids,
        )

    def add_objects(
        self,
        count: int,
        *,
        object_ids: Sequence[int] | None = None,
        allow_new_buckets: bool = True,
        prefer_new_buckets: bool = False,
    ) -> list[int]:
        """Add ``count`` objects; they get indices ``N..N+count-1``, returned.

        Fill-first, as the official: empty slots of the existing buckets in bucket order, then
        slot order (slots below ``capacity`` only), then new buckets, each filled from slot 0.
        With ``prefer_new_buckets`` all of them go to new buckets. `REMOVED` slots are never
        reused. ``object_ids`` (one per new object) is required iff the state carries ids.
        """
        if count < 0:
            raise InvalidInputError(f"count: expected >= 0, got {count}")
        if (object_ids is None) != (self.object_ids is None):
            raise InvalidInputError(
                "object_ids: expected them iff the state carries object ids "
                f"(state has ids: {self.object_ids is not None})"
            )
        if object_ids is not None and len(object_ids) != count:
            raise InvalidInputError(
                f"object_ids: expected {count} (one per new object), got {len(object_ids)}"
            )
        if prefer_new_buckets and not allow_new_buckets:
            raise InvalidInputError(
                "prefer_new_buckets: expected allow_new_buckets=True with it, got False"
            )
        if not allow_new_buckets and (prefer_new_buckets or count > self.available_slots):
            raise InvalidInputError(
                f"count: expected at most {self.available_slots} (free slots, new buckets "
                f"not allowed), got {count}"
            )
        new = self.next_indices(count)
        if count == 0:
            return new
        buckets = [list(b) for b in self.assignments]
        pending = iter(new)
        left = count
        if not prefer_new_buckets:
            for bucket in buckets:
                for s in range(self.capacity):
                    if left and bucket[s] == PADDING:
                        bucket[s] = next(pending)
                        left -= 1
                if not left:
                    break
        while left:
            take = min(left, self.capacity)
            bucket = [next(pending) for _ in range(take)]
            buckets.append(bucket + [PADDING] * (self.multiplex_count - take))
            left -= take
        ids = None if self.object_ids is None else self.object_ids + list(object_ids or [])
        self._set(buckets, ids)
        return new

    def remove_objects(self, indices: Sequence[int], *, strict: bool = True) -> list[int]:
        """Remove object indices; return the indices (before removal) of the kept buckets.

        As the official: each removed object's slot becomes `REMOVED`; buckets left with no
        live object are dropped; the surviving objects are renumbered ``0..N'-1`` keeping
        their order (and their ``object_ids`` follow). With ``strict`` an index that is not
        a live object is an error; otherwise it is ignored. Use the returned list to drop
        the same buckets from tensors kept in mux space (``x[kept]``).
        """
        indices = [int(i) for i in indices]
        live = [i for i in indices if 0 <= i < self.num_objects]
        if strict and len(live) != len(indices):
            bad = [i for i in indices if not 0 <= i < self.num_objects]
            raise InvalidInputError(
                f"indices: expected object indices in 0..{self.num_objects - 1}, got {bad}"
            )
        gone = set(live)
        buckets = [[REMOVED if v in gone else v for v in b] for b in self.assignments]
        kept = [b for b, bucket in enumerate(buckets) if any(v >= 0 for v in bucket)]
        survivors = [i for i in range(self.num_objects) if i not in gone]
        renumber = {old: new for new, old in enumerate(survivors)}
        buckets = [[renumber.get(v, v) for v in buckets[b]] for b in kept]
        ids = None if self.object_ids is None else [self.object_ids[i] for i in survivors]
        self._set(buckets, ids)
        return kept

    # ------------------------------------------------------------------ tensors
    def _slots(self, device: torch.device) -> torch.Tensor:
        """``(N,)`` int64 flat slot of each object index, on ``device`` (cached)."""
        index = self._index_cache.get(device)
        if index is None:
            index = torch.tensor(self._slot_of, dtype=torch.long, device=device)
            self._index_cache[device] = index
        return index

    def mux(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, ...)`` -> ``(num_buckets, multiplex_count, ...)``, zeros in unused slots."""
        if x.shape[0] != self.num_objects:
            raise InvalidInputError(
                f"x: expected {self.num_objects} rows (one per object), got {x.shape[0]}"
            )
        out = x.new_zeros((self.num_buckets * self.multiplex_count, *x.shape[1:]))
        out[self._slots(x.device)] = x
        return out.view(self.num_buckets, self.multiplex_count, *x.shape[1:])

    def demux(self, x: torch.Tensor) -> torch.Tensor:
        """``(num_buckets, multiplex_count, ...)`` -> ``(N, ...)``; unused slots dropped."""
        if tuple(x.shape[:2]) != (self.num_buckets, self.multiplex_count):
            raise InvalidInputError(
                f"x: expected leading shape ({self.num_buckets}, {self.multiplex_count}) "
                f"(num_buckets, multiplex_count), got {tuple(x.shape[:2])}"
            )
        flat = x.reshape(self.num_buckets * self.multiplex_count, *x.shape[2:])
        return flat.index_select(0, self._slots(x.device))

    def slots(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``(num_buckets, multiplex_count)`` int64: the object index in each slot, -1 for an
        empty or removed slot (the layout `sam3video.model.tracker_31` takes)."""
        table = torch.tensor(self.assignments, dtype=torch.long, device=device)
        return table.clamp_min(-1).view(self.num_buckets, self.multiplex_count)

    def valid_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``(num_buckets, multiplex_count)`` bool, True where a live object sits."""
        mask = torch.zeros(self.num_buckets * self.multiplex_count, dtype=torch.bool, device=device)
        mask[self._slots(mask.device)] = True
        return mask.view(self.num_buckets, self.multiplex_count)

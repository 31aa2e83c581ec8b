"""Bookkeeping of the objects of one video session across frames (`TrackerMetadata`).

One `TrackerMetadata` holds what the video planner (`sam3video.video.planner`) remembers
between frames: the tracked object ids in global order (the tracker states' object lists
concatenated), the id counter, each object's stored score and per-frame tracker scores, the
last frame on which each object was occluded, and the hotstart data (first frame, unmatched
counts, keep-alive counters, duplicate-pair counts, removed ids, per-frame suppressed ids).

It persists across forward and backward passes and later calls; only a session reset starts a
new one. `plan_frame` never changes the metadata it is given: it returns a new one for the next
frame. The per-frame score tables are shared between successive copies and are replaced, never
changed in place (copy on write), so copying stays cheap however long the video is.

Compact where the official dicts grow with the video (same decisions, less memory):

- unmatched frames: the official code keeps a list of frame indices per object but only ever
  reads its length, so a count is kept (`unmatched_count`); the same for the frames on which
  two objects matched one detection (`duplicate_count`).
- per-frame suppressed ids: only frames with a non-empty set are stored (`suppressed`);
  `suppressed_at` answers an empty set for the others.
- per-frame tracker scores (`frame_scores`) are kept for every processed frame: output
  post-processing (fetch mode) may revisit any frame. One float per object and frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sam3video.errors import InvalidInputError, UnknownIdError

# Score given to objects removed by the hotstart rules (stored and frame-wise).
REMOVED_SCORE = -1e4
# Score of an object created or refined by clicks (stored and on the click frame).
CLICKED_SCORE = 1.0


@dataclass
class TrackerMetadata:
    """Per-session object bookkeeping (see module doc). Field names say what they hold.

    obj_ids: tracked ids in global order. max_obj_id: largest id ever given (-1: none); ids
    are never reused. obj_id_to_score: stored score (birth detection probability, 1.0 for
    clicked objects, -1e4 once removed by hotstart). frame_scores: frame -> {obj_id: tracker
    score on that frame}. last_occluded: obj_id -> last frame its mask was empty or suppressed.
    first_frame: obj_id -> birth frame (detector births only). unmatched_count: obj_id ->
    number of frames it was non-empty but matched no detection (cumulative, a frame processed
    twice counts twice). keep_alive: obj_id -> keep-alive counter. duplicate_count:
    (reference_id, obj_id) -> frames on which both matched one detection. removed_ids: ids
    removed by hotstart (only grows, except for a click on that id). suppressed: frame ->
    ids whose output is hidden on that frame (non-empty sets only).
    """

    obj_ids: list[int] = field(default_factory=list)
    max_obj_id: int = -1
    obj_id_to_score: dict[int, float] = field(default_factory=dict)
    frame_scores: dict[int, dict[int, float]] = field(default_factory=dict)
    last_occluded: dict[int, int] = field(default_factory=dict)
    first_frame: dict[int, int] = field(default_factory=dict)
    unmatched_count: dict[int, int] = field(default_factory=dict)
    keep_alive: dict[int, int] = field(default_factory=dict)
    duplicate_count: dict[tuple[int, int], int] = field(default_factory=dict)
    removed_ids: set[int] = field(default_factory=set)
    suppressed: dict[int, frozenset[int]] = field(default_factory=dict)

    @property
    def num_objects(self) -> int:
        return len(self.obj_ids)

    def copy(self) -> TrackerMetadata:
        """An independent copy (per-frame tables are shared: they are replaced, not edited)."""
        return TrackerMetadata(
            obj_ids=list(self.obj_ids),
            max_obj_id=self.max_obj_id,
            obj_id_to_score=dict(self.obj_id_to_score),
            frame_scores=dict(self.frame_scores),
            last_occluded=dict(self.last_occluded),
            first_frame=dict(self.first_frame),
            unmatched_count=dict(self.unmatched_count),
            keep_alive=dict(self.keep_alive),
            duplicate_count=dict(self.duplicate_count),
            removed_ids=set(self.removed_ids),
            suppressed=dict(self.suppressed),
        )

    # -- concept groups -------------------------------------------------------------------------
    # Several concepts plan their objects apart (association, births, hotstart, suppression per
    # concept). A group is the set of ids (ever) of one concept; `subset` gives the planner
    # its view, `merged` takes the planner's result back. Shared tables (frame scores,
    # suppressed, removed ids, the id counter) pass through whole: the planner only adds to them.
    _PER_OBJECT = (
        "obj_id_to_score",
        "last_occluded",
        "first_frame",
        "unmatched_count",
        "keep_alive",
    )

    def subset(self, group: set[int]) -> TrackerMetadata:
        """The metadata of the objects in ``group`` (a copy) with the shared tables."""
        out = TrackerMetadata(
            obj_ids=[i for i in self.obj_ids if i in group],
            max_obj_id=self.max_obj_id,
            frame_scores=dict(self.frame_scores),
            duplicate_count={
                k: v for k, v in self.duplicate_count.items() if k[0] in group and k[1] in group
            },
            removed_ids=set(self.removed_ids),
            suppressed=dict(self.suppressed),
        )
        for name in self._PER_OBJECT:
            setattr(out, name, {k: v for k, v in getattr(self, name).items() if k in group})
        return out

    def merged(self, planned: TrackerMetadata, group: set[int]) -> TrackerMetadata:
        """This metadata with the objects of ``group`` replaced by ``planned`` (a planner's
        result for `subset(group)`, whose new ids join the group)."""
        group = group | set(planned.obj_ids)
        out = planned.copy()
        out.obj_ids = [i for i in self.obj_ids if i not in group] + list(planned.obj_ids)
        out.duplicate_count = {
            k: v for k, v in self.duplicate_count.items() if not (k[0] in group and k[1] in group)
        } | planned.duplicate_count
        for name in self._PER_OBJECT:
            mine = {k: v for k, v in getattr(self, name).items() if k not in group}
            setattr(out, name, mine | getattr(planned, name))
        return out

    # -- per-frame tables -----------------------------------------------------------------------
    def frame_tracker_scores(self, frame_idx: int) -> Mapping[int, float]:
        """``{obj_id: tracker score}`` of one frame (empty if the frame has none). Read only."""
        return self.frame_scores.get(frame_idx, {})

    def set_frame_scores(self, frame_idx: int, scores: Mapping[int, float]) -> None:
        """Set (add or overwrite) tracker scores of ``frame_idx`` (copy on write)."""
        if not scores:
            return
        table = dict(self.frame_scores.get(frame_idx, {}))
        table.update((int(k), float(v)) for k, v in scores.items())
        self.frame_scores[frame_idx] = table

    def suppressed_at(self, frame_idx: int) -> frozenset[int]:
        """Ids whose output is hidden on ``frame_idx`` (keep-alive suppression; off by default)."""
        return self.suppressed.get(frame_idx, frozenset())

    def add_suppressed(self, frame_idx: int, obj_ids: Iterable[int]) -> None:
        ids = frozenset(obj_ids)
        if ids:
            self.suppressed[frame_idx] = self.suppressed_at(frame_idx) | ids

    # -- user actions ---------------------------------------------------------------------------
    def register_click(self, obj_id: int, frame_idx: int) -> bool:
        """Book a click on ``obj_id`` at ``frame_idx``; returns True if the id is new.

        A new id is appended to the global order (its tracker state is the last one) and may
        raise ``max_obj_id``. For new and existing ids alike: stored score and this frame's
        tracker score become 1.0, and the id leaves ``removed_ids`` and every suppressed set.
        The object cap is the caller's check (`can_add_object`).
        """
        obj_id = int(obj_id)
        is_new = obj_id not in self.obj_ids
        if is_new:
            self.obj_ids.append(obj_id)
            self.max_obj_id = max(self.max_obj_id, obj_id)
        self.obj_id_to_score[obj_id] = CLICKED_SCORE
        self.set_frame_scores(frame_idx, {obj_id: CLICKED_SCORE})
        self.removed_ids.discard(obj_id)
        self.suppressed = {
            f: ids - {obj_id} for f, ids in self.suppressed.items() if ids - {obj_id}
        }
        return is_new

    def can_add_object(self, max_num_objects: int) -> bool:
        """Whether one more object fits under the cap (clicks on new ids check this first)."""
        return self.num_objects < max_num_objects

    def remove_object(self, obj_id: int) -> None:
        """A user removal: the id leaves the global order and the stored scores.

        Hotstart data, frame-wise scores, last-occluded and ``max_obj_id`` stay (ids are not
        reused). Raises `UnknownIdError` for an id that is not tracked.
        """
        obj_id = int(obj_id)
        if obj_id not in self.obj_ids:
            raise UnknownIdError(
                f"obj_id: expected one of the tracked ids {self.obj_ids}, got {obj_id}"
            )
        self.obj_ids.remove(obj_id)
        self.obj_id_to_score.pop(obj_id, None)

    def index_of(self, obj_id: int) -> int:
        """Position of ``obj_id`` in the global order."""
        try:
            return self.obj_ids.index(int(obj_id))
        except ValueError:
            raise UnknownIdError(
                f"obj_id: expected one of the tracked ids {self.obj_ids}, got {obj_id}"
            ) from None

    def check_consistent(self, num_tracked: int, name: str = "trk_masks") -> None:
        """Raise if a tracker output of ``num_tracked`` objects does not fit ``obj_ids``."""
        if num_tracked != len(self.obj_ids):
            raise InvalidInputError(
                f"{name}: expected one entry per tracked object ({len(self.obj_ids)}, ids "
                f"{self.obj_ids}), got {num_tracked}"
            )

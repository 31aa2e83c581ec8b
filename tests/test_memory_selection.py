"""Memory selection and retention are one rule (`MemoryRule`): the frames a bounded memory
keeps always cover what the memory selection can pick in the usual flows.

Pure index arithmetic (no model): random tracker settings, random videos, random passes
starting at prompted frames in either direction, random selection scores and prompted frames
added on a frame tracked for the first time (SAM 3's reconditioning). A store trimmed to
`MemoryRule.retained` after every step must give every step exactly the plan of a store that
keeps everything.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sam3video.model.memory_selection import MemoryRule

THRESHOLD = 0.01


def scan_frame_filter(rule: MemoryRule, frame_idx: int, scores: dict, n: int, reverse: bool):
    """The official scan, frame by frame over the whole video (the reference)."""
    if (frame_idx == 0 and not reverse) or (frame_idx == n - 1 and reverse):
        return []
    max_num = min(n, rule.max_obj_ptrs_in_encoder)
    r = rule.memory_temporal_stride
    if reverse:
        scan, adjacent = range(frame_idx + 1, n, r), frame_idx + 1
    else:
        scan, adjacent = range(frame_idx - 1, 0, -r), frame_idx - 1
    valid = []
    for i in scan:
        score = scores.get(i)
        if score is None:
            continue
        if score > rule.memory_selection_threshold:
            valid.insert(0, i)
        if len(valid) >= max_num - 1:
            break
    if adjacent not in valid:
        valid.append(adjacent)
    return valid


rules = st.builds(
    MemoryRule,
    num_maskmem=st.integers(1, 7),
    max_cond_frames_in_attn=st.sampled_from([-1, 2, 4]),
    # 1 would stop every scan at the first stored frame, qualifying or not (the official 16)
    max_obj_ptrs_in_encoder=st.integers(2, 16),
    memory_temporal_stride=st.integers(1, 3),
    use_memory_selection=st.booleans(),
    memory_selection_threshold=st.just(THRESHOLD),
)
# Selection scores: often below the threshold, so that selection skips frames.
scores = st.sampled_from([0.0, 0.005, 0.02, 0.3, 0.9])


@settings(max_examples=200, deadline=None)
@given(rule=rules, data=st.data())
def test_frame_filter_equals_the_frame_by_frame_scan(rule, data):
    n = data.draw(st.integers(1, 80), label="num_frames")
    stored = data.draw(st.sets(st.integers(0, n - 1), max_size=40), label="stored")
    table = {t: data.draw(st.one_of(st.none(), scores)) for t in sorted(stored)}
    frame = data.draw(st.integers(0, n - 1), label="frame")
    reverse = data.draw(st.booleans(), label="reverse")
    assert rule.frame_filter(frame, table, n, reverse) == scan_frame_filter(
        rule, frame, table, n, reverse
    )


@settings(max_examples=150, deadline=None)
@given(rule=rules, data=st.data())
def test_retained_frames_cover_what_selection_can_pick(rule, data):
    n = data.draw(st.integers(2, 70), label="num_frames")
    cond = data.draw(
        st.lists(st.integers(0, n - 1), min_size=1, max_size=3, unique=True), label="prompts"
    )
    full: dict[int, float] = {}  # keeps every tracked frame (an unbounded state)
    bounded: dict[int, float] = {}  # trimmed to `retained` after every step
    for _ in range(data.draw(st.integers(1, 4), label="passes")):
        start = data.draw(st.sampled_from(cond), label="start")
        reverse = data.draw(st.booleans(), label="reverse")
        length = data.draw(st.integers(0, n), label="length")
        end = max(start - length, 0) if reverse else min(start + length, n - 1)
        for frame in range(start, end + (-1 if reverse else 1), -1 if reverse else 1):
            if frame not in cond:
                plan = rule.plan(frame, cond, full, n, reverse)
                for ref in plan.spatial + plan.pointers:
                    if not ref.from_cond:
                        assert ref.frame in bounded, (frame, reverse, ref, sorted(bounded))
                assert rule.plan(frame, cond, bounded, n, reverse) == plan
                first_time = frame not in full
                # A frame tracked again keeps whether it qualifies (see the module doc of
                # sam3video.video.tracking: when it stops qualifying, selection may reach
                # further back than what was kept).
                score = data.draw(scores, label=f"score {frame}") if first_time else full[frame]
                full[frame] = bounded[frame] = score
                if first_time and data.draw(st.integers(0, 9), label="recondition") == 0:
                    # A detection re-prompts the frame just tracked (SAM 3 reconditions on
                    # detect steps, the first time a frame is reached): it becomes a
                    # conditioning frame.
                    cond.append(frame)
                    del full[frame], bounded[frame]
            last = (frame, reverse)
            keep = rule.retained(cond, bounded, n, last)
            assert keep <= set(bounded)
            bounded = {t: s for t, s in bounded.items() if t in keep}


def test_retained_keeps_less_than_everything_on_a_long_pass():
    """The bound is a bound: a long forward pass keeps a window, not the whole video."""
    rule = MemoryRule(max_obj_ptrs_in_encoder=16)
    stored = {t: 0.5 for t in range(1, 500)}
    keep = rule.retained([0], stored, 1000, (499, False))
    assert max(keep) == 499 and len(keep) <= 2 * 16
    # a pass backward from the prompted frame 0 would select the 15 nearest above it; the
    # next frame reads the 15 frames the pointers reach behind frame 500
    assert keep == set(range(1, 16)) | set(range(485, 500))
    # at the video's end the window stays (as if the video went on)
    assert rule.retained([0], stored, 500, (499, False)) == keep


def test_retained_with_a_huge_horizon_is_fast():
    """Live sessions track with an open-ended horizon: the scan walks the store only."""
    rule = MemoryRule()
    stored = {t: 0.5 for t in range(100, 130)}
    keep = rule.retained([99], stored, 2**31 - 1, (129, False))
    assert keep == set(range(100, 130))

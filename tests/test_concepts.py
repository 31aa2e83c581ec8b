"""Several concepts in one session (`text` as a list, ``concept_mode``, ``remove_concept``).

Parity with ourselves on the tiny model (synthetic weights): a session prompted with two
concepts at once gives, per concept, the objects, masks and scores of two single-concept
sessions; adding a concept keeps the existing objects, ids and clicks; removing one leaves
the other untouched.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from sam3video import InvalidInputError, UnknownIdError

pytestmark = pytest.mark.usefixtures("one_thread")

N, H, W = 12, 60, 80
CONCEPTS = ["person", "car"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("concepts")
    rng = np.random.default_rng(5)
    base = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    for i in range(N):
        frame = np.roll(base, 2 * i, axis=1)
        frame[10 + i : 30 + i, 20:40] = (230, 40, 40)
        frame[35:55, 50 - i : 70 - i] = (40, 40, 230)
        Image.fromarray(frame).save(folder / f"{i:05d}.jpg", quality=95)
    return str(folder)


def _start(p, clip):
    return p.handle_request({"type": "start_session", "resource_path": clip})["session_id"]


def _prompt(p, sid, text, frame=0, **kw):
    return p.handle_request(
        {"type": "add_prompt", "session_id": sid, "frame_index": frame, "text": text, **kw}
    )


def _run(p, sid, direction="forward"):
    stream = p.handle_stream_request(
        {"type": "propagate_in_video", "session_id": sid, "propagation_direction": direction}
    )
    return {r["frame_index"]: r["outputs"] for r in stream}


def _by_concept(outputs, concept):
    """A frame's objects of one concept, in id order: [(mask, score)]."""
    return [(o["mask"], o["score"]) for _, o in sorted(outputs.items()) if o["concept"] == concept]


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def _assert_same_objects(got, expected, where):
    assert len(got) == len(expected), f"{where}: {len(got)} vs {len(expected)} objects"
    for (m1, s1), (m2, s2) in zip(got, expected):
        assert _iou(m1, m2) >= 0.99, where
        assert s1 == pytest.approx(s2, abs=1e-4), where


def test_two_concepts_in_one_pass_equal_two_sessions(predictor, clip):
    sid = _start(predictor, clip)
    first = _prompt(predictor, sid, CONCEPTS)["outputs"]
    together = _run(predictor, sid)
    assert predictor.session_info(sid)["concepts"] == CONCEPTS
    found = {o["concept"] for out in together.values() for o in out.values()}
    assert found == set(CONCEPTS), "the tiny model finds both concepts on this clip"
    for concept in CONCEPTS:
        single = _start(predictor, clip)
        alone_first = _prompt(predictor, single, concept)["outputs"]
        alone = _run(predictor, single)
        assert all(o["concept"] == concept for out in alone.values() for o in out.values())
        _assert_same_objects(
            _by_concept(first, concept), _by_concept(alone_first, concept), f"{concept}, prompt"
        )
        assert sorted(together) == sorted(alone)
        for f in alone:
            _assert_same_objects(
                _by_concept(together[f], concept), _by_concept(alone[f], concept), f"frame {f}"
            )


def test_adding_a_concept_keeps_objects_ids_and_clicks(predictor, clip):
    def base_session():
        sid = _start(predictor, clip)
        _prompt(predictor, sid, "person")
        _run(predictor, sid)
        predictor.handle_request(
            {
                "type": "add_prompt",
                "session_id": sid,
                "frame_index": 2,
                "points": [[70, 50]],
                "point_labels": [1],
            }
        )
        return sid

    before_sid = base_session()
    before = _run(predictor, before_sid)
    sid = base_session()
    ids_before = predictor.session_info(sid)["obj_ids"]
    clicked = max(ids_before)
    _prompt(predictor, sid, "car", frame=0, concept_mode="add")
    info = predictor.session_info(sid)
    assert info["concepts"] == ["person", "car"]
    assert info["obj_ids"][: len(ids_before)] == ids_before  # kept, same ids
    after = _run(predictor, sid)
    for f, outputs in before.items():
        kept = {i: o for i, o in after[f].items() if o["concept"] != "car"}
        assert sorted(kept) == sorted(outputs), f"frame {f}"
        for i, o in outputs.items():
            assert np.array_equal(kept[i]["mask"], o["mask"]), f"frame {f}, object {i}"
    assert any(clicked in out and out[clicked]["concept"] is None for out in after.values())
    assert any(o["concept"] == "car" for out in after.values() for o in out.values())


def test_removing_a_concept_leaves_the_other_untouched(predictor, clip):
    sid = _start(predictor, clip)
    _prompt(predictor, sid, CONCEPTS)
    both = _run(predictor, sid)
    predictor.handle_request({"type": "remove_concept", "session_id": sid, "text": "car"})
    assert predictor.session_info(sid)["concepts"] == ["person"]
    left = _run(predictor, sid)
    for f, outputs in both.items():
        people = {i: o for i, o in outputs.items() if o["concept"] == "person"}
        assert sorted(left[f]) == sorted(people), f"frame {f}"
        for i, o in people.items():
            assert np.array_equal(left[f][i]["mask"], o["mask"])


def test_concept_requests_are_validated_and_change_nothing(predictor, clip):
    sid = _start(predictor, clip)
    _prompt(predictor, sid, "person")
    frames = _run(predictor, sid)
    info = predictor.session_info(sid)
    for bad, error, field in (
        ({"text": ["car", ""]}, InvalidInputError, "text[1]"),
        ({"text": "car", "concept_mode": "merge"}, InvalidInputError, "concept_mode"),
        ({"text": "person", "concept_mode": "add"}, InvalidInputError, "text"),  # already there
        (
            {"text": ["a", "b"], "bounding_boxes": [[0.5, 0.5, 0.2, 0.2]]},
            InvalidInputError,
            "bounding_boxes",
        ),
    ):
        with pytest.raises(error, match=f"^{field.replace('[', '.').replace(']', '.')}"):
            predictor.handle_request(
                {"type": "add_prompt", "session_id": sid, "frame_index": 0, **bad}
            )
    with pytest.raises(UnknownIdError, match="^text: unknown concept 'dog'"):
        predictor.handle_request({"type": "remove_concept", "session_id": sid, "text": "dog"})
    assert predictor.session_info(sid) == info
    again = _run(predictor, sid)
    assert sorted(again) == sorted(frames)
    for f in frames:
        assert sorted(again[f]) == sorted(frames[f])


def test_replace_mode_is_the_seed_behaviour(predictor, clip):
    sid = _start(predictor, clip)
    _prompt(predictor, sid, "person")
    _prompt(predictor, sid, "car")  # replace (default): the person objects are gone
    info = predictor.session_info(sid)
    assert info["concepts"] == ["car"]
    outputs = _run(predictor, sid)
    assert all(o["concept"] == "car" for out in outputs.values() for o in out.values())


def test_ytvis_export_has_one_category_per_concept(predictor, clip, tmp_path):
    from sam3video.io.export.ytvis import YtvisWriter, read_ytvis

    sid = _start(predictor, clip)
    first = _prompt(predictor, sid, CONCEPTS)
    frames = _run(predictor, sid)
    frames[0] = frames.get(0) or first["outputs"]
    path = tmp_path / "results.json"
    with YtvisWriter(path, "clip", H, W, N, text=CONCEPTS) as writer:
        for f, outputs in frames.items():
            writer.write(f, outputs)
    data = read_ytvis(path)
    assert [c["name"] for c in data["categories"]] == CONCEPTS
    concept_of = {i: o["concept"] for out in frames.values() for i, o in out.items()}
    for ann in data["annotations"]:
        assert ann["noun_phrase"] == concept_of[ann["obj_id"]]
        assert ann["category_id"] == CONCEPTS.index(ann["noun_phrase"]) + 1
    counts = {p["noun_phrase"]: p["num_masklets"] for p in data["video_np_pairs"]}
    for concept in CONCEPTS:
        assert counts[concept] == sum(a["noun_phrase"] == concept for a in data["annotations"])


def test_cli_text_repeated_tracks_several_concepts(clip, tmp_path):
    from sam3video.cli import main
    from sam3video.io.export.ytvis import read_ytvis

    argv = ["track", clip, "--model", "tiny", "--text", "person", "--text", "car"]
    argv += ["--direction", "forward", "--max-frames", "4", "--out", str(tmp_path)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(argv) == 0
    data = read_ytvis(tmp_path / "results.json")
    assert [c["name"] for c in data["categories"]] == CONCEPTS
    assert {a["noun_phrase"] for a in data["annotations"]} == set(CONCEPTS)

"""SAM 3.1 with clicked objects packed into shared tracker states (``pack_clicked_objects``).

Ours, no official counterpart (docs/sam31_video_logic.md section 9): a new clicked object is
decoded alone exactly as officially, then joins a state of clicked objects that has the
frame stored and a free slot. Checked against the same session without packing (the official
layout, itself proven by tests/test_video31.py), on ``sam3.1-tiny`` (4 slots per bucket):
the replies are the same computation, the objects are found on the same frames, the states
and the per-frame bucket passes drop from ``N`` to ``ceil(N / 4)``, refinement and removal
of a packed object work, and the default is the official layout.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from test_video_parity import _clip

from sam3video.cli import main
from sam3video.cli.args import build_parser
from sam3video.errors import UnsupportedModelError
from sam3video.predictor import Sam3VideoPredictor
from sam3video.video.session31 import VideoSession31

NUM_FRAMES = 5


def _make(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Sam3VideoPredictor(device="cpu", dtype=torch.float32, **kwargs)


@pytest.fixture(scope="module")
def predictors():
    """``(unpacked, packed)`` predictors sharing one synthetic ``sam3.1-tiny`` model."""
    plain = _make(model_config="sam3.1-tiny")
    packed = _make(model_config="sam3.1-tiny", model=plain.model, pack_clicked_objects=True)
    return plain, packed


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder, _ = _clip(tmp_path_factory.mktemp("pack"))
    for path in sorted(folder.iterdir())[NUM_FRAMES:]:
        path.unlink()
    return str(folder)


class _BucketCounter:
    """Counts the buckets decoded per tracked frame (one memory-conditioned pass per bucket):
    wraps the model's ``condition_on_memory``, whose third argument is the bucket count."""

    def __init__(self, model) -> None:
        self.model = model
        self.per_call: list[int] = []

    def __enter__(self):
        inner = self.model.condition_on_memory

        def counted(vision, pos, num_buckets, *args, **kwargs):
            self.per_call.append(int(num_buckets))
            return inner(vision, pos, num_buckets, *args, **kwargs)

        self.model.condition_on_memory = counted
        return self

    def __exit__(self, *exc) -> None:
        del self.model.condition_on_memory  # back to the class method


def _session(predictor, clip):
    sid = predictor.handle_request({"type": "start_session", "resource_path": clip})["session_id"]
    return sid, predictor.get_session(sid)


def _click(predictor, sid, frame, point, obj_id=None, label=1):
    req = {
        "type": "add_prompt",
        "session_id": sid,
        "frame_index": frame,
        "points": [list(point)],
        "point_labels": [label],
    }
    if obj_id is not None:
        req["obj_id"] = obj_id
    return predictor.handle_request(req)


def _propagate(predictor, sid, start=0, direction="forward"):
    req = {
        "type": "propagate_in_video",
        "session_id": sid,
        "start_frame_index": start,
        "propagation_direction": direction,
    }
    return [(r["frame_index"], r["outputs"]) for r in predictor.handle_stream_request(req)]


def _points(session, n):
    h, w = session.video_size
    xs = np.linspace(0.15, 0.85, 3) * w
    ys = np.linspace(0.2, 0.8, math.ceil(n / 3)) * h
    return [(float(x), float(y)) for y in ys for x in xs][:n]


def _same_reply(a, b):
    assert a["frame_index"] == b["frame_index"]
    assert sorted(a["outputs"]) == sorted(b["outputs"])
    for i, out in a["outputs"].items():
        assert np.array_equal(out["mask"], b["outputs"][i]["mask"]), i
        assert out["score"] == pytest.approx(b["outputs"][i]["score"], abs=1e-6)


def _states(session):
    return [s for s in session.states if s.num_objects]


def _clicked_pair(predictors, clip, n):
    """Both sessions after ``n`` clicks on frame 0 (replies compared click by click)."""
    (plain, packed), out = predictors, []
    for predictor in (plain, packed):
        sid, session = _session(predictor, clip)
        replies = [_click(predictor, sid, 0, p) for p in _points(session, n)]
        out.append((predictor, sid, session, replies))
    for a, b in zip(out[0][3], out[1][3]):
        _same_reply(a, b)
    return out


@torch.inference_mode()
@pytest.mark.parametrize("n", [6])
def test_packed_clicks_share_states_and_track_like_unpacked(predictors, clip, n):
    (plain, psid, psession, _), (packed, ksid, ksession, _) = _clicked_pair(predictors, clip, n)
    m = ksession.model.tracker.model.multiplex_count
    assert m == 4 and isinstance(ksession, VideoSession31)
    assert len(_states(psession)) == n
    assert len(_states(ksession)) == math.ceil(n / m)
    assert sorted(i for s in _states(ksession) for i in s.obj_ids) == sorted(psession.obj_ids)
    assert sum(s.num_buckets for s in _states(ksession)) == math.ceil(n / m)
    passes = {}
    results = {}
    for name, predictor, sid in (("plain", plain, psid), ("packed", packed, ksid)):
        with _BucketCounter(predictor.model.tracker.model) as counter:
            results[name] = _propagate(predictor, sid)
        passes[name] = counter.per_call
    frames = [f for f, _ in results["plain"]]
    assert frames == [f for f, _ in results["packed"]] == list(range(NUM_FRAMES))
    # Every object has a tracked output on every frame in both sessions (the replies omit
    # empty masks, which with synthetic weights depend on the exact logits: the packed
    # objects are decoded jointly, so their masks differ from the unpacked ones).
    for f in frames:
        assert sorted(psession.ledger.get(f)) == sorted(ksession.ledger.get(f)), f"frame {f}"
        assert sorted(ksession.ledger.get(f)) == sorted(ksession.obj_ids), f"frame {f}"
    # Frame 0 is every state's prompted frame (stored outputs): frames 1.. are tracked, the
    # states batched into one pass per frame whose buckets are the states' buckets.
    assert sum(passes["plain"]) == n * (NUM_FRAMES - 1)
    assert sum(passes["packed"]) == math.ceil(n / m) * (NUM_FRAMES - 1)
    for predictor, sid in ((plain, psid), (packed, ksid)):
        predictor.handle_request({"type": "close_session", "session_id": sid})


@torch.inference_mode()
def test_packing_needs_the_frame_stored_and_a_free_slot(predictors, clip):
    """A click on a frame no clicked state has stored keeps a state of its own (its other
    objects would have no output there); the fifth object on one frame opens a new state; a
    refinement on a frame the object's shared state has not stored extracts it first."""
    _, packed = predictors
    sid, session = _session(packed, clip)
    pts = _points(session, 6)
    for p in pts[:4]:
        _click(packed, sid, 0, p)
    assert [s.num_objects for s in _states(session)] == [4]
    _click(packed, sid, 3, pts[4])  # frame 3 is stored by no state yet
    assert [s.num_objects for s in _states(session)] == [4, 1]
    _click(packed, sid, 3, pts[5])
    assert [s.num_objects for s in _states(session)] == [4, 2]
    # A refinement click where the packed object's state has no stored frame: the object
    # leaves for a state of its own first (the official extraction), then is refined there.
    host = _states(session)[0]
    obj_id = host.obj_ids[1]
    assert host.stored(2) is None
    reply = _click(packed, sid, 2, pts[0], obj_id)
    assert obj_id in reply["outputs"] and session._state_of(obj_id).obj_ids == [obj_id]
    assert [s.num_objects for s in _states(session)] == [3, 2, 1]
    packed.handle_request({"type": "close_session", "session_id": sid})


@torch.inference_mode()
def test_packed_refinement_and_removal(predictors, clip):
    (plain, psid, psession, _), (packed, ksid, ksession, _) = _clicked_pair(predictors, clip, 5)
    for predictor, sid in ((plain, psid), (packed, ksid)):
        _propagate(predictor, sid)
    target = ksession.obj_ids[1]
    host = ksession._state_of(target)
    assert host.num_objects == 4
    # Refinement on a frame the shared state has stored: decoded alone (the reply is the
    # unpacked one), written in place; the object stays packed.
    h, w = ksession.video_size
    refine = (0.5 * w, 0.5 * h)
    # The reply's masks pass the output non-overlap with the frame's other objects (tracked
    # outputs, which packing changes): the clicked object's decoded mask is compared.
    _click(plain, psid, 2, refine, target)
    _click(packed, ksid, 2, refine, target)
    assert torch.equal(psession.ledger.get(2)[target], ksession.ledger.get(2)[target])
    assert target in psession.ledger.get(2) and ksession.ledger.get(2)[target].any()
    assert ksession._state_of(target) is host and host.num_objects == 4
    assert host.is_cond_frame(2) and target in host.stored(2).conditioning
    assert len(_states(ksession)) == 2
    # Removal of a packed object: the others keep being tracked.
    gone = ksession.obj_ids[0]
    for predictor, sid in ((plain, psid), (packed, ksid)):
        predictor.handle_request({"type": "remove_object", "session_id": sid, "obj_id": gone})
    assert gone not in ksession.obj_ids and host.num_objects == 3
    results = [
        _propagate(p, s, start=2, direction="both") for p, s in ((plain, psid), (packed, ksid))
    ]
    assert [f for f, _ in results[0]] == [f for f, _ in results[1]]
    for f, b in results[1]:
        assert gone not in b, f"frame {f}"
        assert sorted(psession.ledger.get(f)) == sorted(ksession.ledger.get(f)), f"frame {f}"
        assert sorted(ksession.ledger.get(f)) == sorted(ksession.obj_ids), f"frame {f}"
    for predictor, sid in ((plain, psid), (packed, ksid)):
        predictor.handle_request({"type": "close_session", "session_id": sid})


def test_default_is_the_official_layout_and_sam3_refuses_packing(predictors):
    plain, packed = predictors
    assert plain.pack_clicked_objects is False and packed.pack_clicked_objects is True
    with pytest.raises(UnsupportedModelError, match="pack_clicked_objects"):
        _make(model_config="tiny", pack_clicked_objects=True)


def test_cli_pack_clicks_flag(clip, tmp_path, capsys):
    parser = build_parser()
    args = parser.parse_args(["track", "v.mp4", "--points", "1,2", "--model", "sam3.1-tiny"])
    assert args.pack_clicks is False
    args = parser.parse_args(["track", "v.mp4", "--points", "1,2", "--pack-clicks"])
    assert args.pack_clicks is True
    base = ["track", clip, "--points", "100,100", "--device", "cpu", "--quiet", "--pack-clicks"]
    out = tmp_path / "out"
    assert main([*base, "--model", "sam3.1-tiny", "--out", str(out)]) == 0
    assert (out / "results.json").exists()
    # A SAM 3 model has no buckets: the flag must go (a command-line error, exit 2).
    assert main([*base, "--model", "tiny", "--out", str(tmp_path / "out2")]) == 2
    assert "--pack-clicks: expected a SAM 3.1 model" in capsys.readouterr().err


def test_serve_pack_clicks_flag(capsys):
    from sam3video.server.cli import _load_predictor
    from sam3video.server.cli import main as serve_main

    parser = build_parser()
    args = parser.parse_args(["serve", "--model", "sam3.1-tiny", "--device", "cpu"])
    assert args.pack_clicks is False
    args = parser.parse_args(
        ["serve", "--model", "sam3.1-tiny", "--device", "cpu", "--pack-clicks"]
    )
    assert _load_predictor(args).pack_clicked_objects is True
    # A SAM 3 model: refused before the server starts, as a command-line error (exit 2).
    assert serve_main(["--model", "tiny", "--device", "cpu", "--pack-clicks"]) == 2
    assert "--pack-clicks: expected a SAM 3.1 model" in capsys.readouterr().err

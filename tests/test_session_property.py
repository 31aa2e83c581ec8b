"""A stateful property test of the session core (hypothesis ``RuleBasedStateMachine``).

Random interleavings of clicks, text and box prompts, removals, resets and propagations —
propagations closed early at random frames, streams made stale, requests that fail (invalid
fields, a prompt on an undecodable frame, a propagation that reaches it) — run on one session
("tested"). A second session ("reference") on the same clip receives only the requests that
succeeded, each propagation run to its end once.

Invariants:
- a propagation closed early and then asked again yields exactly what the reference's single
  uninterrupted propagation yields (frames, ids, masks, scores, boxes, and the same error);
- after every step a full propagation yields the same on both sessions;
- a failed request or a stale stream changes nothing (implied by the above).

The clip is 8 frames of 40x48 with an undecodable last frame, and the hotstart buffer is cut
to 3 frames so that early-closed propagations leave frames held in it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from PIL import Image

from sam3video.errors import DecodeError, Sam3VideoError, StaleStreamError
from sam3video.predictor import Sam3VideoPredictor

pytestmark = pytest.mark.usefixtures("one_thread")

N, H, W = 8, 40, 48
CORRUPT = N - 1
_STATE: dict = {}


def _setup(folder) -> tuple[Sam3VideoPredictor, str]:
    if "predictor" not in _STATE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = Sam3VideoPredictor(model_config="tiny", device="cpu")
        p.heuristics = replace(
            p.heuristics, hotstart_delay=3, hotstart_unmatch_thresh=2, hotstart_dup_thresh=2
        )
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(3)
        base = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        for i in range(N):
            path = folder / f"{i:05d}.jpg"
            if i == CORRUPT:
                path.write_bytes(b"\xff\xd8 damaged")
                continue
            frame = np.roll(base, 3 * i, axis=0)
            frame[5 + 2 * i : 20 + 2 * i, 10:25] = (240, 30, 30)
            Image.fromarray(frame).save(path, quality=95)
        _STATE.update(predictor=p, folder=str(folder))
    return _STATE["predictor"], _STATE["folder"]


def _outcome(stream, limit: int | None = None):
    """Frames of a stream as comparable data, plus the error type it ended with."""
    frames, error = [], None
    try:
        for k, r in enumerate(stream):
            frames.append(
                (
                    r["frame_index"],
                    {
                        i: (o["mask"].tobytes(), round(o["score"], 5), tuple(o["bbox"]))
                        for i, o in r["outputs"].items()
                    },
                )
            )
            if limit is not None and k + 1 >= limit:
                stream.close()
                break
    except Sam3VideoError as exc:
        error = type(exc).__name__
    return frames, error


frames_st = st.integers(0, N - 1)
xy_st = st.tuples(st.integers(0, W - 1), st.integers(0, H - 1))


class SessionMachine(RuleBasedStateMachine):
    @initialize()
    def start(self):
        self.p, folder = _setup(_STATE["tmp"])
        start = {"type": "start_session", "resource_path": folder}
        self.tested = self.p.handle_request(start)["session_id"]
        self.reference = self.p.handle_request(start)["session_id"]
        self.objects: list[int] = []

    def teardown(self):
        if hasattr(self, "p"):
            for sid in (self.tested, self.reference):
                self.p.handle_request({"type": "close_session", "session_id": sid})

    # -- requests: applied to the tested session, and to the reference when they succeed

    def _request(self, request: dict) -> dict | None:
        try:
            reply = self.p.handle_request({**request, "session_id": self.tested})
        except Sam3VideoError:
            return None
        again = self.p.handle_request({**request, "session_id": self.reference})
        assert _comparable(reply) == _comparable(again)
        self.objects = self.p.session_info(self.tested)["obj_ids"]
        return reply

    @rule(frame=frames_st, xy=xy_st, label=st.sampled_from([0, 1]), existing=st.booleans())
    def click(self, frame, xy, label, existing):
        request = {
            "type": "add_prompt",
            "frame_index": frame,
            "points": [list(xy)],
            "point_labels": [label],
        }
        self.objects = self.p.session_info(self.tested)["obj_ids"]
        if existing and self.objects:
            request["obj_id"] = self.objects[xy[0] % len(self.objects)]
        self._request(request)

    @rule(frame=frames_st, text=st.sampled_from(["person", "visual", "red square"]))
    def text(self, frame, text):
        self._request({"type": "add_prompt", "frame_index": frame, "text": text})

    @rule(frame=frames_st, cx=st.floats(0.3, 0.7), with_text=st.booleans())
    def boxes(self, frame, cx, with_text):
        request = {
            "type": "add_prompt",
            "frame_index": frame,
            "bounding_boxes": [[cx, 0.5, 0.4, 0.4]],
        }
        if with_text:
            request["text"] = "square"
        self._request(request)

    @rule(pick=st.integers(0, 10))
    def remove(self, pick):
        self.objects = self.p.session_info(self.tested)["obj_ids"]  # hotstart may remove
        if self.objects:
            obj_id = self.objects[pick % len(self.objects)]
            self._request({"type": "remove_object", "obj_id": obj_id})

    @rule()
    def reset(self):
        self._request({"type": "reset_session"})

    @rule(which=st.sampled_from(["frame", "obj", "field", "points"]))
    def invalid(self, which):
        bad = {
            "frame": {"type": "add_prompt", "frame_index": N, "text": "person"},
            "obj": {"type": "remove_object", "obj_id": 10**6},
            "field": {"type": "add_prompt", "frame_idx": 0, "text": "person"},
            "points": {
                "type": "add_prompt",
                "frame_index": 0,
                "points": [[W + 5, 0]],
                "point_labels": [1],
            },
        }[which]
        assert self._request(bad) is None

    @rule()
    def stale_stream(self):
        """A stream made, then the session changes before its first frame: it must end with
        StaleStreamError and change nothing."""
        try:
            stream = self.p.handle_stream_request(
                {"type": "propagate_in_video", "session_id": self.tested}
            )
        except Sam3VideoError:
            return
        objects = self.p.session_info(self.tested)["obj_ids"]
        self._request(
            {"type": "remove_object", "obj_id": objects[0]}
            if objects
            else {"type": "reset_session"}
        )
        with pytest.raises(StaleStreamError):
            next(stream)

    @rule(
        direction=st.sampled_from(["forward", "backward", "both"]),
        start=st.one_of(st.none(), frames_st),
        read=st.integers(0, 2 * N),
    )
    def propagate(self, direction, start, read):
        """Closed after ``read`` frames, then asked again: the same as one full run."""
        request = {"type": "propagate_in_video", "propagation_direction": direction}
        if start is not None:
            request["start_frame_index"] = start
        try:
            stream = self.p.handle_stream_request({**request, "session_id": self.tested})
        except Sam3VideoError:
            return
        _outcome(stream, limit=read)
        resumed = _outcome(self.p.handle_stream_request({**request, "session_id": self.tested}))
        once = _outcome(self.p.handle_stream_request({**request, "session_id": self.reference}))
        assert resumed == once

    @invariant()
    def full_propagation_agrees(self):
        if not hasattr(self, "p"):
            return
        outcomes = []
        for sid in (self.tested, self.reference):
            try:
                stream = self.p.handle_stream_request(
                    {"type": "propagate_in_video", "session_id": sid}
                )
            except Sam3VideoError as exc:
                outcomes.append(type(exc).__name__)
                continue
            outcomes.append(_outcome(stream))
        assert outcomes[0] == outcomes[1]


def _comparable(reply: dict) -> dict:
    outputs = reply.get("outputs")
    if outputs is None:
        return reply
    return {
        "frame_index": reply["frame_index"],
        "outputs": {i: (o["mask"].tobytes(), round(o["score"], 5)) for i, o in outputs.items()},
    }


def test_session_state_machine(tmp_path_factory):
    _STATE["tmp"] = tmp_path_factory.mktemp("property")
    SessionMachine.TestCase.settings = settings(
        # CI runs a short sample; SAM3VIDEO_PROPERTY_EXAMPLES=200 runs a long one.
        max_examples=int(os.environ.get("SAM3VIDEO_PROPERTY_EXAMPLES", 8)),
        stateful_step_count=int(os.environ.get("SAM3VIDEO_PROPERTY_STEPS", 6)),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=os.environ.get("SAM3VIDEO_PROPERTY_EXAMPLES") is None,
    )
    try:
        SessionMachine.TestCase().runTest()
    finally:
        p = _STATE.pop("predictor", None)
        if p is not None:
            p.shutdown()


def test_decode_error_is_what_a_damaged_frame_gives(tmp_path_factory):
    """The clip's last frame is really undecodable (the property test relies on it)."""
    p, folder = _setup(tmp_path_factory.mktemp("property-check"))
    sid = p.handle_request({"type": "start_session", "resource_path": folder})["session_id"]
    with pytest.raises(DecodeError):
        p.handle_request(
            {"type": "add_prompt", "session_id": sid, "frame_index": CORRUPT, "text": "person"}
        )
    p.handle_request({"type": "close_session", "session_id": sid})

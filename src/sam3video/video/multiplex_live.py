"""Live and stream sessions on a SAM 3.1 model: `LiveSession31`.

Our extension (the official 3.1 predictor has no live mode): the SAM 3 live session
(`sam3video.video.live.LiveSession`: frames appended one by one, each stepped at once with the
hotstart buffer off, a bounded window of per-frame tables) over the SAM 3.1 session
(`sam3video.video.session31.VideoSession31`: multiplex tracker, 3.1 planner). Decisions:

- a live session is an offline forward propagation that cannot look ahead, so with
  ``hotstart_delay = 0`` its outputs equal those of an offline 3.1 forward propagation with
  the same setting (tested); with the buffer off the 3.1 confirmation table hides nothing
  either (officially it is only filled with the buffer on);
- a prompt starts a new "pass" (the re-steps from the prompted frame on are an offline
  forward propagation from that frame): the per-pass tables of the 3.1 session (unconfirmed
  objects, states preflighted by a partial pass) are reset there;
- the unconfirmed-object table keeps only the window's frames, like the other per-frame
  tables.
"""

from __future__ import annotations

from sam3video.video.live import LiveSession
from sam3video.video.session31 import VideoSession31

__all__ = ["LiveSession31"]


class LiveSession31(LiveSession, VideoSession31):
    """A live (or stream) session on a SAM 3.1 model (module doc). Same constructor as
    `LiveSession`; the heuristics must be `VideoHeuristics31` (the buffer is turned off)."""

    def _new_pass(self) -> None:
        self._unconfirmed = {}
        self._reverse = False
        self._preflighted = set()

    def add_concepts(self, frame_idx, prompts, tokens=None, mode="replace"):
        outputs = super().add_concepts(frame_idx, prompts, tokens, mode)
        self._new_pass()
        return outputs

    def add_points(self, frame_idx, points, labels, obj_id):
        out = super().add_points(frame_idx, points, labels, obj_id)
        self._new_pass()
        return out

    def _forget_before(self, oldest: int) -> None:
        super()._forget_before(oldest)
        if oldest > 0 and any(f < oldest for f in self._unconfirmed):
            self._unconfirmed = {f: v for f, v in self._unconfirmed.items() if f >= oldest}

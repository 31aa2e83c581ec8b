"""``sam3video track STREAM``: follow a camera or network stream until Ctrl-C or --max-frames.

Decisions
  * A stream is what `sam3video.io.streams.is_stream` says (``webcam:N``, ``rtsp://``,
    ``http(s)://``, ...). It is opened once before the model loads, so that a 404, a refused
    connection or a missing camera fails at once, and clicks are checked against its size;
    the session then opens it again (a camera or server sees two connections).
  * Prompts go on the stream's first frame (``--frame`` must be 0) and the run goes forward
    (``--direction`` forward, or both, the default; backward is an error). Text, boxes and
    clicks are all added before following: a live session tracks the concept's objects and
    the clicked one in one pass, where a file needs a second pass for the clicks.
  * ``--max-frames N``: N frames, counting the first (as for a file). Without it the command
    follows the stream until it ends or Ctrl-C.
  * The outputs are those of a file (`sam3video.cli.outputs.Exports` with ``stream=True``):
    ``results.json`` lists the frames tracked, ``masks/`` one PNG per frame, ``overlay.mp4``
    the tracked frames at the stream's frame rate (25 when it does not say).
  * Progress shows the frames tracked, the objects and frames/s (a time left only with
    ``--max-frames``). Ctrl-C ends the run with every tracked frame in the files; exit 130.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam3video.cli.args import DEFAULT_OUT_ROOT
from sam3video.cli.outputs import Exports, OutputFolder
from sam3video.cli.progress import Progress
from sam3video.cli.runs import (
    check_prompts_fit,
    finish_run,
    pass_name,
    prompt_requests,
    run_into,
    write_held,
)
from sam3video.cli.watch import TrackingWatch
from sam3video.errors import InvalidInputError

if TYPE_CHECKING:  # track imports this module when it meets a stream
    from sam3video.cli.track import TrackSummary

__all__ = ["follow_stream"]


@dataclass
class _StreamFrames:
    """What the exporters read of a stream: its name, size and rate, and the frames the
    session still holds (the overlay draws on them as each frame is written)."""

    path: Path
    height: int
    width: int
    fps: float | None
    held: Any = None  # the session's `LiveFrames`, once it is open

    def __len__(self) -> int:
        return 0 if self.held is None else len(self.held)

    def __getitem__(self, index: int) -> Any:
        return self.held[index]


def follow_stream(
    args: argparse.Namespace, predictor: Any, device: Any, dtype: Any
) -> TrackSummary:
    """Run ``track`` on a stream (``predictor``: an existing one, or None to load it on
    ``device`` / ``dtype``); returns what it did."""
    from sam3video.cli.track import TrackSummary
    from sam3video.io.streams import StreamReader, stream_name

    if args.frame != 0:
        raise InvalidInputError(
            f"--frame: a stream is prompted on its first frame; leave --frame out, got {args.frame}"
        )
    if args.direction == "backward":
        raise InvalidInputError(
            "--direction: a stream is followed forward; expected forward or both, got backward"
        )
    with StreamReader(args.video) as probe:  # fail fast, before the model loads
        frames = _StreamFrames(Path(stream_name(args.video)), probe.height, probe.width, probe.fps)
    check_prompts_fit(args, frames.width, frames.height)
    folder = OutputFolder(Path(args.out) if args.out else Path(DEFAULT_OUT_ROOT) / frames.path)
    out = folder.create()
    exports = Exports(out, args.format, frames, args.text, stream=True)
    summary = TrackSummary(out=out)
    run_into(
        folder,
        exports,
        summary,
        args,
        predictor,
        (device, dtype),
        lambda loaded: _follow(args, loaded, exports, frames, summary),
    )
    summary.video_frames = summary.frames
    return summary


def _follow(
    args: argparse.Namespace,
    predictor: Any,
    exports: Exports,
    frames: _StreamFrames,
    summary: TrackSummary,
) -> None:
    """Open the session, prompt its first frame, follow it; Ctrl-C keeps what was tracked."""
    get_session = getattr(predictor, "get_session", None)
    if get_session is None and "overlay" in exports.formats:  # a stand-in: no frames to draw
        raise InvalidInputError("--format overlay: this predictor gives no access to frames")
    session_id = predictor.handle_request(
        {"type": "start_session", "resource_path": str(args.video)}
    )["session_id"]
    if get_session is not None:
        frames.held = get_session(session_id).frames
    requests = prompt_requests(args, session_id)
    summary.passes = [" and ".join(pass_name(r) for r in requests)]
    progress = Progress(args.max_frames, enabled=not args.quiet, label="following")
    complete, tick = False, time.perf_counter()

    def write(item: dict[str, Any]) -> None:
        exports.write(item["frame_index"], item["outputs"])
        summary.results += 1

    try:
        for request in requests:
            write(predictor.handle_request(request))
        tick = time.perf_counter()
        for item in predictor.handle_stream_request(_follow_request(args, session_id)):
            write(item)
            summary.tracked += 1
            progress.advance_to(summary.tracked, len(exports.objects))
        progress.end_pass()
        complete = True
    except KeyboardInterrupt:
        summary.interrupted = True
        # a frame stopped mid-step may still be held: write it too
        write_held(
            TrackingWatch(predictor, session_id, lambda _: None).held_frames(), write, summary
        )
    finally:
        summary.track_seconds = time.perf_counter() - tick
        finish_run(predictor, session_id, exports, progress, complete)


def _follow_request(args: argparse.Namespace, session_id: str) -> dict[str, Any]:
    return {
        "type": "propagate_in_video",
        "session_id": session_id,
        "propagation_direction": "forward",
        "max_frame_num_to_track": None if args.max_frames is None else args.max_frames - 1,
    }

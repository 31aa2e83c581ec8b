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
from sam3video.cli.outputs import Exports, OutputFolder, hold_sigint
from sam3video.cli.progress import Progress
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
    from sam3video.cli.track import (
        TrackSummary,
        _as_flag_error,
        _load_predictor,
        _prompt_requests,
    )
    from sam3video.io.streams import StreamReader, stream_name
    from sam3video.requests import check_points_in_frame, parse_request

    if args.frame != 0:
        raise InvalidInputError(
            f"--frame: a stream is prompted on its first frame; leave --frame out, got "
            f"{args.frame}"
        )
    if args.direction == "backward":
        raise InvalidInputError(
            "--direction: a stream is followed forward; expected forward or both, got backward"
        )
    with StreamReader(args.video) as probe:  # fail fast, before the model loads
        frames = _StreamFrames(Path(stream_name(args.video)), probe.height, probe.width, probe.fps)
    for request in _prompt_requests(args, "check"):
        try:
            parse_request(request, stream=False)
            if "points" in request:
                check_points_in_frame(request["points"], frames.width, frames.height)
        except InvalidInputError as error:
            raise _as_flag_error(error) from None
    folder = OutputFolder(Path(args.out) if args.out else Path(DEFAULT_OUT_ROOT) / frames.path)
    out = folder.create()
    exports = Exports(out, args.format, frames, args.text, stream=True)
    summary = TrackSummary(out=out)
    try:
        start = time.perf_counter()
        if predictor is None:
            predictor = _load_predictor(args, device, dtype)
        summary.load_seconds = time.perf_counter() - start
        _follow(args, predictor, exports, frames, summary)
    finally:
        if not exports.written:  # failed (or stopped) before any result: leave nothing
            folder.discard()
    summary.frames = summary.video_frames = len(exports.written)
    summary.objects = len(exports.objects)
    summary.write_seconds = exports.seconds
    summary.files = exports.files()
    return summary


def _follow(
    args: argparse.Namespace,
    predictor: Any,
    exports: Exports,
    frames: _StreamFrames,
    summary: TrackSummary,
) -> None:
    """Open the session, prompt its first frame, follow it; Ctrl-C keeps what was tracked."""
    from sam3video.cli.track import _pass_name, _prompt_requests

    get_session = getattr(predictor, "get_session", None)
    if get_session is None and "overlay" in exports.formats:  # a stand-in: no frames to draw
        raise InvalidInputError("--format overlay: this predictor gives no access to frames")
    session_id = predictor.handle_request(
        {"type": "start_session", "resource_path": str(args.video)}
    )["session_id"]
    if get_session is not None:
        frames.held = get_session(session_id).frames
    requests = _prompt_requests(args, session_id)
    summary.passes = [" and ".join(_pass_name(r) for r in requests)]
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
        with hold_sigint():  # a frame stopped mid-step may still be held: write it too
            watch = TrackingWatch(predictor, session_id, lambda _: None)
            for frame_index, outputs in watch.held_frames():
                write({"frame_index": frame_index, "outputs": outputs})
                summary.flushed += 1
    finally:
        summary.track_seconds = time.perf_counter() - tick
        progress.close()
        try:
            exports.close(complete)
        finally:
            predictor.handle_request({"type": "close_session", "session_id": session_id})


def _follow_request(args: argparse.Namespace, session_id: str) -> dict[str, Any]:
    return {
        "type": "propagate_in_video",
        "session_id": session_id,
        "propagation_direction": "forward",
        "max_frame_num_to_track": None if args.max_frames is None else args.max_frames - 1,
    }

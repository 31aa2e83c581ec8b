"""``sam3video track``: prompts on one frame, propagation, results written as they come.

Decisions
  * Everything the command line decides is checked before the model loads: the prompts
    (through the request API's own validation, messages naming the flags), the frame, the
    device and the output folder.
  * A concept prompt (text and/or boxes) and clicks cannot share one request, and after
    "text, then clicks" SAM 3 only propagates the clicked object; so the concept is added and
    propagated first, then the clicks (a second pass that re-emits every frame with all
    objects; later writes replace earlier ones, so the files hold the final result).
  * Progress counts frames as they are tracked (`sam3video.cli.watch`); Ctrl-C then takes
    the frames the hotstart buffer holds, so the files hold every frame that was computed.
  * The summary counts what the files hold: the frames written and the objects on them.
  * A camera or network stream (``webcam:0``, ``rtsp://``, ``http(s)://``...) is followed
    until it ends, Ctrl-C or ``--max-frames`` (`sam3video.cli.follow`).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sam3video.cli.args import DEFAULT_OUT_ROOT, EXIT_INTERRUPTED, EXIT_OK, PROG
from sam3video.cli.outputs import Exports, OutputFolder
from sam3video.cli.progress import Progress, plural
from sam3video.cli.runs import (
    check_prompts_fit,
    finish_run,
    pass_name,
    prompt_requests,
    run_into,
    write_held,
)
from sam3video.cli.runtime import check_device, default_threads
from sam3video.cli.watch import TrackingWatch
from sam3video.errors import InvalidInputError

__all__ = ["TrackSummary", "run_track", "track"]


@dataclass
class TrackSummary:
    """What a ``track`` run did.

    ``frames`` / ``objects``: the distinct frames and objects the files hold. ``tracked``:
    frames the propagations computed (what ``track_seconds`` timed). ``flushed``: frames taken
    from the hotstart buffer after Ctrl-C. ``passes``: what each pass tracked (``"text"``,
    ``"clicks"``...).
    """

    frames: int = 0
    objects: int = 0
    tracked: int = 0
    flushed: int = 0
    results: int = 0
    video_frames: int = 0
    passes: list[str] = field(default_factory=list)
    threads: int = 0
    track_seconds: float = 0.0
    write_seconds: float = 0.0
    load_seconds: float = 0.0
    out: Path | None = None
    files: list[str] = field(default_factory=list)
    interrupted: bool = False


def run_track(args: argparse.Namespace, predictor: Any = None) -> int:
    """``sam3video track``: returns the exit code (0, or 130 when interrupted while
    tracking); errors are raised (`sam3video.cli.main` turns them into exit codes).

    ``predictor``: an existing `Sam3VideoPredictor` (or an object with its request API) to
    use instead of loading one from ``--model`` / ``--checkpoint``.
    """
    summary = track(args, predictor)
    saved = ", ".join(summary.files) or "nothing written"
    if summary.interrupted:
        buffered = ""
        if summary.flushed:
            buffered = f" ({summary.flushed} of them from the hotstart buffer)"
        print(
            f"{PROG}: interrupted after {plural(summary.tracked, 'frame')} tracked; saved "
            f"{plural(summary.frames, 'frame')}{buffered} with "
            f"{plural(summary.objects, 'object')} in {summary.out}: {saved}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    n = summary.tracked
    per_frame = summary.track_seconds / n if n else 0.0
    rate = n / summary.track_seconds if summary.track_seconds > 0 else 0.0
    passes = ""
    if len(summary.passes) > 1:
        passes = f" ({len(summary.passes)} passes: {', then '.join(summary.passes)})"
    print(f"frames   {summary.frames} of {summary.video_frames}{passes}")
    print(f"objects  {summary.objects}")
    print(
        f"time     {per_frame:.3f} s/frame, {rate:.2f} frames/s (of which writing "
        f"{summary.write_seconds / max(summary.results, 1):.3f} s/frame); "
        f"model loaded in {summary.load_seconds:.1f} s; {plural(summary.threads, 'thread')}"
    )
    print(f"results  {summary.out}: {saved}")
    return EXIT_OK


def track(args: argparse.Namespace, predictor: Any = None) -> TrackSummary:
    """Run the ``track`` job; returns its `TrackSummary` (``interrupted`` after Ctrl-C)."""
    import torch

    _check_prompts(args)
    threads = args.threads or default_threads()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        summary = _track(args, predictor)
    finally:
        torch.set_num_threads(previous_threads)  # in-process callers keep their setting
    summary.threads = threads
    return summary


def _track(args: argparse.Namespace, predictor: Any) -> TrackSummary:
    import torch

    from sam3video.errors import FrameIndexError
    from sam3video.io import IMAGE_EXTENSIONS, open_frames
    from sam3video.io.streams import is_stream

    device = check_device(args.device) if predictor is None else None
    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)
    if is_stream(args.video):
        from sam3video.cli.follow import follow_stream

        return follow_stream(args, predictor, device, dtype)

    with open_frames(args.video, loader=args.loader) as frames:
        num_frames = len(frames)
        if args.frame >= num_frames:
            raise FrameIndexError(
                f"--frame: expected a frame index in [0, {num_frames}) ({args.video} has "
                f"{plural(num_frames, 'frame')}), got {args.frame}"
            )
        check_prompts_fit(args, frames.width, frames.height)  # before loading the model
        video = Path(args.video)
        folder = OutputFolder(Path(args.out) if args.out else Path(DEFAULT_OUT_ROOT) / video.stem)
        out = folder.create()
        still = video.suffix.lower() in IMAGE_EXTENSIONS and video.is_file()
        exports = Exports(out, args.format, frames, args.text, still=still)
        summary = TrackSummary(out=out, video_frames=num_frames)
        return run_into(
            folder,
            exports,
            summary,
            args,
            predictor,
            (device, dtype),
            lambda loaded: _run_passes(args, loaded, exports, summary, num_frames),
        )


def _run_passes(
    args: argparse.Namespace,
    predictor: Any,
    exports: Exports,
    summary: TrackSummary,
    num_frames: int,
) -> None:
    """Each prompt, then its propagation, written as the results come; Ctrl-C ends it with
    the held frames written too."""
    session_id = predictor.handle_request(
        {"type": "start_session", "resource_path": str(args.video)}
    )["session_id"]
    requests = prompt_requests(args, session_id)
    summary.passes = [pass_name(request) for request in requests]
    per_pass = _expected_frames(num_frames, args.frame, args.max_frames, args.direction)
    progress = Progress(per_pass, enabled=not args.quiet)
    watch = TrackingWatch(predictor, session_id, lambda _: progress.advance_to(watch.tracked))
    released, complete = 0, False
    tick: float | None = None  # when the running propagation started

    def write(item: dict[str, Any]) -> None:
        exports.write(item["frame_index"], item["outputs"])
        summary.results += 1

    try:
        with watch:
            for k, request in enumerate(requests):
                label = "tracking"
                if len(requests) > 1:
                    label = f"pass {k + 1} of {len(requests)} ({summary.passes[k]})"
                progress.begin(label, per_pass)
                watch.restart()
                released = 0
                write(predictor.handle_request(request))
                stream = predictor.handle_stream_request(_propagate_request(args, session_id))
                tick = time.perf_counter()
                for item in stream:
                    write(item)
                    released += 1
                    progress.advance_to(max(watch.tracked, released), len(exports.objects))
                summary.tracked += max(watch.tracked, released)
                summary.track_seconds += time.perf_counter() - tick
                progress.end_pass()
                released, tick = 0, None
                watch.restart()
        complete = True
    except KeyboardInterrupt:
        summary.interrupted = True
        summary.tracked += max(watch.tracked, released)
        if tick is not None:
            summary.track_seconds += time.perf_counter() - tick
        write_held(watch.held_frames(), write, summary)
    finally:
        finish_run(predictor, session_id, exports, progress, complete)


# ----------------------------------------------------------------------------- requests


def _check_prompts(args: argparse.Namespace) -> None:
    if isinstance(args.text, list):  # --text once (the seed's one concept) or several times
        args.text = args.text[0] if len(args.text) == 1 else args.text
    texts = [args.text] if isinstance(args.text, str) else list(args.text or [])
    if not texts and not args.box and not args.points:
        raise InvalidInputError(
            'no prompt: expected --text, --box and/or --points (e.g. --text "person")'
        )
    for text in texts:
        if not text.strip():
            raise InvalidInputError(f"--text: expected a non-empty noun phrase, got {text!r:.100}")


def _propagate_request(args: argparse.Namespace, session_id: str) -> dict[str, Any]:
    return {
        "type": "propagate_in_video",
        "session_id": session_id,
        "propagation_direction": args.direction,
        "start_frame_index": args.frame,
        "max_frame_num_to_track": None if args.max_frames is None else args.max_frames - 1,
    }


def _expected_frames(num_frames: int, start: int, max_frames: int | None, direction: str) -> int:
    """How many results one propagation yields (the request API's processing order)."""
    n = num_frames if max_frames is None else max_frames - 1
    forward = min(start + n, num_frames - 1) - start + 1
    backward = start - max(start - n, 0)
    return {"forward": forward, "backward": backward, "both": forward + backward}[direction]

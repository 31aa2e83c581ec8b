"""What every ``track`` run shares, for a file (`sam3video.cli.track`) or a stream
(`sam3video.cli.follow`): its prompt requests checked against the frame size, the predictor
loaded into an output folder that a failed run removes, and the end of a run (frames held by
the hotstart buffer written on Ctrl-C, the files closed, the session closed).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from sam3video.cli.args import PROG, pack_clicks_refusal
from sam3video.cli.outputs import Exports, OutputFolder, hold_sigint
from sam3video.errors import InvalidInputError, UnsupportedModelError

if TYPE_CHECKING:
    from sam3video.cli.progress import Progress
    from sam3video.cli.track import TrackSummary

__all__ = [
    "as_flag_error",
    "check_prompts_fit",
    "finish_run",
    "load_predictor_for",
    "pass_name",
    "prompt_requests",
    "run_into",
    "write_held",
]


def prompt_requests(args: argparse.Namespace, session_id: str) -> list[dict[str, Any]]:
    """One add_prompt per pass: the concept (text and/or boxes), then the clicks."""
    requests: list[dict[str, Any]] = []
    if args.text is not None or args.box:
        request: dict[str, Any] = {
            "type": "add_prompt",
            "session_id": session_id,
            "frame_index": args.frame,
        }
        if args.text is not None:
            request["text"] = args.text
        if args.box:
            request["bounding_boxes"] = [list(box) for box, _ in args.box]
            request["bounding_box_labels"] = [label for _, label in args.box]
        requests.append(request)
    if args.points:
        requests.append(
            {
                "type": "add_prompt",
                "session_id": session_id,
                "frame_index": args.frame,
                "points": [[x, y] for x, y, _ in args.points],
                "point_labels": [label for _, _, label in args.points],
            }
        )
    return requests


def pass_name(request: dict[str, Any]) -> str:
    """``"text"``, ``"boxes"``, ``"text and boxes"`` or ``"clicks"``."""
    if "points" in request:
        return "clicks"
    names = {"text": "text", "bounding_boxes": "boxes"}
    parts = [name for key, name in names.items() if key in request]
    return " and ".join(parts)


_FLAG_OF_FIELD = {
    "bounding_box_labels": "--box (labels)",
    "bounding_boxes": "--box",
    "point_labels": "--points (labels)",
    "points": "--points",
    "text": "--text",
}


def as_flag_error(error: InvalidInputError) -> InvalidInputError:
    """The same error, its leading request-field name replaced by the command-line flag."""
    message = re.sub(
        r"^(bounding_box_labels|bounding_boxes|point_labels|points|text)\b",
        lambda m: _FLAG_OF_FIELD[m.group(1)],
        str(error),
    )
    return type(error)(message)


def check_prompts_fit(args: argparse.Namespace, width: int, height: int) -> None:
    """The prompts of the command line, checked by the request API (and clicks against the
    frame size) before the model loads; errors name the flags."""
    from sam3video.requests import check_points_in_frame, parse_request

    for request in prompt_requests(args, "check"):
        try:
            parse_request(request, stream=False)
            if "points" in request:
                check_points_in_frame(request["points"], width, height)
        except InvalidInputError as error:
            raise as_flag_error(error) from None


def load_predictor_for(args: argparse.Namespace, device: Any, dtype: Any) -> Any:
    """The predictor of ``--model`` / ``--checkpoint`` / ``--loader``, announced on stderr."""
    from sam3video.checkpoints import load_predictor

    def announce(checkpoint: Any) -> None:
        if not args.quiet:
            where = f" from {checkpoint}" if checkpoint is not None else ""
            print(f"{PROG}: loading the {args.model} model on {device}{where}", file=sys.stderr)

    try:
        return load_predictor(
            args.model,
            args.checkpoint,
            device=device,
            dtype=dtype,
            loader=args.loader,
            warn=lambda message: print(f"{PROG}: warning: {message}", file=sys.stderr),
            on_loading=announce,
            pack_clicked_objects=getattr(args, "pack_clicks", False),
        )
    except UnsupportedModelError as error:
        refusal = pack_clicks_refusal(error, args)
        if refusal is not None:  # a flag that does not fit the model: exit 2
            raise refusal from None
        raise


def run_into(
    folder: OutputFolder,
    exports: Exports,
    summary: TrackSummary,
    args: argparse.Namespace,
    predictor: Any,
    load: tuple[Any, Any],
    run: Callable[[Any], None],
) -> TrackSummary:
    """Load the predictor unless given (``load``: its device and dtype), then ``run(predictor)``;
    a run that wrote nothing (failed or stopped early) removes its folder. Fills the
    summary's counts from what the files hold."""
    try:
        start = time.perf_counter()
        if predictor is None:
            predictor = load_predictor_for(args, *load)
        summary.load_seconds = time.perf_counter() - start
        run(predictor)
    finally:
        if not exports.written:  # failed (or stopped) before any result: leave nothing
            folder.discard()
    summary.frames = len(exports.written)
    summary.objects = len(exports.objects)
    summary.write_seconds = exports.seconds
    summary.files = exports.files()
    return summary


def write_held(
    held: Iterable[tuple[int, Any]],
    write: Callable[[dict[str, Any]], None],
    summary: TrackSummary,
) -> None:
    """After Ctrl-C: write the frames the hotstart buffer still holds (a second Ctrl-C must
    not lose them)."""
    with hold_sigint():
        for frame_index, outputs in held:
            write({"frame_index": frame_index, "outputs": outputs})
            summary.flushed += 1


def finish_run(
    predictor: Any, session_id: str, exports: Exports, progress: Progress, complete: bool
) -> None:
    """The end of every run, however it ends: progress closed, files closed (``complete``:
    the propagation ran to its end), the session closed."""
    progress.close()
    try:
        exports.close(complete)
    finally:
        predictor.handle_request({"type": "close_session", "session_id": session_id})

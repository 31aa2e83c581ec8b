"""The ``sam3video`` command: ``sam3video track`` (segment and track in a video) and ``info``.

``sam3video track VIDEO --text "person"`` opens a session of `Sam3VideoPredictor`, adds the
prompts on ``--frame``, propagates, and writes the results with the exporters of
`sam3video.io.export` while the propagation runs. ``sam3video info`` prints versions,
devices, threads and which checkpoint would be used. ``serve``, ``batch`` and ``eval``
belong to `sam3video.server`, `sam3video.batch` and `sam3video.evaluation`; this package only
adds them to the parser (each sets ``args.func``).

Modules: `args` (the parser), `track` (the job), `follow` (the job on a camera or network
stream), `outputs` (the output folder and writers; `growing`: the JSON of a stream),
`progress` (the display), `watch` (tracked frames and the hotstart buffer, from the session),
`runtime` (device and threads), `info`. Each documents its decisions; the command-wide ones:

Prompts
  * ``--text`` and ``--box`` form one concept prompt (the detector finds every instance);
    ``--points`` form one click prompt that creates one new object. Points are pixels of the
    original frame; boxes are ``CX,CY,W,H`` normalized to [0, 1], as in the request API.
    ``:LABEL`` is 1 (positive / foreground, the default) or 0 (negative / background).
  * ``--max-frames N``: at most N frames per direction, counting the prompted frame (the
    request API's ``max_frame_num_to_track = N - 1``). ``--direction both`` (the default, as
    the API) runs forward from ``--frame``, then backward from it.

Outputs (in ``--out``, default ``./sam3video_out/<video stem>``; the folder is created)
  * ``--format`` takes a comma-separated list of ``ytvis`` (the default: ``results.json``,
    SA-Co/YTVIS layout, compressed RLE masks, one annotation per object), ``png``
    (``masks/00000.png``...: 8-bit palette PNGs, pixel value = obj_id + 1, 0 = background)
    and ``overlay`` (``overlay.mp4``: the whole video at its size and fps, masks, contours
    and ``#id score`` labels drawn on the tracked frames; ``overlay.png`` for an image).
  * A later write of a frame replaces the earlier one. Existing ``masks/<digits>.png`` files
    are deleted when the first result is written, so the folder holds this run's frames
    only; ``results.json`` and the overlay are replaced atomically when the run ends. A run
    that fails before writing removes the folders it created.
  * Ctrl-C (or any error) during tracking closes the exporters: after Ctrl-C the frames the
    hotstart buffer holds are written too, so the JSON and the PNGs hold every frame computed
    so far, and the overlay holds those frames only, in frame order (not the whole video, so
    that stopping is quick). Exit code 130.

Exit codes
  * 0 success; 130 interrupted (Ctrl-C).
  * 2 the command line must change: unknown option or value, unparseable ``--points`` /
    ``--box``, no prompt, a frame out of range, a missing or unsupported video, an
    unwritable ``--out``, a device that is not available (`InvalidInputError`,
    `FrameIndexError`, `ConfigError`, `SourceNotFoundError`, `UnsupportedSourceError`,
    `UnknownIdError`).
  * 1 the command was right but running it failed: no usable checkpoint (download refused,
    offline, corrupt file: `CheckpointError`), an undecodable video (`DecodeError`), an
    operating-system error while writing, or an unexpected error.
  * Errors are one line on stderr (``sam3video: error: ...``), without a traceback unless
    ``--debug`` is given. Progress and warnings go to stderr, the summary to stdout.
"""

from __future__ import annotations

import sys
import traceback
import warnings
from collections.abc import Sequence

from sam3video.cli.args import (
    EXIT_INTERRUPTED,
    EXIT_RUNTIME,
    EXIT_USAGE,
    FORMATS,
    PROG,
    build_parser,
    parse_box,
    parse_formats,
    parse_point,
)
from sam3video.cli.info import one_line, run_info
from sam3video.cli.progress import Progress, plural
from sam3video.cli.track import TrackSummary, run_track
from sam3video.errors import (
    ConfigError,
    InvalidInputError,
    Sam3VideoError,
    SourceNotFoundError,
    UnknownIdError,
    UnsupportedSourceError,
)

__all__ = [
    "FORMATS",
    "Progress",
    "TrackSummary",
    "build_parser",
    "main",
    "parse_box",
    "parse_formats",
    "parse_point",
    "plural",
    "run_info",
    "run_track",
]

USAGE_ERRORS = (
    InvalidInputError,
    ConfigError,
    SourceNotFoundError,
    UnsupportedSourceError,
    UnknownIdError,
)
COMMANDS = {"track": run_track, "info": run_info}


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"{PROG}: warning: {one_line(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sam3video`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error already printed
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    debug = args.debug
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = _show_warning
        try:
            run = COMMANDS.get(args.command) or args.func  # serve: sam3video.server.cli
            return run(args)
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Exception as error:  # every error becomes one line and an exit code
            if debug:
                traceback.print_exc()
            code, text = _describe(error, debug)
            print(f"{PROG}: error: {text}", file=sys.stderr)
            return code


def _describe(error: Exception, debug: bool) -> tuple[int, str]:
    """The exit code and the one-line message of an error."""
    if isinstance(error, USAGE_ERRORS):
        return EXIT_USAGE, one_line(error)
    if isinstance(error, Sam3VideoError):
        return EXIT_RUNTIME, one_line(error)
    if isinstance(error, OSError):
        where = f" {error.filename!r}" if error.filename else ""
        return EXIT_RUNTIME, f"{error.strerror or one_line(error)}{where}"
    hint = "" if debug else "; run again with --debug for the traceback"
    return EXIT_RUNTIME, f"unexpected {type(error).__name__}: {one_line(error)}{hint}"

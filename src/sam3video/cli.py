"""The ``sam3video`` command: ``sam3video track`` (segment and track in a video) and ``info``.

``sam3video track VIDEO --text "person"`` opens a session of `Sam3VideoPredictor`, adds the
prompts on ``--frame``, propagates, and writes the results with the exporters of
`sam3video.io.export` while the propagation runs (each frame is written as soon as it is
tracked). ``sam3video info`` prints versions, devices and which checkpoint would be used.

Decisions
---------
Prompts
  * ``--text`` and ``--box`` form one concept prompt (the detector finds every instance);
    ``--points`` form one click prompt that creates one new object. Points are pixels of the
    original frame; boxes are ``CX,CY,W,H`` normalized to [0, 1], as in the request API.
    ``:LABEL`` is 1 (positive / foreground, the default) or 0 (negative / background).
  * A concept prompt and clicks together: SAM 3 cannot mix them in one request, and after
    "text, then clicks" its propagation only tracks the clicked object (the text objects
    would stay on the prompted frame). So the command adds the concept prompt and
    propagates, then adds the clicks and propagates again (the second pass refines the
    clicked object and re-emits every frame with all objects; later writes replace earlier
    ones, so the files hold the final result).
  * ``--max-frames N``: at most N frames per direction, counting the prompted frame (the
    request API's ``max_frame_num_to_track = N - 1``). ``--direction both`` (the default, as
    the API) runs forward from ``--frame``, then backward from it.

Outputs (in ``--out``, default ``./sam3video_out/<video stem>``; the folder is created)
  * ``--format`` takes a comma-separated list of ``ytvis`` (the default: ``results.json``,
    SA-Co/YTVIS layout, compressed RLE masks, one annotation per object), ``png``
    (``masks/00000.png``...: 8-bit palette PNGs, pixel value = obj_id + 1, 0 = background)
    and ``overlay`` (``overlay.mp4``: the whole video at its size and fps, masks, contours,
    ids and scores drawn on the tracked frames).
  * A later write of a frame replaces the earlier one. Existing ``masks/<digits>.png`` files
    are deleted when the first result is written, so the folder holds this run's frames
    only; ``results.json`` and ``overlay.mp4`` are replaced atomically when the run ends.
  * Ctrl-C (or any error) during tracking closes the exporters: the JSON and the PNGs hold
    every frame processed so far, and the overlay holds those frames only, in frame order
    (not the whole video, so that stopping is quick). SIGINT is held back while a frame is
    being written, so no frame is half-written. Exit code 130.

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

Progress: a redrawn bar (frames done, objects seen, frames/s, time left) when stderr is a
terminal; a plain log line every 10 s (and at the end) otherwise; nothing with ``--quiet``.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sam3video import __version__
from sam3video.errors import (
    ConfigError,
    InvalidInputError,
    Sam3VideoError,
    SourceNotFoundError,
    UnknownIdError,
    UnsupportedSourceError,
)

__all__ = ["FORMATS", "Progress", "TrackSummary", "build_parser", "main", "run_info", "run_track"]

PROG = "sam3video"
FORMATS = ("ytvis", "png", "overlay")
DEFAULT_OUT_ROOT = "sam3video_out"
JSON_NAME, PNG_DIR, OVERLAY_NAME = "results.json", "masks", "overlay.mp4"
EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
USAGE_ERRORS = (
    InvalidInputError,
    ConfigError,
    SourceNotFoundError,
    UnsupportedSourceError,
    UnknownIdError,
)
_VIDEO_LIKE = re.compile(r"\.(mp4|mov|avi|mkv|webm|jpe?g|png|bmp|tiff?|webp)$", re.IGNORECASE)


# ----------------------------------------------------------------------------- arguments


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is on ``--help``)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {text!r}")
    return value


def _split_label(text: str, form: str) -> tuple[str, int]:
    body, sep, label = text.partition(":")
    if not sep:
        return body, 1
    if label.strip() not in ("0", "1"):
        raise argparse.ArgumentTypeError(
            f"expected {form} with LABEL 1 (positive) or 0 (negative), got {text!r}"
        )
    return body, int(label)


def _hint(text: str) -> str:
    if _VIDEO_LIKE.search(text) or os.path.exists(text):
        return " (put VIDEO before the option, or end its values with --)"
    return ""


def _coordinates(text: str, body: str, form: str, count: int) -> list[float]:
    """``count`` comma-separated numbers of ``body``; an argparse error naming ``form``."""
    parts = body.split(",")
    try:
        if len(parts) != count:
            raise ValueError(f"{len(parts)} values")
        return [_number(p.strip(), "a coordinate") for p in parts]
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"expected {form}, got {text!r} ({error}){_hint(text)}"
        ) from None


def parse_point(text: str) -> tuple[float, float, int]:
    """``"X,Y"`` or ``"X,Y:LABEL"`` (pixels; LABEL 1 foreground, 0 background) -> (x, y, label)."""
    form = "X,Y or X,Y:LABEL (pixels)"
    body, label = _split_label(text, form)
    x, y = _coordinates(text, body, form, 2)
    return x, y, label


def parse_box(text: str) -> tuple[tuple[float, float, float, float], int]:
    """``"CX,CY,W,H[:LABEL]"`` normalized to [0, 1] -> ((cx, cy, w, h), label)."""
    form = "CX,CY,W,H or CX,CY,W,H:LABEL (normalized to [0, 1])"
    body, label = _split_label(text, form)
    cx, cy, w, h = _coordinates(text, body, form, 4)
    return (cx, cy, w, h), label


def parse_formats(text: str) -> tuple[str, ...]:
    """``"ytvis,png"`` -> ``("ytvis", "png")`` (order kept, duplicates dropped)."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(FORMATS)}")
    for name in names:
        if name not in FORMATS:
            close = difflib.get_close_matches(name, FORMATS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise argparse.ArgumentTypeError(
                f"unknown format {name!r}{hint}; expected a comma-separated list of "
                f"{', '.join(FORMATS)}"
            )
    return tuple(dict.fromkeys(names))


def _frame_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a frame index (an int >= 0), got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a frame index (an int >= 0), got {value}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {value}")
    return value


def _device_name(text: str) -> str:
    if text in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", text):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """The ``sam3video`` argument parser (subcommands ``track`` and ``info``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser = _Parser(
        prog=PROG,
        description="SAM 3 video: segment and track objects in a video from text, clicks and "
        "boxes.",
        epilog="Run 'sam3video COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    track = commands.add_parser(
        "track",
        parents=[common],
        help="segment and track objects in a video, writing the results as it goes",
        description="Segment and track objects in VIDEO from a text prompt, boxes and/or "
        "clicks on one frame, and write the results while tracking.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_TRACK_EPILOG,
    )
    track.add_argument(
        "video",
        metavar="VIDEO",
        help="a video (.mp4 .mov .avi .mkv .webm), a folder of frames, or an image",
    )
    prompts = track.add_argument_group("prompts (at least one)")
    prompts.add_argument("--text", metavar="TEXT", help='a noun phrase, e.g. "person"')
    prompts.add_argument(
        "--points",
        metavar="X,Y[:LABEL]",
        nargs="+",
        action="extend",
        type=parse_point,
        help="clicks in pixels for one new object; LABEL 1 = foreground (default), 0 = background",
    )
    prompts.add_argument(
        "--box",
        metavar="CX,CY,W,H[:LABEL]",
        nargs="+",
        action="extend",
        type=parse_box,
        help="exemplar boxes, center and size normalized to [0, 1]; LABEL 1 = positive "
        "(default), 0 = negative",
    )
    prompts.add_argument(
        "--frame",
        metavar="N",
        type=_frame_number,
        default=0,
        help="the frame the prompts are on (default 0)",
    )
    run = track.add_argument_group("tracking")
    run.add_argument(
        "--direction",
        choices=("forward", "backward", "both"),
        default="both",
        help="forward from --frame, backward, or forward then backward (default both)",
    )
    run.add_argument(
        "--max-frames",
        metavar="N",
        type=_positive,
        default=None,
        help="at most N frames per direction, counting --frame (default: to the video's end)",
    )
    model = track.add_argument_group("model")
    _add_model_arguments(model)
    model.add_argument(
        "--device",
        type=_device_name,
        default="auto",
        metavar="{auto,cpu,cuda,mps}",
        help="auto = CUDA, then MPS, then CPU (default auto)",
    )
    model.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="auto = bfloat16 on CUDA, float32 elsewhere (default auto)",
    )
    model.add_argument(
        "--loader",
        choices=("cv2", "pyav"),
        default="cv2",
        help="video decoder (default cv2); both give the same frames",
    )
    output = track.add_argument_group("output")
    output.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help=f"output folder (default ./{DEFAULT_OUT_ROOT}/<video stem>)",
    )
    output.add_argument(
        "--format",
        metavar="LIST",
        type=parse_formats,
        default=("ytvis",),
        help="comma-separated: ytvis (results.json), png (masks/), overlay (overlay.mp4); "
        "default ytvis",
    )
    output.add_argument("--quiet", action="store_true", help="no progress output")
    track.set_defaults(func=run_track)

    info = commands.add_parser(
        "info",
        parents=[common],
        help="versions, devices, and which checkpoint would be used",
        description="Print versions, available devices, and which checkpoint 'track' would "
        "use and from where (nothing is loaded or downloaded).",
    )
    _add_model_arguments(info)
    info.set_defaults(func=run_info)
    return parser


def _add_model_arguments(group: Any) -> None:
    group.add_argument(
        "--model",
        choices=("full", "tiny"),
        default="full",
        help="full = Meta's SAM 3 (needs its checkpoint); tiny = synthetic weights, runs the "
        "pipeline anywhere, meaningless masks (default full)",
    )
    group.add_argument(
        "--checkpoint",
        metavar="PATH",
        default=None,
        help="Meta's sam3.pt (default: $SAM3VIDEO_CHECKPOINT, the Hugging Face cache, then a "
        "download from facebook/sam3)",
    )


_TRACK_EPILOG = f"""\
examples:
  sam3video track video.mp4 --text "person"
  sam3video track video.mp4 --text "dog" --format ytvis,png,overlay --out results/
  sam3video track video.mp4 --points 320,180 400,200:0 --frame 30 --direction both
  sam3video track video.mp4 --text "car" --model tiny --device cpu --max-frames 10

outputs (in --out):
  {JSON_NAME:<13} SA-Co/YTVIS JSON: one annotation per object, COCO RLE masks, boxes,
                areas, mean score and per-frame scores (null where not visible)
  {PNG_DIR + "/":<13} one palette PNG per frame, 00000.png...: pixel = obj_id + 1, 0 = none
  {OVERLAY_NAME:<13} the video with masks, contours, ids and scores drawn on it

Text and boxes form one concept prompt; points click one new object. With both, the
concept is tracked first, then the clicks (a second pass). Ctrl-C keeps the frames done.
Exit codes: 0 ok, 2 bad command line or input, 1 runtime failure, 130 interrupted.
"""


# ----------------------------------------------------------------------------- progress


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Frames done, objects seen and frames/s on stderr.

    On a terminal (``tty``) one line is redrawn at most every 0.1 s; otherwise a log line is
    printed for the first frame, then every ``log_every`` seconds, and at the end.
    ``enabled=False`` prints nothing.
    """

    def __init__(
        self,
        total: int,
        *,
        stream: IO[str] | None = None,
        tty: bool | None = None,
        enabled: bool = True,
        label: str = "tracking",
        log_every: float = 10.0,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.tty = bool(tty if tty is not None else getattr(self.stream, "isatty", bool)())
        self.enabled = enabled
        self.total = max(int(total), 0)
        self.label = label
        self.log_every = log_every
        self.done = 0
        self.objects = 0
        self.start = time.perf_counter()
        self._last_draw = -math.inf
        self._drawn = False

    def begin(self) -> None:
        """Restart the clock (the frames/s count from here)."""
        self.start = time.perf_counter()

    @property
    def rate(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def update(self, frames: int = 1, objects: int | None = None, label: str | None = None) -> None:
        self.done += frames
        if objects is not None:
            self.objects = objects
        if label is not None:
            self.label = label
        if not self.enabled:
            return
        now = time.perf_counter()
        last = self.done >= self.total
        if self.tty:
            if last or now - self._last_draw >= 0.1:
                self._draw_bar()
                self._last_draw = now
        elif last or self.done == frames or now - self._last_draw >= self.log_every:
            self._log_line()
            self._last_draw = now

    def _numbers(self) -> tuple[str, str]:
        rate = self.rate
        left = (self.total - self.done) / rate if rate > 0 and self.total > self.done else 0.0
        noun = "object" if self.objects == 1 else "objects"
        return f"{self.objects} {noun}, {rate:.2f} frames/s", _clock(left)

    def _draw_bar(self) -> None:
        stats, left = self._numbers()
        total = max(self.total, self.done, 1)
        count = f"{self.done}/{total}"
        tail = f" {100 * self.done / total:3.0f}% | {stats} | {left} left"
        columns = shutil.get_terminal_size((80, 24)).columns
        width = max(columns - len(self.label) - len(count) - len(tail) - 5, 0)
        bar = ""
        if width >= 5:
            filled = int(width * self.done / total)
            bar = " [" + "#" * filled + "." * (width - filled) + "]"
        line = f"{self.label} {count}{bar}{tail}"[: columns - 1]
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def _log_line(self) -> None:
        stats, left = self._numbers()
        total = max(self.total, self.done, 1)
        self.stream.write(
            f"{PROG}: {self.label} {self.done}/{total} frames "
            f"({100 * self.done / total:.0f}%), {stats}, {left} left\n"
        )
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


# ----------------------------------------------------------------------------- exports


@contextlib.contextmanager
def _hold_sigint() -> Iterator[None]:
    """Delay Ctrl-C until the block ends, so that a frame is never half-written."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


class _Exports:
    """The requested writers, opened at the first result (so that a run that fails before
    any result leaves no file behind) and closed together."""

    def __init__(self, out: Path, formats: Sequence[str], frames: Any, text: str | None) -> None:
        self.out = out
        self.formats = tuple(formats)
        self.frames = frames
        self.text = text
        self.writers: list[Any] = []
        self.overlay: Any = None
        self.written: set[int] = set()
        self.seconds = 0.0
        self._open = False

    def _start(self) -> None:
        from sam3video.io.export import OverlayWriter, PngWriter, YtvisWriter

        frames = self.frames
        h, w, n = frames.height, frames.width, len(frames)
        self._open = True
        if "ytvis" in self.formats:
            name = Path(frames.path).stem or "video"
            self.writers.append(
                YtvisWriter(self.out / JSON_NAME, name, h, w, n, fps=frames.fps, text=self.text)
            )
        if "png" in self.formats:
            folder = self.out / PNG_DIR
            if folder.is_dir():  # a previous run's frames would mix with this run's
                for old in folder.glob("*.png"):
                    if old.stem.isdigit():
                        old.unlink()
            self.writers.append(PngWriter(folder, h, w))
        if "overlay" in self.formats:
            self.overlay = OverlayWriter(
                self.out / OVERLAY_NAME, frames.fps or 25.0, h, w, source=frames
            )
            self.writers.append(self.overlay)

    def write(self, frame_index: int, outputs: dict) -> None:
        start = time.perf_counter()
        with _hold_sigint():
            if not self._open:
                self._start()
            for writer in self.writers:
                writer.write(frame_index, outputs)
            self.written.add(frame_index)
        self.seconds += time.perf_counter() - start

    def close(self, complete: bool) -> None:
        if self.overlay is not None and not complete:
            self.overlay.source = None  # encode the processed frames only: stop quickly
        errors = []
        for writer in self.writers:
            try:
                writer.close()
            except Exception as error:  # close every writer, report the first failure
                errors.append(error)
        if errors:
            raise errors[0]

    def files(self) -> list[str]:
        names = []
        if "ytvis" in self.formats and (self.out / JSON_NAME).is_file():
            names.append(JSON_NAME)
        if "png" in self.formats and self._open:
            names.append(f"{PNG_DIR}/ ({len(self.written)} PNGs)")
        if "overlay" in self.formats and (self.out / OVERLAY_NAME).is_file():
            names.append(OVERLAY_NAME)
        return names


# ----------------------------------------------------------------------------- track


@dataclass
class TrackSummary:
    """What a ``track`` run did. ``frames``: distinct frames written; ``results``: every
    result written (a frame may be written more than once: a prompt's result, then each
    pass); ``propagated``: the results of propagations (what ``track_seconds`` timed)."""

    frames: int = 0
    objects: int = 0
    results: int = 0
    propagated: int = 0
    video_frames: int = 0
    track_seconds: float = 0.0
    write_seconds: float = 0.0
    load_seconds: float = 0.0
    out: Path | None = None
    files: list[str] = field(default_factory=list)
    interrupted: bool = False


def _prompt_requests(args: argparse.Namespace, session_id: str) -> list[dict[str, Any]]:
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


_FLAG_OF_FIELD = {
    "bounding_box_labels": "--box (labels)",
    "bounding_boxes": "--box",
    "point_labels": "--points (labels)",
    "points": "--points",
    "text": "--text",
}


def _as_flag_error(error: InvalidInputError) -> InvalidInputError:
    """The same error, its leading request-field name replaced by the command-line flag."""
    message = re.sub(
        r"^(bounding_box_labels|bounding_boxes|point_labels|points|text)\b",
        lambda m: _FLAG_OF_FIELD[m.group(1)],
        str(error),
    )
    return type(error)(message)


def _expected_frames(num_frames: int, start: int, max_frames: int | None, direction: str) -> int:
    """How many results one propagation yields (the request API's processing order)."""
    n = num_frames if max_frames is None else max_frames - 1
    forward = min(start + n, num_frames - 1) - start + 1
    backward = start - max(start - n, 0)
    return {"forward": forward, "backward": backward, "both": forward + backward}[direction]


def _check_device(name: str) -> Any:
    import torch

    from sam3video.predictor import pick_device

    if name == "auto":
        return pick_device(None)
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InvalidInputError(
                f"--device: CUDA is not available here (torch {torch.__version__}, no CUDA "
                "device); use --device cpu or auto"
            )
        if device.index is not None and device.index >= count:
            raise InvalidInputError(
                f"--device: expected cuda:0..cuda:{count - 1} ({count} CUDA devices), got {name}"
            )
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InvalidInputError(
                "--device: MPS (Apple GPU) is not available here; use --device cpu or auto"
            )
    return device


def _prepare_out(args: argparse.Namespace) -> Path:
    out = Path(args.out) if args.out else Path(DEFAULT_OUT_ROOT) / Path(args.video).stem
    out = out.expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".{PROG}-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or str(error)
        raise InvalidInputError(
            f"--out: cannot write in the folder {str(out)!r} ({reason}); choose another "
            "folder with --out DIR"
        ) from None
    return out


def _load_predictor(args: argparse.Namespace, device: Any, dtype: Any, say: Any) -> Any:
    from sam3video.checkpoints import locate_checkpoint, resolve_checkpoint, verify_checkpoint
    from sam3video.predictor import Sam3VideoPredictor

    checkpoint = None
    if args.model == "full":
        checkpoint = resolve_checkpoint(args.checkpoint)
    elif args.checkpoint:
        location = locate_checkpoint(args.checkpoint)
        checkpoint = verify_checkpoint(location.path, location.source)
    else:
        print(
            f"{PROG}: warning: --model tiny runs on SYNTHETIC weights: the masks are "
            "meaningless (a test of the pipeline, not a segmentation)",
            file=sys.stderr,
        )
    where = f" from {checkpoint}" if checkpoint is not None else ""
    say(f"loading the {args.model} model on {device}{where}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*synthetic weights.*")
        return Sam3VideoPredictor(
            checkpoint_path=checkpoint,
            video_loader_type=args.loader,
            model_config=args.model,
            device=device,
            dtype=dtype,
        )


def run_track(args: argparse.Namespace, predictor: Any = None) -> int:
    """``sam3video track``: returns the exit code (0, or 130 when interrupted while
    tracking); errors are raised (`main` turns them into exit codes).

    ``predictor``: an existing `Sam3VideoPredictor` (or an object with its request API) to
    use instead of loading one from ``--model`` / ``--checkpoint``.
    """
    summary = track(args, predictor)
    if summary.interrupted:
        saved = ", ".join(summary.files) or "no file (no frame was finished)"
        print(
            f"{PROG}: interrupted after {summary.frames} frames; saved in {summary.out}: {saved}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    n = summary.propagated
    per_frame = summary.track_seconds / n if n else 0.0
    rate = n / summary.track_seconds if summary.track_seconds > 0 else 0.0
    print(f"frames   {summary.frames} of {summary.video_frames}")
    print(f"objects  {summary.objects}")
    print(
        f"time     {per_frame:.3f} s/frame, {rate:.2f} frames/s (of which writing "
        f"{summary.write_seconds / max(summary.results, 1):.3f} s/frame); "
        f"model loaded in {summary.load_seconds:.1f} s"
    )
    print(f"results  {summary.out}: {', '.join(summary.files) or 'nothing written'}")
    return EXIT_OK


def track(args: argparse.Namespace, predictor: Any = None) -> TrackSummary:
    """Run the ``track`` job; returns its `TrackSummary` (``interrupted`` after Ctrl-C)."""

    def say(message: str) -> None:
        if not args.quiet:
            print(f"{PROG}: {message}", file=sys.stderr)

    if args.text is None and not args.box and not args.points:
        raise InvalidInputError(
            'no prompt: expected --text, --box and/or --points (e.g. --text "person")'
        )
    if args.text is not None and not args.text.strip():
        raise InvalidInputError(f"--text: expected a non-empty noun phrase, got {args.text!r}")

    import torch

    from sam3video.errors import FrameIndexError
    from sam3video.io.frames import open_frames
    from sam3video.requests import check_points_in_frame, parse_request

    device = _check_device(args.device) if predictor is None else None
    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)

    with open_frames(args.video, loader=args.loader) as frames:
        num_frames = len(frames)
        if args.frame >= num_frames:
            raise FrameIndexError(
                f"--frame: expected a frame index in [0, {num_frames}) ({args.video} has "
                f"{num_frames} frames), got {args.frame}"
            )
        requests = _prompt_requests(args, "check")
        for request in requests:  # validate everything before loading the model
            try:
                parse_request(request, stream=False)
                if "points" in request:
                    check_points_in_frame(request["points"], frames.width, frames.height)
            except InvalidInputError as error:
                raise _as_flag_error(error) from None
        out = _prepare_out(args)

        summary = TrackSummary(out=out, video_frames=num_frames)
        start = time.perf_counter()
        if predictor is None:
            predictor = _load_predictor(args, device, dtype, say)
        summary.load_seconds = time.perf_counter() - start
        session_id = predictor.handle_request(
            {"type": "start_session", "resource_path": str(args.video)}
        )["session_id"]
        exports = _Exports(out, args.format, frames, args.text)
        per_pass = _expected_frames(num_frames, args.frame, args.max_frames, args.direction)
        progress = Progress(per_pass * len(requests), enabled=not args.quiet)
        seen: set[int] = set()
        complete = False
        try:
            for k, request in enumerate(_prompt_requests(args, session_id)):
                label = "tracking" if k == 0 else "tracking clicks"
                result = predictor.handle_request(request)
                seen.update(result["outputs"])
                exports.write(result["frame_index"], result["outputs"])
                summary.results += 1
                stream = predictor.handle_stream_request(
                    {
                        "type": "propagate_in_video",
                        "session_id": session_id,
                        "propagation_direction": args.direction,
                        "start_frame_index": args.frame,
                        "max_frame_num_to_track": (
                            None if args.max_frames is None else args.max_frames - 1
                        ),
                    }
                )
                tick = time.perf_counter()
                if k == 0:
                    progress.begin()
                for item in stream:
                    seen.update(item["outputs"])
                    exports.write(item["frame_index"], item["outputs"])
                    summary.results += 1
                    summary.propagated += 1
                    progress.update(1, objects=len(seen), label=label)
                summary.track_seconds += time.perf_counter() - tick
            complete = True
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            progress.close()
            try:
                exports.close(complete)
            finally:
                predictor.handle_request({"type": "close_session", "session_id": session_id})
        summary.frames = len(exports.written)
        summary.objects = len(seen)
        summary.write_seconds = exports.seconds
        summary.files = exports.files()
        return summary


# ----------------------------------------------------------------------------- info


def _version_of(module: str) -> str:
    from importlib import metadata

    names = {"cv2": "opencv-python-headless", "av": "av"}
    try:
        imported = __import__(module)
        version = getattr(imported, "__version__", None)
        if version:
            return str(version)
        return metadata.version(names.get(module, module))
    except Exception:  # not installed, or broken
        return "not installed"


def run_info(args: argparse.Namespace) -> int:
    """``sam3video info``: versions, devices and the checkpoint that ``track`` would use."""
    import platform

    import torch

    from sam3video import checkpoints

    lines = [f"{PROG} {__version__}", f"python {platform.python_version()}"]
    for module in ("torch", "numpy", "cv2", "av", "PIL", "pycocotools", "huggingface_hub"):
        label = {"cv2": "opencv", "PIL": "pillow"}.get(module, module)
        lines.append(f"{label} {_version_of(module)}")

    lines.append("devices:")
    cpu = platform.processor() or platform.machine() or "unknown"
    lines.append(f"  cpu    {cpu}, {torch.get_num_threads()} threads")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            lines.append(f"  cuda:{i} {props.name}, {props.total_memory / 2**30:.0f} GiB")
    else:
        built = torch.version.cuda
        lines.append(f"  cuda   not available ({'no device' if built else 'CPU build of torch'})")
    mps = getattr(torch.backends, "mps", None)
    has_mps = mps is not None and mps.is_available()
    lines.append(f"  mps    {'available' if has_mps else 'not available'}")
    from sam3video.predictor import default_dtype, pick_device

    auto = pick_device(None)
    lines.append(f"  auto   -> {auto} ({str(default_dtype(auto)).replace('torch.', '')})")
    lines.append(f"overlay codec: {_overlay_codec()}")

    lines.append(f"checkpoint for --model {args.model}:")
    if args.model == "tiny" and not args.checkpoint:
        lines.append("  none needed: --model tiny runs on synthetic weights (meaningless masks)")
    else:
        lines.extend(_checkpoint_lines(args.checkpoint, checkpoints))
    print("\n".join(lines))
    return EXIT_OK


def _overlay_codec() -> str:
    try:
        import av

        av.codec.Codec("libx264", "w")
        return "H.264 (libx264)"
    except Exception:  # FFmpeg without x264
        return "MPEG-4 Part 2 (FFmpeg has no libx264)"


def _checkpoint_lines(explicit: str | None, checkpoints: Any) -> list[str]:
    env_value = os.environ.get(checkpoints.ENV_VAR) or None
    cached = checkpoints.find_in_hf_cache()
    try:
        import huggingface_hub  # noqa: F401

        hub = "possible (huggingface_hub installed; the repository is gated)"
    except ImportError:
        hub = None
    lines = [
        "  discovery order (the first found wins):",
        f"    1. --checkpoint            {explicit or 'not given'}",
        f"    2. ${checkpoints.ENV_VAR:<22} {env_value or 'not set'}",
        f"    3. Hugging Face cache      "
        f"{cached or 'no sam3.pt in ' + str(checkpoints.hf_cache_dir())}",
        f"    4. download {checkpoints.HF_REPO:<14} "
        f"{hub or 'impossible: huggingface_hub is not installed'}",
    ]
    try:
        location = checkpoints.locate_checkpoint(explicit)
        if location.path is None and hub is None:
            lines.append(
                "  would use: nothing, 'track --model full' would fail: "
                "pip install 'sam3video[hub]' and log in to download, or pass --checkpoint"
            )
            return lines
        lines.append(f"  would use: {location.description}")
        if location.path is not None:
            checkpoints.verify_checkpoint(location.path, location.source)
            lines.append("  file check: ok (a readable checkpoint archive; not loaded)")
    except Sam3VideoError as error:
        lines.append(f"  problem: {_one_line(error)}")
    return lines


# ----------------------------------------------------------------------------- main


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"{PROG}: warning: {_one_line(message)}", file=sys.stderr)


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
            return args.func(args)
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Exception as error:  # every error becomes one line and an exit code
            if debug:
                traceback.print_exc()
            if isinstance(error, USAGE_ERRORS):
                code, text = EXIT_USAGE, _one_line(error)
            elif isinstance(error, Sam3VideoError):
                code, text = EXIT_RUNTIME, _one_line(error)
            elif isinstance(error, OSError):
                code = EXIT_RUNTIME
                where = f" {error.filename!r}" if error.filename else ""
                text = f"{error.strerror or _one_line(error)}{where}"
            else:
                code = EXIT_RUNTIME
                hint = "" if debug else "; run again with --debug for the traceback"
                text = f"unexpected {type(error).__name__}: {_one_line(error)}{hint}"
            print(f"{PROG}: error: {text}", file=sys.stderr)
            return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""One video of a batch: check its key, run ``track`` on it, commit its folder.

`run_job` is what every runner (in-process, local worker processes, Ray actors) calls per
video. It reuses the product end to end: the predictor's request API through
`sam3video.cli.track.track` (the job of ``sam3video track``, given a loaded predictor), so a
video's folder holds exactly what ``sam3video track`` writes for the same row and options.

An error of one video (missing or corrupt file, a frame index out of range, a prompt outside
the frame, a write failure) becomes its `VideoResult` with the error's type and message and
the batch goes on. Ctrl-C is not an error: the video's staging folder is removed and
`KeyboardInterrupt` propagates.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sam3video import __version__
from sam3video.batch.manifest import VideoJob
from sam3video.batch.options import BatchOptions, job_key, video_digest
from sam3video.errors import SourceNotFoundError

__all__ = ["LazyPredictor", "VideoResult", "load_predictor", "run_job"]

OK, SKIPPED, FAILED, NOT_RUN = "ok", "skipped", "failed", "not run"


@dataclass
class VideoResult:
    """What happened to one video (a row of ``summary.json``)."""

    id: str
    video: str
    status: str
    frames: int = 0
    objects: int = 0
    seconds: float = 0.0
    error: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VideoResult:
        return cls(**data)


def load_predictor(options: BatchOptions, device: str | None = None) -> Any:
    """A `Sam3VideoPredictor` for ``options`` (frames decoded ahead in a background thread)."""
    from sam3video.checkpoints import load_predictor as load

    return load(
        options.model,
        options.checkpoint,
        device=device or options.device,
        dtype=options.dtype,
        loader=options.loader,
        async_loading_frames=True,
    )


class LazyPredictor:
    """The predictor, loaded for the first video that runs (a rerun that only finds finished
    videos loads nothing). A failure to load is kept and raised again for later videos."""

    def __init__(self, options: BatchOptions, device: str | None = None) -> None:
        self.options = options
        self.device = device
        self._predictor: Any = None
        self._error: Exception | None = None

    def get(self) -> Any:
        if self._error is not None:
            raise self._error
        if self._predictor is None:
            try:
                self._predictor = load_predictor(self.options, self.device)
            except Exception as error:
                self._error = error
                raise
        return self._predictor

    def close(self) -> None:
        if self._predictor is not None:
            self._predictor.shutdown()
            self._predictor = None


def run_job(
    job: VideoJob,
    options: BatchOptions,
    store: Any,
    predictor: LazyPredictor,
    show_progress: bool = False,
) -> VideoResult:
    """Run one video unless its current result is already in ``store`` (module notes)."""
    start = time.perf_counter()
    result = VideoResult(job.id, job.video, FAILED)
    try:
        if not Path(job.video).exists():
            raise SourceNotFoundError(f"video {job.video!r} does not exist")
        key = job_key(job, options, video_digest(job.video))
        done = store.marker(job.id)
        if done is not None and done.get("key") == key:
            result.status = SKIPPED
            result.frames, result.objects = done.get("frames", 0), done.get("objects", 0)
            return result
        with store.staging(job.id) as folder:
            summary = _track(job, options, folder, predictor, show_progress)
            if summary.interrupted:
                raise KeyboardInterrupt
            result.frames, result.objects = summary.frames, summary.objects
            result.seconds = round(time.perf_counter() - start, 3)
            store.commit(job.id, folder, _marker(job, key, result, summary.files))
        result.status = OK
    except KeyboardInterrupt:
        raise
    except Exception as error:  # one video's failure is recorded; the batch goes on
        result.status = FAILED
        result.error = describe(error)
        result.seconds = round(time.perf_counter() - start, 3)
    return result


def describe(error: BaseException) -> dict[str, str]:
    """``{"type": "DecodeError", "message": "..."}`` (one line)."""
    if isinstance(error, FileNotFoundError) and not str(error).strip():
        message = f"no such file: {error.filename!r}"
    else:
        message = " ".join(str(error).split()) or type(error).__name__
    return {"type": type(error).__name__, "message": message[:1000]}


def _track(
    job: VideoJob, options: BatchOptions, out: Any, predictor: LazyPredictor, show_progress: bool
) -> Any:
    """``sam3video track`` on one row, with an already loaded predictor."""
    from sam3video.cli.args import build_parser
    from sam3video.cli.track import track

    argv = ["track", job.video, "--out", str(out), "--frame", str(job.frame_index)]
    args = build_parser().parse_args(argv)
    args.text = job.text
    if job.bounding_boxes is not None:
        labels = job.bounding_box_labels or [1] * len(job.bounding_boxes)
        args.box = [(tuple(box), int(label)) for box, label in zip(job.bounding_boxes, labels)]
    if job.points is not None:
        args.points = [(x, y, int(label)) for (x, y), label in zip(job.points, job.point_labels)]
    args.model, args.checkpoint = options.model, options.checkpoint
    args.device, args.dtype, args.loader = options.device, options.dtype, options.loader
    args.format, args.direction = tuple(options.formats), options.direction
    args.max_frames, args.threads = options.max_frames, options.threads
    args.quiet = not show_progress
    if show_progress:
        print(f"{job.id}: {job.video}", file=sys.stderr)
    return track(args, predictor.get())


def _marker(job: VideoJob, key: str, result: VideoResult, files: list[str]) -> dict[str, Any]:
    return {
        "key": key,
        "id": job.id,
        "video": job.video,
        "frames": result.frames,
        "objects": result.objects,
        "seconds": result.seconds,
        "files": files,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sam3video": __version__,
    }

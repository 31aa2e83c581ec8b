"""The files a batch writes at the end: ``summary.json`` and the merged ``predictions.json``.

``summary.json``
    ``counts`` per status and one row per manifest row, in manifest order: ``id``,
    ``video``, ``status`` (``ok``: ran now; ``skipped``: its current result was already
    there; ``failed``: see ``error``, ``{"type", "message"}``; ``not run``: the run was
    interrupted first), ``frames`` and ``objects`` (what its files hold), ``seconds`` (this
    run's time for it, 0 when skipped); plus the options, the manifest and the run's times.
``predictions.json``
    every finished video's ``results.json`` in one SA-Co/YTVIS file (with ``ytvis`` among
    the formats): ``videos`` in manifest order, ``id`` 0, 1, ... and ``video_name`` = the
    row's id; one category per distinct text (``"object"`` for rows without text), ids
    1, 2, ... in order of first use; annotations renumbered, ``obj_id`` kept; one
    ``video_np_pairs`` entry per video. `sam3video eval` reads it as it is.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import IO, Any

from sam3video.batch.job import OK, SKIPPED, VideoResult
from sam3video.batch.manifest import VideoJob

__all__ = ["PREDICTIONS", "SUMMARY", "summary", "write_merged_predictions"]

SUMMARY, PREDICTIONS, RESULTS = "summary.json", "predictions.json", "results.json"


def summary(results: Sequence[VideoResult], **fields: Any) -> dict[str, Any]:
    """The ``summary.json`` content (``fields``: run-wide entries such as the options)."""
    counts = Counter(r.status for r in results)
    return {
        **fields,
        "counts": {
            status: counts.get(status, 0) for status in ("ok", "skipped", "failed", "not run")
        },  # fmt: skip
        "videos": [r.to_dict() for r in results],
    }


def write_merged_predictions(
    jobs: Sequence[VideoJob], results: Sequence[VideoResult], store: Any, out: IO[str]
) -> int:
    """Write one SA-Co/YTVIS file from the finished videos' ``results.json`` (module notes)
    to ``out``, one video at a time; returns the number of videos in it."""
    done = {r.id for r in results if r.status in (OK, SKIPPED)}
    categories: dict[str, int] = {}
    videos, pairs = [], []
    count = 0
    out.write('{"info": {"description": "sam3video batch predictions"}, "annotations": [')
    for job in jobs:
        if job.id not in done:
            continue
        data = json.loads(store.read_bytes(job.id, RESULTS))
        video_id = len(videos)
        video = dict(data["videos"][0], id=video_id, video_name=job.id)
        video["file_names"] = [f"{job.id}/{name.rsplit('/', 1)[-1]}"
                               for name in video.get("file_names", [])]  # fmt: skip
        videos.append(video)
        name = job.text if job.text is not None else "object"
        category_id = categories.setdefault(name, len(categories) + 1)
        for ann in data["annotations"]:
            count += 1
            record = dict(ann, id=count, video_id=video_id, category_id=category_id)
            record["noun_phrase"] = name
            out.write((", " if count > 1 else "") + json.dumps(record))
        pairs.append({"id": len(pairs) + 1, "video_id": video_id, "category_id": category_id,
                      "noun_phrase": name, "num_masklets": len(data["annotations"])})  # fmt: skip
    out.write('], "videos": ' + json.dumps(videos))
    out.write(
        ', "categories": ' + json.dumps([{"id": i, "name": n} for n, i in categories.items()])
    )
    out.write(', "video_np_pairs": ' + json.dumps(pairs) + "}\n")
    return len(videos)

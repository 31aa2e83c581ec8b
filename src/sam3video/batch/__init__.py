"""Many videos: ``sam3video batch`` on this machine or a Ray cluster, resumable.

A manifest (`manifest`) lists the videos and their prompts; `run.run_batch` runs each row
through the product (`job.run_job`: ``sam3video track``'s job with a loaded predictor), in
this process, in local worker processes (`local`) or on Ray actors (`ray_runner`), writes each
video's folder atomically (`store`: a local folder or an fsspec URL), skips videos whose
current result is already there (`options`: the key over video bytes, prompts and options),
and writes ``summary.json`` and a merged ``predictions.json`` at the end (`summary`).
`progress` draws the bar; `cli` is the subcommand.
"""

from sam3video.batch.manifest import ManifestError, VideoJob, read_manifest
from sam3video.batch.options import BatchOptions
from sam3video.batch.run import run_batch

__all__ = ["BatchOptions", "ManifestError", "VideoJob", "read_manifest", "run_batch"]

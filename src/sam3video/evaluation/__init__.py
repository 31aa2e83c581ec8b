"""Evaluation against ground truth: J&F, cgF1, phrase HOTA and YT-VIS mask mAP.

``evaluate(gt, pred)`` takes a YTVIS / SA-Co ground-truth dict (SA-Co/VEval's layout,
negative video-phrase pairs included) and predictions (a SAM 3 prediction list, or the
``results.json`` / merged predictions file that ``sam3video track`` and ``sam3video batch``
write) and returns a report (`sam3video.evaluation.report`). The metrics are those of the
official evaluators, checked against them to 1e-4 by the tests (fixtures from
``tools/reference/gen_eval.py``):

  * `jf`: J&F (DAVIS / SA-V: region Jaccard and boundary F-measure per object);
  * `cgf1`: cgF1, positive micro F1 and IL_MCC (``sam3/eval``'s video demo F1);
  * `hota`: phrase HOTA (``sam3/eval``'s TrackEval-based HOTA on video-phrase pairs);
  * `ap`: YT-VIS class mask mAP and phrase AP (pycocotools' COCOeval on masklets).

`data` reads the files and lines predictions up with the ground truth (ids, frames);
`masklets` holds the video IoU every metric shares. scipy (the ``eval`` extra) provides the
Hungarian matching.
"""

from sam3video.evaluation.data import EvalInputError, align, load_json
from sam3video.evaluation.report import METRICS, OFFICIAL_NAMES, evaluate

__all__ = ["METRICS", "OFFICIAL_NAMES", "EvalInputError", "align", "evaluate", "load_json"]

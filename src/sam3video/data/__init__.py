"""The procedural shapes world: videos of moving textured shapes with exact masks and phrases.

A world is a pure function of a seed: textured shapes (`SHAPES`) in named colours
(`COLOURS`) move, turn, occlude each other and enter or leave the frame over grey textured
backgrounds; every frame comes with exact visible (and amodal) instance masks, and every
object answers to four noun phrases ("red circle", "circle", "red shape", "shape").
Seeds below `HELDOUT_START` are for training, the others held out (`split_of_seed`).

Modules: `shapes` (outlines, colours, phrases), `seeds` (split, random streams), `render`
(coverage, textures, backgrounds), `world` (`ShapesWorld`, `Clip`, `render_clip`),
`scenarios` (planned occlusions and concept line-ups for semantic tests), `dataset` (torch
training samples) and `export` (image folders, MP4, YTVIS/SA-Co JSON). The API is described
in each module's notes.
"""

from sam3video.data.dataset import (
    ShapesClipDataset,
    TrainingClip,
    collate_clips,
    sample_training_clip,
)
from sam3video.data.export import (
    clip_to_ytvis,
    write_dataset,
    write_frames,
    write_video,
    write_ytvis,
)
from sam3video.data.render import Texture
from sam3video.data.scenarios import concept_clip, concept_world, occlusion_clip, occlusion_world
from sam3video.data.seeds import HELDOUT_START, heldout_seed, split_of_seed, train_seed
from sam3video.data.shapes import (
    COLOURS,
    PHRASE_LEVELS,
    SHAPES,
    phrase_matches,
    phrases_for,
    vocabulary,
)
from sam3video.data.world import Clip, Instance, ObjectSpec, ShapesWorld, render_clip

__all__ = [
    "COLOURS",
    "HELDOUT_START",
    "PHRASE_LEVELS",
    "SHAPES",
    "Clip",
    "Instance",
    "ObjectSpec",
    "ShapesClipDataset",
    "ShapesWorld",
    "Texture",
    "TrainingClip",
    "clip_to_ytvis",
    "collate_clips",
    "concept_clip",
    "concept_world",
    "heldout_seed",
    "occlusion_clip",
    "occlusion_world",
    "phrase_matches",
    "phrases_for",
    "render_clip",
    "sample_training_clip",
    "split_of_seed",
    "train_seed",
    "vocabulary",
    "write_dataset",
    "write_frames",
    "write_video",
    "write_ytvis",
]

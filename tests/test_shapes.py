"""The procedural shapes world (sam3video.data): determinism, exact masks, scenarios, split,
training samples and exports."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from sam3video.data import (
    COLOURS,
    HELDOUT_START,
    SHAPES,
    ShapesClipDataset,
    ShapesWorld,
    clip_to_ytvis,
    concept_world,
    heldout_seed,
    occlusion_world,
    render_clip,
    sample_training_clip,
    split_of_seed,
    train_seed,
    vocabulary,
    write_dataset,
    write_frames,
    write_video,
    write_ytvis,
)
from sam3video.data.shapes import contours, inner_radius, outer_radius
from sam3video.errors import ConfigError, InvalidInputError
from sam3video.io.export.ytvis import decode_ytvis_masks, read_ytvis
from sam3video.io.frames import open_frames

SMALL = dict(num_frames=6, size=(96, 128))


def _digest(clip) -> str:
    h = hashlib.sha256()
    for array in (clip.frames, clip.masks, clip.amodal):
        h.update(np.ascontiguousarray(array).tobytes())
    h.update(repr([(i.obj_id, i.shape, i.colour, i.rgb) for i in clip.instances]).encode())
    return h.hexdigest()


# -- determinism ------------------------------------------------------------------------


def test_same_seed_same_bytes_in_a_fresh_process():
    """Equal seeds give equal bytes, also in another interpreter (no hidden state), and the
    global random states neither matter nor change."""
    np.random.seed(1)
    torch.manual_seed(1)
    state = np.random.get_state()[1].copy()
    here = _digest(render_clip(42, **SMALL))
    assert np.array_equal(np.random.get_state()[1], state)
    np.random.seed(2)
    assert _digest(render_clip(42, **SMALL)) == here
    code = (
        "import hashlib, numpy as np\n"
        "from sam3video.data import render_clip\n"
        "np.random.seed(123)\n"
        "c = render_clip(42, num_frames=6, size=(96, 128))\n"
        "h = hashlib.sha256()\n"
        "for a in (c.frames, c.masks, c.amodal): h.update(np.ascontiguousarray(a).tobytes())\n"
        "h.update(repr([(i.obj_id, i.shape, i.colour, i.rgb) for i in c.instances]).encode())\n"
        "print(h.hexdigest())\n"
    )
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert there == here


def test_different_seeds_differ():
    digests = {_digest(render_clip(seed, **SMALL)) for seed in range(6)}
    assert len(digests) == 6
    frames = [render_clip(seed, **SMALL).frames for seed in (0, 1)]
    assert (frames[0] != frames[1]).mean() > 0.5  # different backgrounds, not a few pixels


def test_frames_render_in_any_order():
    world = ShapesWorld(7, **SMALL)
    later = world.frame(4).copy(), world.masks(4)
    clip = ShapesWorld(7, **SMALL).render()
    assert np.array_equal(later[0], clip.frames[4])
    for i, obj_id in enumerate(clip.obj_ids):
        assert np.array_equal(later[1][obj_id], clip.masks[i, 4])


def test_object_randomness_does_not_depend_on_the_other_objects():
    """Object k's draws come from its own stream: a world with more objects starts with the
    same ones (num_objects fixed at 2 vs 4 for the same seed)."""
    two = ShapesWorld(3, num_objects=(2, 2), **SMALL)
    four = ShapesWorld(3, num_objects=(4, 4), **SMALL)
    assert [(i.shape, i.colour, i.rgb) for i in two.instances] == [
        (i.shape, i.colour, i.rgb) for i in four.instances[:2]
    ]


@pytest.mark.parametrize("size", [(64, 64), (120, 200), (257, 131)])
@pytest.mark.parametrize("num_frames", [1, 3])
def test_any_resolution_and_length(size, num_frames):
    clip = render_clip(5, num_frames=num_frames, size=size)
    n = len(clip.instances)
    assert clip.frames.shape == (num_frames, *size, 3) and clip.frames.dtype == np.uint8
    assert clip.masks.shape == clip.amodal.shape == (n, num_frames, *size)
    assert clip.masks.dtype == bool


def test_bad_arguments_are_named():
    with pytest.raises(InvalidInputError, match="seed"):
        ShapesWorld(-1)
    with pytest.raises(InvalidInputError, match="num_frames"):
        ShapesWorld(0, num_frames=0)
    with pytest.raises(InvalidInputError, match="shapes"):
        ShapesWorld(0, shapes=("circle", "blob"))
    with pytest.raises(InvalidInputError, match="num_objects"):
        ShapesWorld(0, num_objects=(3, 2))
    with pytest.raises(InvalidInputError, match="t: expected"):
        ShapesWorld(0, **SMALL).frame(6)


# -- exact masks --------------------------------------------------------------------------


def _inside_and_distance(shape, pose, height, width):
    """Independent reference: for each pixel centre, whether it is inside the outline
    (even-odd ray casting over every contour) and its distance to the outline."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    c, s = math.cos(pose.angle), math.sin(pose.angle)
    inside = np.zeros((height, width), bool)
    dist = np.full((height, width), np.inf)
    for contour in contours(shape, 64.0 * pose.radius):
        pts = [
            (pose.x + pose.radius * (u * c - v * s), pose.y + pose.radius * (u * s + v * c))
            for u, v in contour
        ]
        for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
            crosses = (y0 > yy) != (y1 > yy)
            with np.errstate(divide="ignore", invalid="ignore"):
                x_at = x0 + (yy - y0) * (x1 - x0) / (y1 - y0)
            inside ^= crosses & (xx < x_at)
            dx, dy = x1 - x0, y1 - y0
            t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
            dist = np.minimum(dist, np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy)))
    return inside, dist


@pytest.mark.parametrize("seed", [0, 11, 23])
def test_amodal_masks_match_an_independent_point_in_polygon_test(seed):
    """Pixels whose centre is inside the outline by more than 0.5 px are in the mask, those
    outside by more than 0.5 px are not (only the edge's rounding is left open)."""
    world = ShapesWorld(seed, num_frames=4, size=(96, 128), num_objects=(4, 6))
    checked = 0
    for t in (0, 3):
        amodal = world.amodal_masks(t)
        for spec in world.specs:
            inside, dist = _inside_and_distance(spec.shape, spec.pose(t), 96, 128)
            mask = amodal[spec.obj_id]
            assert mask[inside & (dist > 0.5)].all()
            assert not mask[~inside & (dist > 0.5)].any()
            checked += int(inside.any())
    assert checked > 0


def _area_and_perimeter(shape, radius):
    """Shoelace area (holes subtracted) and perimeter of the outline at ``radius``."""
    area = perimeter = 0.0
    for k, contour in enumerate(contours(shape, 4 * radius)):
        pts = [(u * radius, v * radius) for u, v in contour]
        twice = 0.0
        for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
            twice += x0 * y1 - x1 * y0
            perimeter += math.hypot(x1 - x0, y1 - y0)
        area += abs(twice) / 2 * (1 if k == 0 else -1)
    return area, perimeter


@pytest.mark.parametrize("shape", SHAPES)
def test_coverage_is_unbiased(shape):
    """The sub-pixel coverage integrates to the outline's area and is centred on the pose
    (a 1/8-pixel shift of the sampling grid is 20x the tolerance); the half-coverage mask
    differs from the area by edge rounding only."""
    from sam3video.data.render import Pose, coverage

    for angle in (0.3, 1.1, 2.0):
        for radius in (20.0, 27.3, 36.0):
            pose = Pose(48.3 + angle, 47.6 - angle / 2, radius, angle)
            patch = coverage(shape, pose, 100, 100)
            area, perimeter = _area_and_perimeter(shape, radius)
            assert abs(patch.count.sum() / 16 - area) <= 0.02 * perimeter
            assert abs(patch.mask.sum() - area) <= 0.15 * perimeter
            yy, xx = np.mgrid[0 : patch.count.shape[0], 0 : patch.count.shape[1]] + 0.5
            total = patch.count.sum()
            cx = (patch.count * (xx + patch.x0)).sum() / total
            cy = (patch.count * (yy + patch.y0)).sum() / total
            assert math.hypot(cx - pose.x, cy - pose.y) < 0.03


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_visible_masks_are_disjoint_and_follow_the_depth_order(seed):
    world = ShapesWorld(seed, num_frames=5, size=(96, 96), num_objects=(4, 6), radius=(0.15, 0.3))
    by_z = sorted(world.instances, key=lambda i: (i.z, i.obj_id))
    overlaps = 0
    for t in range(world.num_frames):
        visible, amodal = world.masks(t), world.amodal_masks(t)
        assert set(visible) == set(amodal) == {i.obj_id for i in world.instances}
        total = np.zeros((96, 96), int)
        for k, inst in enumerate(by_z):
            front = np.zeros((96, 96), bool)
            for other in by_z[k + 1 :]:
                front |= amodal[other.obj_id]
            assert np.array_equal(visible[inst.obj_id], amodal[inst.obj_id] & ~front)
            total += visible[inst.obj_id]
            overlaps += int((amodal[inst.obj_id] & front).any())
        assert total.max() <= 1
    assert overlaps > 0  # the depth order was exercised


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_mask_pixels_carry_the_objects_colour_and_the_rest_is_background(seed):
    """Away from edges, each visible mask's pixels are drawn in its object's colour (the
    nearest named colour; the texture changes brightness by at most 20 %), and every pixel
    that no object touches equals the frame without objects."""
    world = ShapesWorld(seed, num_frames=4, size=(128, 128), num_objects=(3, 5))
    kernel = np.ones((5, 5), np.uint8)
    names = list(COLOURS)
    base = np.array([COLOURS[n] for n in names], np.float64)
    seen = 0
    for t in range(world.num_frames):
        frame = world.frame(t).astype(np.float64)
        background = world.background(t)
        touched = np.zeros((128, 128), bool)
        for patch in world._render(t)[1].values():
            h, w = patch.count.shape
            touched[patch.y0 : patch.y0 + h, patch.x0 : patch.x0 + w] |= patch.count > 0
        assert np.array_equal(world.frame(t)[~touched], background[~touched])
        for inst in world.instances:
            core = cv2.erode(world.masks(t)[inst.obj_id].astype(np.uint8), kernel) > 0
            if not core.any():
                continue
            seen += 1
            pixels = frame[core]
            rgb = np.array(inst.rgb, np.float64)
            slack = 0.2 * rgb + world.noise + 1.0
            assert (np.abs(pixels - rgb) <= slack).all()
            nearest = np.argmin(((pixels[:, None, :] - base[None]) ** 2).sum(-1), axis=1)
            assert np.mean(np.array(names)[nearest] == inst.colour) > 0.99
    assert seen > 0


@pytest.mark.parametrize("seed", range(8))
def test_backgrounds_hold_nothing_like_an_object(seed):
    """Backgrounds are grey-ish (channel spread <= 24 from the tint plus the sensor noise)
    and darker than white objects, so no part of them reads as a coloured shape."""
    world = ShapesWorld(seed, num_frames=2, size=(96, 96))
    background = world.background(1).astype(int)
    spread = background.max(axis=2) - background.min(axis=2)
    assert spread.max() <= 24 + 2 * world.noise + 1
    assert background.max() <= 200 + world.noise + 1
    for inst in world.instances:  # every object colour stands out from the background
        rgb = np.array(inst.rgb)
        assert np.ptp(rgb) > 60 or rgb.min() > 220


def test_objects_enter_and_leave_the_frame():
    entered = left = 0
    for seed in range(30):
        present = render_clip(seed, num_frames=16, size=(96, 96)).present
        for row in present:
            on = np.flatnonzero(row)
            if len(on) and on[0] > 0 and row[on[0] :].all():
                entered += 1
            if len(on) and on[-1] < 15 and row[: on[-1] + 1].all():
                left += 1
    assert entered > 0 and left > 0


def test_inner_and_outer_radius_bound_the_drawn_shape():
    """The scenarios' guarantees rest on these: a disc of ``inner_radius`` lies inside the
    drawn shape and the shape inside a disc of ``outer_radius`` (any rotation)."""
    from sam3video.data.render import Pose, coverage

    yy, xx = np.mgrid[0:96, 0:96].astype(np.float64) + 0.5
    for shape in SHAPES:
        for angle in (0.0, 0.3, 1.1):
            pose = Pose(48.3, 47.6, 30.0, angle)
            mask = coverage(shape, pose, 96, 96).full_mask(96, 96)
            r = np.hypot(xx - pose.x, yy - pose.y)
            assert not mask[r > outer_radius(shape) * 30.0 + 0.75].any()
            if shape != "ring":
                assert mask[r < inner_radius(shape) * 30.0 - 0.75].all()
    assert vocabulary() == sorted(set(vocabulary()))
    assert len(vocabulary()) == len(SHAPES) * len(COLOURS) + len(SHAPES) + len(COLOURS) + 1


# -- scenarios ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed,num_frames,hidden", [(0, 24, 8), (1, 16, 5), (2, 32, 12)])
def test_occlusion_scenario_hides_the_occludee_fully(seed, num_frames, hidden):
    world = occlusion_world(seed, num_frames=num_frames, hidden=hidden)
    a, b = world.meta["occludee"], world.meta["occluder"]
    hidden_frames = world.meta["hidden_frames"]
    assert len(hidden_frames) >= hidden
    assert hidden_frames == list(range(hidden_frames[0], hidden_frames[-1] + 1))
    assert 0 < hidden_frames[0] and hidden_frames[-1] < num_frames - 1
    empty = world.meta["empty_frames"]
    assert empty == list(range(empty[0], empty[-1] + 1))
    assert set(hidden_frames) <= set(empty) and len(empty) <= len(hidden_frames) + 2
    without = world.without(a)
    for t in range(num_frames):
        visible, amodal = world.masks(t), world.amodal_masks(t)
        if t in empty:
            assert not visible[a].any() and amodal[a].any()
        if t in hidden_frames:
            assert not visible[a].any() and amodal[a].any()
            assert (amodal[a] <= amodal[b]).all()
            # Nothing of the occludee reaches the image: the frame is the one without it.
            assert np.array_equal(world.frame(t), without.frame(t))
        elif t not in empty:
            assert visible[a].any()
    for t in (0, num_frames - 1):  # wholly visible and clear of the occluder at both ends
        assert np.array_equal(world.masks(t)[a], world.amodal_masks(t)[a])
        assert not world.frame(t).tobytes() == without.frame(t).tobytes()


def test_occlusion_scenario_refuses_impossible_requests():
    with pytest.raises(ConfigError, match="more frames"):
        occlusion_world(0, num_frames=12, hidden=10)
    with pytest.raises(InvalidInputError, match="hidden"):
        occlusion_world(0, hidden=0)


@pytest.mark.parametrize("seed,target", [(0, ("red", "circle")), (1, ("blue", "star"))])
def test_concept_scenario(seed, target):
    world = concept_world(seed, target=target, num_targets=2, num_distractors=4)
    clip = world.render()
    phrase = f"{target[0]} {target[1]}"
    assert clip.meta["phrase"] == phrase
    assert clip.objects_for(phrase) == clip.meta["targets"] and len(clip.meta["targets"]) == 2
    for obj_id in clip.meta["colour_only"]:
        assert f"{target[0]} shape" in clip.instances[obj_id - 1].phrases
        assert target[1] not in clip.instances[obj_id - 1].phrases
    for obj_id in clip.meta["shape_only"]:
        assert target[1] in clip.instances[obj_id - 1].phrases
        assert phrase not in clip.instances[obj_id - 1].phrases
    # No occlusion and nothing cut by the frame: every object is whole on every frame.
    assert np.array_equal(clip.masks, clip.amodal) and clip.present.all()
    assert not clip.amodal[:, :, [0, -1], :].any() and not clip.amodal[:, :, :, [0, -1]].any()


# -- split --------------------------------------------------------------------------------


def test_heldout_split_is_disjoint_and_enforced():
    assert split_of_seed(train_seed(0)) == "train"
    assert split_of_seed(train_seed(HELDOUT_START - 1)) == "train"
    assert split_of_seed(heldout_seed(0)) == "heldout"
    assert heldout_seed(0) == HELDOUT_START > train_seed(HELDOUT_START - 1)
    with pytest.raises(InvalidInputError, match="held-out"):
        sample_training_clip(heldout_seed(3), 2, (64, 64))
    assert sample_training_clip(heldout_seed(3), 2, (64, 64), allow_heldout=True).seed == (
        HELDOUT_START + 3
    )
    with pytest.raises(InvalidInputError, match="training seeds only"):
        ShapesClipDataset(10, start=HELDOUT_START - 5)
    dataset = ShapesClipDataset(3, num_frames=2, size=(64, 64), start=100)
    assert [dataset[i].seed for i in range(3)] == [100, 101, 102]


# -- training sampler ---------------------------------------------------------------------


def test_training_clip_tensors_match_the_world():
    sample = sample_training_clip(9, num_frames=5, size=(80, 112), num_objects=(3, 5))
    clip = render_clip(9, num_frames=5, size=(80, 112), num_objects=(3, 5))
    n = len(sample.obj_ids)
    assert sample.frames.shape == (5, 3, 80, 112) and sample.frames.dtype == torch.float32
    assert 0.0 <= sample.frames.min() and sample.frames.max() <= 1.0
    assert torch.equal(
        (sample.frames * 255).round().to(torch.uint8).permute(0, 2, 3, 1),
        torch.from_numpy(clip.frames),
    )
    assert sample.masks.shape == (n, 5, 80, 112) and sample.masks.dtype == torch.bool
    rows = [clip.obj_ids.index(i) for i in sample.obj_ids]
    assert torch.equal(sample.masks, torch.from_numpy(clip.masks[rows]))
    assert sample.present.any(dim=1).all()  # never-visible objects are dropped
    assert torch.equal(sample.present, sample.masks.flatten(2).any(-1))
    # Boxes: normalized cxcywh of each visible mask, zero where absent.
    for i in range(n):
        for t in range(5):
            box = sample.boxes[i, t]
            if not sample.present[i, t]:
                assert (box == 0).all()
                continue
            ys, xs = np.nonzero(sample.masks[i, t].numpy())
            x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
            expected = [(x0 + x1) / 224, (y0 + y1) / 160, (x1 - x0) / 112, (y1 - y0) / 80]
            assert torch.allclose(box, torch.tensor(expected, dtype=torch.float32))
    used = {p for phrases in sample.phrases for p in phrases}
    assert not used & set(sample.negative_phrases)
    assert used | set(sample.negative_phrases) == set(vocabulary())
    for phrases, shape, colour in zip(sample.phrases, sample.shapes, sample.colours):
        assert phrases == (f"{colour} {shape}", shape, f"{colour} shape", "shape")


def test_training_clip_of_the_occlusion_scenario_matches_its_world():
    sample = sample_training_clip(12, num_frames=8, size=(96, 96), occlusion_hidden=3)
    clip = occlusion_world(12, num_frames=8, size=(96, 96), hidden=3).render()
    assert torch.equal(
        (sample.frames * 255).round().to(torch.uint8).permute(0, 2, 3, 1),
        torch.from_numpy(clip.frames),
    )
    k = sample.obj_ids.index(clip.meta["occludee"])
    assert sample.present[k].tolist() == [t not in clip.meta["empty_frames"] for t in range(8)]
    assert len(clip.meta["empty_frames"]) == 3
    with pytest.raises(ConfigError, match="no occluder size fits"):
        sample_training_clip(12, num_frames=12, size=(96, 96), occlusion_hidden=10)


def test_shapes_source_mixes_in_occlusion_clips():
    from sam3video.train.data import ShapesSource, step_rng

    def gaps(source, frames, steps=24):
        """Per sample: the most frames an object visible on the first and the last frame
        is hidden for (0: no object is hidden mid-clip)."""
        out = []
        for step in range(steps):
            present = source.sample(step_rng(3, step), frames).present
            runs = [int((~p).sum()) for p in present if p[0] and p[-1] and not p.all()]
            out.append(max(runs, default=0))
        return out

    plain = ShapesSource(size=64)
    assert sum(g > 0 for g in gaps(plain, 8)) <= 2  # a random world rarely hides one mid-clip
    # At 224 px an occluder fits every one of these seeds (smaller frames fall back more).
    always = gaps(ShapesSource(size=224, p_occlusion=1.0), 8)
    assert all(2 <= g <= 3 for g in always), always  # 8 // 4 .. (8 - 2) // 2 hidden frames
    assert {2, 3} <= set(always)
    assert all(g == 1 for g in gaps(ShapesSource(size=64, p_occlusion=1.0), 3, steps=6))
    mixed = gaps(ShapesSource(size=224, p_occlusion=0.5), 8, steps=40)
    assert 8 <= sum(g > 0 for g in mixed) <= 32
    # p_occlusion 0 draws nothing extra: the data stream of runs without it is unchanged.
    for step in range(3):
        assert plain.sample(step_rng(9, step), 4).seed == int(
            step_rng(9, step).integers(0, HELDOUT_START)
        )
    for bad in (-0.1, 1.5, True):
        with pytest.raises(InvalidInputError, match="p_occlusion"):
            ShapesSource(p_occlusion=bad)


# -- export -------------------------------------------------------------------------------


def test_ytvis_export_round_trip(tmp_path):
    clips = [render_clip(3, **SMALL), occlusion_world(4, num_frames=16, hidden=5).render()]
    path = write_ytvis(clips, tmp_path / "gt.json", levels=("colour_shape", "shape"))
    data = read_ytvis(path)
    assert data == json.loads(json.dumps(clip_to_ytvis(clips, levels=("colour_shape", "shape"))))
    for video_index, clip in enumerate(clips):
        decoded = decode_ytvis_masks(data, video_index)
        assert sorted(decoded) == list(range(clip.num_frames))
        for i, obj_id in enumerate(clip.obj_ids):
            for t in range(clip.num_frames):
                got = decoded[t].get(obj_id)
                if clip.masks[i, t].any():
                    assert np.array_equal(got, clip.masks[i, t])
                else:
                    assert got is None
        annotations = [a for a in data["annotations"] if a["video_id"] == video_index]
        for a in annotations:
            inst = clip.instances[clip.obj_ids.index(a["obj_id"])]
            assert a["noun_phrase"] in inst.phrases[:2]
            names = {c["id"]: c["name"] for c in data["categories"]}
            assert names[a["category_id"]] == a["noun_phrase"]
            assert len(a["segmentations"]) == clip.num_frames
        visible_ids = [o for i, o in enumerate(clip.obj_ids) if clip.masks[i].any()]
        assert sorted({a["obj_id"] for a in annotations}) == visible_ids
        assert len(annotations) == 2 * len(visible_ids)
    # The occlusion clip's hidden frames are null in the occludee's annotations.
    occludee = clips[1].meta["occludee"]
    for a in data["annotations"]:
        if a["video_id"] == 1 and a["obj_id"] == occludee:
            for t in clips[1].meta["hidden_frames"]:
                assert a["segmentations"][t] is None and a["areas"][t] is None


def test_ytvis_negative_phrases(tmp_path):
    clip = render_clip(8, **SMALL)
    data = clip_to_ytvis(clip, levels=("shape",), negatives=True)
    pairs = {p["noun_phrase"]: p["num_masklets"] for p in data["video_np_pairs"]}
    assert set(pairs) == set(SHAPES)
    for shape in SHAPES:
        count = sum(
            1
            for i, inst in enumerate(clip.instances)
            if inst.shape == shape and clip.masks[i].any()
        )
        assert pairs[shape] == count


def test_frames_folder_and_video_are_readable(tmp_path):
    clip = render_clip(2, **SMALL)
    folder = write_frames(clip, tmp_path / "frames")
    with open_frames(folder) as source:
        assert len(source) == clip.num_frames
        for t in range(clip.num_frames):
            assert np.array_equal(source[t], clip.frames[t])  # PNG: lossless
    video = write_video(clip, tmp_path / "clip.mp4")
    with open_frames(video) as source:
        assert len(source) == clip.num_frames
        assert source[0].shape == clip.frames[0].shape
        error = np.abs(source[0].astype(int) - clip.frames[0].astype(int)).mean()
        assert error < 12  # lossy, but the same picture


def test_dataset_folder_points_at_its_frames(tmp_path):
    clips = [render_clip(seed, **SMALL) for seed in (1, 2)]
    path = write_dataset(tmp_path / "toy", clips, ext="png")
    data = read_ytvis(path)
    for clip, video in zip(clips, data["videos"]):
        assert len(video["file_names"]) == clip.num_frames
        for t, name in enumerate(video["file_names"]):
            frame = cv2.imread(str(tmp_path / "toy" / name), cv2.IMREAD_COLOR)
            assert np.array_equal(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), clip.frames[t])

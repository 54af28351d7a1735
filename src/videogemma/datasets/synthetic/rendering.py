"""Rasterising the synthetic exercises: a random scene and the stick figure drawn in numpy, frame by frame.

The figure's proportions, colours, position, scale, tempo and phase, the camera jitter, the background and
the noise are random, drawn from the clip's own generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from videogemma.datasets.synthetic.exercises import Body, Exercise, Joints, Variant, pose_sequence

# ---- rasterisation -----------------------------------------------------------------------------------------

# (joint a, joint b, colour role, radius role); far-side limbs first so the near side covers them.
_BONES = (
    ("shoulder_f", "elbow_f", "arm_far", "limb"), ("elbow_f", "hand_f", "arm_far", "limb"),
    ("hip_f", "knee_f", "leg_far", "limb"), ("knee_f", "foot_f", "leg_far", "limb"),
    ("shoulder_l", "elbow_l", "arm", "limb"), ("elbow_l", "hand_l", "arm", "limb"),
    ("hip_l", "knee_l", "leg", "limb"), ("knee_l", "foot_l", "leg", "limb"),
    ("hip_r", "knee_r", "leg", "limb"), ("knee_r", "foot_r", "leg", "limb"),
    ("hip_n", "knee_n", "leg", "limb"), ("knee_n", "foot_n", "leg", "limb"),
    ("neck", "pelvis", "torso", "torso"), ("shoulder_l", "shoulder_r", "torso", "limb"),
    ("hip_l", "hip_r", "leg", "limb"), ("neck", "head", "skin", "neck"),
    ("shoulder_r", "elbow_r", "arm", "limb"), ("elbow_r", "hand_r", "arm", "limb"),
    ("shoulder_n", "elbow_n", "arm", "limb"), ("elbow_n", "hand_n", "arm", "limb"),
)  # fmt: skip


def _draw_capsules(
    canvas: np.ndarray, starts: np.ndarray, ends: np.ndarray, radii: np.ndarray, colors: np.ndarray
) -> None:
    """Paint thick anti-aliased segments (pixel coordinates (N, 2), x right, y down) onto `canvas` (H, W, 3)
    in order, later ones on top; each touches only its bounding box."""
    height, width = canvas.shape[:2]
    centres = np.arange(max(height, width), dtype=np.float32) + 0.5  # pixel centres
    for (ax, ay), (bx, by), radius, color in zip(starts.tolist(), ends.tolist(), radii.tolist(), colors):
        x0, x1 = max(int(min(ax, bx) - radius - 1), 0), min(int(max(ax, bx) + radius + 2), width)
        y0, y1 = max(int(min(ay, by) - radius - 1), 0), min(int(max(ay, by) + radius + 2), height)
        if x0 >= x1 or y0 >= y1:
            continue
        ys = centres[y0:y1, None] - np.float32(ay)
        xs = centres[None, x0:x1] - np.float32(ax)
        dx, dy = bx - ax, by - ay
        length2 = dx * dx + dy * dy
        if length2 > 0:  # distance to the segment: project onto it, clamp to its ends
            t = (xs * np.float32(dx / length2)) + (ys * np.float32(dy / length2))
            np.minimum(np.maximum(t, 0.0, out=t), 1.0, out=t)
            xs = xs - t * np.float32(dx)
            ys = ys - t * np.float32(dy)
        alpha = np.float32(radius + 0.5) - np.sqrt(xs * xs + ys * ys)
        np.minimum(np.maximum(alpha, 0.0, out=alpha), 1.0, out=alpha)
        region = canvas[y0:y1, x0:x1]
        region += alpha[..., None] * (color - region)


def _random_color(rng: np.random.Generator, luminance: float) -> np.ndarray:
    """A random colour of roughly the given luminance (0..255)."""
    color = rng.uniform(0.3, 1.0, size=3)
    color *= luminance / max(float(color @ np.array([0.299, 0.587, 0.114])), 1e-3)
    return np.clip(color, 0, 255).astype(np.float32)


@dataclass(frozen=True)
class Scene:
    """Everything random about a clip except the motion's form: the same scene renders every variant."""

    body: Body
    period_s: float
    phase0: float
    scale_px: float  # pixels per body unit
    anchor_px: tuple[float, float]  # pixel position of the body origin (between the feet / under the hands)
    facing: float  # +1 or -1 (side views: which way the figure faces; front views: which leg goes first)
    background: np.ndarray  # (H, W, 3) float32
    colors: dict[str, np.ndarray]
    noise_std: float
    jitter_px: np.ndarray  # (T, 2) camera shake per frame


def random_scene(exercise: Exercise, rng: np.random.Generator, size: int, num_frames: int) -> Scene:
    body = Body.random(rng)
    # Big figures: the exercise's whole motion fills 72-88 % of the frame; where it sits is random.
    left, right, top = exercise.extent
    scale = size * rng.uniform(0.72, 0.88) / max(right - left, top)
    ground = size * (1 - rng.uniform(0.03, 0.08))
    facing = float(rng.choice([-1.0, 1.0]))
    free = max(size - (right - left) * scale, 0.0)
    leftmost = rng.uniform(0.2, 0.8) * free  # pixel column of the motion's back (facing +x) or front edge
    anchor_x = leftmost - left * scale if facing > 0 else leftmost + right * scale

    dark_background = rng.random() < 0.5
    background_luminance = rng.uniform(25, 85) if dark_background else rng.uniform(165, 230)
    figure_luminance = rng.uniform(175, 245) if dark_background else rng.uniform(15, 70)
    top = _random_color(rng, background_luminance)
    bottom = _random_color(rng, background_luminance)
    rows = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    background = np.broadcast_to(top + rows * (bottom - top), (size, size, 3)).copy()
    floor = _random_color(rng, background_luminance * rng.uniform(0.8, 1.1))
    background[int(ground) + 1 :] = floor
    for _ in range(2):  # a couple of static low-contrast objects in the room
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(size // 10, size // 3, 2)
        background[y0 : y0 + h, x0 : x0 + w] = _random_color(
            rng, background_luminance * rng.uniform(0.85, 1.15)
        )

    shirt = _random_color(rng, figure_luminance)
    pants = _random_color(rng, figure_luminance * rng.uniform(0.85, 1.0))
    skin = _random_color(rng, figure_luminance * rng.uniform(0.9, 1.05))
    shade = 0.8 if dark_background else 1.25  # the far side's limbs, a little towards the background
    colors = {
        "torso": shirt, "arm": shirt, "leg": pants, "skin": skin,
        "arm_far": np.clip(shirt * shade, 0, 255), "leg_far": np.clip(pants * shade, 0, 255),
    }  # fmt: skip
    jitter = np.cumsum(rng.normal(0.0, 0.25, size=(num_frames, 2)), axis=0) * (size / 64)
    low, high = exercise.period_s
    return Scene(
        body=body,
        period_s=float(rng.uniform(low, high)),
        phase0=float(rng.uniform(0.0, 0.06)),
        scale_px=float(scale),
        anchor_px=(float(anchor_x), float(ground)),
        facing=facing,
        background=background,
        colors=colors,
        noise_std=float(rng.uniform(2.0, 7.0)),
        jitter_px=jitter,
    )


def render_frame(joints: Joints, scene: Scene, frame_index: int, exercise: Exercise) -> np.ndarray:
    """The figure in `joints` drawn over the scene's background (float32 (H, W, 3), before noise)."""
    canvas = scene.background.copy()
    offset = np.array(scene.anchor_px) + scene.jitter_px[frame_index]
    # Front views: x is the figure's left; `facing` mirrors which leg starts. Side views: facing ±x.
    mirror = scene.facing
    body = scene.body

    names = list(joints)
    index = {name: i for i, name in enumerate(names)}
    pixels = offset + scene.scale_px * np.array([joints[n] for n in names]) * np.array([mirror, -1.0])
    radius_px = {
        "limb": body.limb_radius * scene.scale_px,
        "torso": body.torso_radius * scene.scale_px,
        "neck": body.limb_radius * scene.scale_px * 0.8,
    }
    bones = [bone for bone in _BONES if bone[0] in index and bone[1] in index]
    head = index["head"]  # drawn last, as a zero-length capsule (a disc)
    _draw_capsules(
        canvas,
        pixels[[index[start] for start, _, _, _ in bones] + [head]],
        pixels[[index[end] for _, end, _, _ in bones] + [head]],
        np.array([radius_px[role] for _, _, _, role in bones] + [body.head * scene.scale_px]),
        [scene.colors[role] for _, _, role, _ in bones] + [scene.colors["skin"]],
    )
    return canvas


def render_clip(
    exercise: Exercise,
    variant: Variant,
    rng: np.random.Generator,
    size: int = 64,
    num_frames: int = 36,
    fps: float = 12.0,
) -> np.ndarray:
    """One clip as uint8 frames (T, size, size, 3). The scene is drawn from `rng` before anything that
    depends on the variant, so one seed renders every variant of an exercise in the same scene."""
    scene = random_scene(exercise, rng, size, num_frames)
    times = np.arange(num_frames) / fps
    poses = pose_sequence(exercise, variant, scene.body, times, scene.period_s, scene.phase0)
    frames = np.stack([render_frame(joints, scene, index, exercise) for index, joints in enumerate(poses)])
    noise = rng.standard_normal(frames.shape, dtype=np.float32)
    noise *= np.float32(scene.noise_std)
    frames += noise
    return np.clip(frames, 0, 255, out=frames).astype(np.uint8)

"""Synthetic exercise clips: a QVED-shaped dataset the project can generate anywhere (DATA.md).

Each clip shows a stick figure (thick limbs and a head, rasterised in numpy) doing one exercise in one
form variant: correct form or a named mistake. The figure's proportions, colours, position, scale, tempo
and phase, the camera jitter, the background and the noise are random. Every clip starts from the
exercise's start pose (squats, lunges-free standing exercises share one; push-ups and mountain-climbers share
the plank), so the first frame does not tell the label: the exercise shows in what moves, the variant in
how far, how symmetric or how upright it moves.

Poses live in "body units": a standing figure is ~1 tall, feet on the ground at y = 0, y up, x to the
figure's front (side views) or its left (front views). `render_clip` maps them to pixels.

Determinism: each clip draws from its own `numpy` generator seeded by (seed, exercise, variant, index),
and the encoder runs single-threaded, so the same seed writes the same bytes in any process.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videogemma.data.qved_io import (
    FEEDBACKS_NAME,
    FINE_GRAINED_LABELS_NAME,
    MANIFEST_NAME,
    write_json,
    write_mp4,
)

Joints = dict[str, np.ndarray]  # joint name → (x, y) in body units


# ---- the exercises and their form variants ----------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    name: str  # "good form" or the mistake, e.g. "knees caving in"
    correction: str  # what the coach says, e.g. "push the knees out over the toes"
    feedbacks: tuple[str, ...]  # sentences of the feedback file
    params: dict[str, float]  # motion parameters the exercise's pose function reads


@dataclass(frozen=True)
class Exercise:
    class_name: str  # folder name, e.g. "jumping_jacks"
    label_name: str  # name in the label text, e.g. "jumping jacks"
    view: str  # "front" or "side"
    period_s: tuple[float, float]  # seconds per repetition (per step for alternating exercises)
    extent: tuple[float, float, float]  # (left, right, top) the motion reaches, body units, facing +x
    pose: Callable[[float, int, dict[str, float], Body], Joints]  # (progress 0..1, rep, params, body)
    variants: tuple[Variant, ...]

    def label(self, variant: Variant) -> str:
        """The short label, QVED style: `squats - knees caving in`."""
        return f"{self.label_name} - {variant.name}"

    def descriptive_label(self, variant: Variant) -> str:
        """The descriptive label (what fine-grained training targets): `squats - knees caving in; push ...`."""
        return f"{self.label_name} - {variant.name}; {variant.correction}"


@dataclass(frozen=True)
class Body:
    """Limb lengths in body units (a standing figure is ~1 tall) and drawing radii."""

    head: float = 0.075
    neck: float = 0.04
    torso: float = 0.30
    upper_arm: float = 0.17
    forearm: float = 0.16
    thigh: float = 0.25
    shin: float = 0.25
    shoulder_width: float = 0.21
    hip_width: float = 0.13
    limb_radius: float = 0.042
    torso_radius: float = 0.065

    @property
    def leg(self) -> float:
        return self.thigh + self.shin

    @property
    def arm(self) -> float:
        return self.upper_arm + self.forearm

    @staticmethod
    def random(rng: np.random.Generator) -> Body:
        def jitter(value: float, spread: float = 0.1) -> float:
            return float(value * rng.uniform(1 - spread, 1 + spread))

        return Body(
            head=jitter(0.075, 0.12),
            neck=jitter(0.04),
            torso=jitter(0.30),
            upper_arm=jitter(0.17),
            forearm=jitter(0.16),
            thigh=jitter(0.25, 0.08),
            shin=jitter(0.25, 0.08),
            shoulder_width=jitter(0.21, 0.15),
            hip_width=jitter(0.13, 0.15),
            limb_radius=jitter(0.042, 0.12),
            torso_radius=jitter(0.065, 0.15),
        )


def _point(x: float, y: float) -> np.ndarray:
    return np.array([x, y], dtype=np.float64)


def _toward(start: np.ndarray, angle: float, length: float) -> np.ndarray:
    """The end of a limb of `length` leaving `start` at `angle` radians from straight down (+ = towards +x)."""
    return start + length * np.array([math.sin(angle), -math.cos(angle)])


def _bend(start: np.ndarray, end: np.ndarray, length_a: float, length_b: float, side: float) -> np.ndarray:
    """The middle joint of a two-segment limb from `start` to `end` (two-link IK); `side` ±1 picks the bend."""
    delta = end - start
    distance = float(np.hypot(*delta))
    distance = min(max(distance, 1e-6), length_a + length_b - 1e-6)
    along = (length_a**2 - length_b**2 + distance**2) / (2 * distance)
    across = math.sqrt(max(length_a**2 - along**2, 0.0))
    direction = delta / max(float(np.hypot(*delta)), 1e-6)
    normal = np.array([-direction[1], direction[0]])
    return start + along * direction + side * across * normal


def _front_upper_body(body: Body, pelvis: np.ndarray, lean: float = 0.0) -> Joints:
    up = np.array([math.sin(lean), math.cos(lean)])
    neck = pelvis + body.torso * up
    across = np.array([up[1], -up[0]]) * body.shoulder_width / 2
    return {
        "pelvis": pelvis,
        "neck": neck,
        "head": neck + (body.neck + body.head) * up,
        "shoulder_l": neck - across,
        "shoulder_r": neck + across,
    }


def _squat(progress: float, rep: int, params: dict[str, float], body: Body) -> Joints:
    pelvis = _point(0, body.leg - params["depth"] * progress)
    joints = _front_upper_body(body, pelvis)
    for side, sign in (("l", -1), ("r", 1)):
        hip = pelvis + _point(sign * body.hip_width / 2, 0)
        foot = _point(sign * (body.hip_width / 2 + 0.04), 0)
        # Seen from the front the knees come towards the camera; what shows is where they drift sideways.
        knee = (hip + foot) / 2 + _point(sign * params["knee_drift"] * progress, 0)
        shoulder = joints[f"shoulder_{side}"]
        # Arms rise forward for balance: seen from the front they shorten and the hands climb to the shoulders.
        reach = body.arm * math.cos(progress * math.pi / 2 * 0.95)
        hand = shoulder + _point(sign * 0.02, -reach)
        joints |= {f"hip_{side}": hip, f"knee_{side}": knee, f"foot_{side}": foot}
        joints |= {f"elbow_{side}": (shoulder + hand) / 2, f"hand_{side}": hand}
    return joints


def _jumping_jack(progress: float, rep: int, params: dict[str, float], body: Body) -> Joints:
    hop = 0.04 * math.sin(math.pi * progress)
    pelvis = _point(0, body.leg + hop)
    joints = _front_upper_body(body, pelvis)
    for side, sign in (("l", -1), ("r", 1)):
        hip = pelvis + _point(sign * body.hip_width / 2, 0)
        foot = _point(sign * (body.hip_width / 2 + params["spread"] * progress), hop)
        foot = hip + (foot - hip) * body.leg / max(float(np.hypot(*(foot - hip))), 1e-6)
        arm_angle = sign * (0.12 + (params["arm_raise"] - 0.12) * progress)
        shoulder = joints[f"shoulder_{side}"]
        elbow = _toward(shoulder, arm_angle, body.upper_arm)
        joints |= {f"hip_{side}": hip, f"knee_{side}": (hip + foot) / 2, f"foot_{side}": foot}
        joints |= {f"elbow_{side}": elbow, f"hand_{side}": _toward(elbow, arm_angle, body.forearm)}
    return joints


def _high_knee(progress: float, rep: int, params: dict[str, float], body: Body) -> Joints:
    lifted = "l" if rep % 2 == 0 else "r"
    hop = 0.03 * math.sin(math.pi * progress)
    pelvis = _point(0, body.leg + hop)
    joints = _front_upper_body(body, pelvis)
    lift = params["knee_lift"] * progress  # thigh angle towards the camera, in radians
    for side, sign in (("l", -1), ("r", 1)):
        hip = pelvis + _point(sign * body.hip_width / 2, 0)
        if side == lifted:
            knee = hip - _point(0, body.thigh * math.cos(lift))  # the thigh foreshortens as it rises
            foot = knee - _point(-sign * 0.02, body.shin)
        else:
            knee, foot = hip - _point(0, body.thigh), hip - _point(0, body.leg)
        shoulder = joints[f"shoulder_{side}"]
        # The arm opposite the rising knee pumps: the elbow comes forward (its upper arm foreshortens) and
        # the forearm swings up until the hand is above the shoulder.
        pump = params["arm_pump"] * progress if side != lifted else 0.0
        elbow = shoulder + _point(sign * 0.05, -body.upper_arm * math.cos(1.2 * pump))
        hand = _toward(elbow, sign * 0.1 + math.pi * 0.85 * pump, body.forearm)
        joints |= {f"hip_{side}": hip, f"knee_{side}": knee, f"foot_{side}": foot}
        joints |= {f"elbow_{side}": elbow, f"hand_{side}": hand}
    return joints


def _lunge(progress: float, rep: int, params: dict[str, float], body: Body) -> Joints:
    """Side view, facing +x; the stepping leg alternates between the near and the far side."""
    front, back = ("n", "f") if rep % 2 == 0 else ("f", "n")
    stride = params["stride"] * progress
    pelvis = _point(stride * 0.45, body.leg - params["depth"] * progress)
    lean = params["lean"] * progress + 0.03
    up = np.array([math.sin(lean), math.cos(lean)])
    neck = pelvis + body.torso * up
    joints = {"pelvis": pelvis, "neck": neck, "head": neck + (body.neck + body.head) * up}
    feet = {front: _point(stride, 0), back: _point(-0.02 * progress, 0.03 * progress)}
    for side in ("n", "f"):
        joints[f"hip_{side}"] = pelvis
        joints[f"foot_{side}"] = feet[side]
        joints[f"knee_{side}"] = _bend(pelvis, feet[side], body.thigh, body.shin, side=-1.0)
        shoulder = neck - 0.03 * up
        swing = (0.25 if side == back else -0.15) * progress
        elbow = _toward(shoulder, swing, body.upper_arm)
        joints |= {f"shoulder_{side}": shoulder, f"elbow_{side}": elbow}
        joints[f"hand_{side}"] = _toward(elbow, swing + 0.3 * progress, body.forearm)
    return joints


def _plank_line(body: Body, shoulder: np.ndarray, feet: np.ndarray, sag: float) -> Joints:
    """Head, neck, pelvis and knees along the straight line feet → shoulders, the pelvis moved by `sag`."""
    direction = (shoulder - feet) / max(float(np.hypot(*(shoulder - feet))), 1e-6)
    pelvis = feet + direction * body.leg - _point(0, sag)
    neck = shoulder + direction * 0.03
    head_direction = direction + _point(0.0, 0.25)
    head_direction /= np.hypot(*head_direction)
    return {"pelvis": pelvis, "neck": neck, "head": neck + (body.neck + body.head) * head_direction}


def _pushup(progress: float, rep: int, params: dict[str, float], body: Body) -> Joints:
    """Side view, facing +x, hands under the shoulders, feet behind on the ground."""
    hands = _point(0.0, 0.0)
    top = body.arm * 0.97
    shoulder_height = top - params["depth"] * progress * (top - 0.09)
    shoulder = _point(0.03 * progress * params["depth"], shoulder_height)
    plank_length = body.leg + body.torso
    feet = _point(-math.sqrt(max(plank_length**2 - top**2, 0.0)), 0.02)
    joints = _plank_line(body, shoulder, feet, sag=params["sag"] * progress)
    for side in ("n", "f"):
        elbow = _bend(shoulder, hands, body.upper_arm, body.forearm, side=1.0)
        knee = (feet + joints["pelvis"]) / 2
        joints |= {f"shoulder_{side}": shoulder, f"elbow_{side}": elbow, f"hand_{side}": hands}
        joints |= {f"hip_{side}": joints["pelvis"], f"knee_{side}": knee, f"foot_{side}": feet}
    return joints


def _mountain_climber(progress: float, rep: int, params: dict[str, float], body: Body) -> Joints:
    """Side view plank on straight arms; one knee drives towards the chest each step, legs alternating."""
    driving = "n" if rep % 2 == 0 else "f"
    hands = _point(0.0, 0.0)
    shoulder = _point(0.0, body.arm * 0.97)
    plank_length = body.leg + body.torso
    feet = _point(-math.sqrt(max(plank_length**2 - shoulder[1] ** 2, 0.0)), 0.02)
    joints = _plank_line(body, shoulder, feet, sag=-params["pike"] * progress)
    pelvis = joints["pelvis"]
    for side in ("n", "f"):
        foot = feet
        if side == driving:
            reach = params["drive"] * progress * (pelvis[0] + 0.05 - feet[0])
            foot = feet + _point(reach, 0.06 * progress)
        knee = _bend(pelvis, foot, body.thigh, body.shin, side=-1.0)
        elbow = (shoulder + hands) / 2
        joints |= {f"shoulder_{side}": shoulder, f"elbow_{side}": elbow, f"hand_{side}": hands}
        joints |= {f"hip_{side}": pelvis, f"knee_{side}": knee, f"foot_{side}": foot}
    return joints


EXERCISES: tuple[Exercise, ...] = (
    Exercise(
        "squats", "squats", "front", (1.6, 2.4), (-0.3, 0.3, 1.02), _squat,
        (
            Variant("good form", "keep it up", ("Nice deep squat, keep it up.", "Good knee tracking and depth."),
                    {"depth": 0.26, "knee_drift": 0.07}),
            Variant("knees caving in", "push the knees out over the toes",
                    ("Push your knees out so they track over your toes.", "Don't let the knees collapse inward."),
                    {"depth": 0.26, "knee_drift": -0.10}),
            Variant("not deep enough", "lower the hips until the thighs are parallel to the floor",
                    ("Go a bit deeper on the squat.", "Sit back until your thighs are parallel to the floor."),
                    {"depth": 0.08, "knee_drift": 0.03}),
        ),
    ),
    Exercise(
        "alternating_forward_lunges", "alternating forward lunges", "side", (1.6, 2.4), (-0.15, 0.6, 1.02), _lunge,
        (
            Variant("good form", "keep it up", ("Great lunges, keep it up.", "Nice upright torso and depth."),
                    {"stride": 0.40, "depth": 0.22, "lean": 0.0}),
            Variant("too shallow", "lower the back knee towards the floor",
                    ("Drop the back knee lower.", "Take a longer step and sink deeper into the lunge."),
                    {"stride": 0.22, "depth": 0.05, "lean": 0.0}),
            Variant("torso leaning forward", "keep the chest up over the hips",
                    ("Keep your chest up.", "Stay upright instead of leaning over the front knee."),
                    {"stride": 0.40, "depth": 0.20, "lean": 0.75}),
        ),
    ),
    Exercise(
        "jumping_jacks", "jumping jacks", "front", (1.0, 1.5), (-0.5, 0.5, 1.2), _jumping_jack,
        (
            Variant("good form", "keep it up", ("Nice full jumping jacks.", "Good rhythm, keep going."),
                    {"arm_raise": 2.9, "spread": 0.20}),
            Variant("arms not raised overhead", "bring the hands all the way above the head",
                    ("Raise your arms all the way overhead.", "Your hands stop at shoulder height."),
                    {"arm_raise": 1.45, "spread": 0.20}),
            Variant("feet not jumping wide", "jump the feet out wider than the shoulders",
                    ("Jump your feet out wider.", "Land with your feet wider than your shoulders."),
                    {"arm_raise": 2.9, "spread": 0.025}),
        ),
    ),
    Exercise(
        "pushups", "pushups", "side", (1.5, 2.3), (-0.95, 0.15, 0.5), _pushup,
        (
            Variant("good form", "keep it up", ("Great push-ups, full range.", "Nice straight body line."),
                    {"depth": 1.0, "sag": 0.0}),
            Variant("not going low enough", "lower the chest close to the floor",
                    ("Lower your chest closer to the floor.", "Use the full range of motion."),
                    {"depth": 0.30, "sag": 0.0}),
            Variant("hips sagging", "tighten the core to keep a straight line from head to heels",
                    ("Keep your hips up in line with your body.", "Brace your core so the hips don't drop."),
                    {"depth": 0.85, "sag": 0.16}),
        ),
    ),
    Exercise(
        "high_knees", "high knees", "front", (0.95, 1.25), (-0.3, 0.3, 1.05), _high_knee,
        (
            Variant("good form", "keep it up", ("Great high knees.", "Nice knee drive and arm swing."),
                    {"knee_lift": 1.45, "arm_pump": 1.0}),
            Variant("knees not high enough", "drive the knees up to hip height",
                    ("Bring your knees higher.", "Aim to lift each knee to hip height."),
                    {"knee_lift": 0.55, "arm_pump": 1.0}),
            Variant("arms not pumping", "drive the arms with each step",
                    ("Use your arms.", "Pump your arms in rhythm with your knees."),
                    {"knee_lift": 1.45, "arm_pump": 0.0}),
        ),
    ),
    Exercise(
        "mountain-climbers", "mountain-climbers", "side", (1.0, 1.4), (-0.95, 0.15, 0.65), _mountain_climber,
        (
            Variant("good form", "keep it up", ("Strong mountain-climbers.", "Good pace and knee drive."),
                    {"drive": 1.0, "pike": 0.0}),
            Variant("knees not reaching the chest", "drive each knee all the way in",
                    ("Bring your knees further in.", "Drive each knee towards your chest."),
                    {"drive": 0.3, "pike": 0.0}),
            Variant("hips too high", "keep the hips level with the shoulders",
                    ("Lower your hips.", "Keep a flat back instead of piking up."),
                    {"drive": 0.9, "pike": 0.17}),
        ),
    ),
)  # fmt: skip


def find_exercise(class_name: str) -> Exercise:
    for exercise in EXERCISES:
        if exercise.class_name == class_name:
            return exercise
    raise ValueError(f"unknown exercise {class_name!r}; choose from {[e.class_name for e in EXERCISES]}")


# ---- animation ---------------------------------------------------------------------------------------------


def _progress(phase: float) -> float:
    """How far into the movement (0 start pose, 1 the far end) at `phase` ∈ [0, 1) of a repetition.

    A raised cosine, steepened and clipped so that the figure holds a little at both ends (as people do);
    8 samples of a clip then catch the far end often.
    """
    raised = 0.5 - 0.5 * math.cos(2 * math.pi * phase)
    return min(max((raised - 0.5) * 1.3 + 0.5, 0.0), 1.0)


def pose_sequence(
    exercise: Exercise, variant: Variant, body: Body, times_s: np.ndarray, period_s: float, phase0: float
) -> list[Joints]:
    """The figure's joints at each time; repetition `k` covers [k·period, (k+1)·period) after `phase0`."""
    poses = []
    for time in times_s:
        cycles = time / period_s + phase0
        rep = math.floor(cycles)
        poses.append(exercise.pose(_progress(cycles - rep), rep, variant.params, body))
    return poses


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


# ---- the dataset -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipSpec:
    video_id: str  # 8 digits, unique across classes
    exercise_index: int
    variant_index: int
    index: int  # clip number within its variant

    @property
    def exercise(self) -> Exercise:
        return EXERCISES[self.exercise_index]

    @property
    def variant(self) -> Variant:
        return self.exercise.variants[self.variant_index]

    @property
    def relative_path(self) -> str:
        return f"{self.exercise.class_name}/{self.video_id}.mp4"


def clip_specs(per_variant: int, exercises: tuple[Exercise, ...] = EXERCISES) -> list[ClipSpec]:
    """Every clip of the dataset in id order: exercise by exercise, variant by variant."""
    specs = []
    for exercise in exercises:
        exercise_index = EXERCISES.index(exercise)
        for variant_index in range(len(exercise.variants)):
            for index in range(per_variant):
                specs.append(ClipSpec(f"{len(specs) + 1:08d}", exercise_index, variant_index, index))
    return specs


def clip_rng(seed: int, spec: ClipSpec) -> np.random.Generator:
    """The clip's own generator: the same (seed, exercise, clip index) gives the same scene for every variant."""
    return np.random.default_rng(np.random.SeedSequence([seed, spec.exercise_index, spec.index]))


def _write_clip(job: tuple[ClipSpec, Path, int, int, int, float]) -> str:
    spec, out_dir, seed, size, num_frames, fps = job
    path = out_dir / spec.relative_path
    frames = render_clip(spec.exercise, spec.variant, clip_rng(seed, spec), size, num_frames, fps)
    write_mp4(path, frames, fps)
    return spec.relative_path


def label_records(specs: list[ClipSpec]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
    """(fine_grained_labels, feedbacks, manifest) of the clips, QVED style."""
    labels, feedbacks, manifest = [], [], {}
    for spec in specs:
        video_path = f"./{spec.video_id}.mp4"
        labels.append({
            "video_path": video_path,
            "labels": [spec.exercise.label(spec.variant)],
            "labels_descriptive": [spec.exercise.descriptive_label(spec.variant)],
            "split": "train",
        })  # fmt: skip
        feedbacks.append(
            {"video_path": video_path, "feedbacks": list(spec.variant.feedbacks), "split": "train"}
        )
        manifest[spec.relative_path] = spec.exercise.class_name
    return labels, feedbacks, manifest


def generate_dataset(
    out_dir: str | Path,
    per_variant: int = 20,
    seed: int = 0,
    size: int = 64,
    num_frames: int = 36,
    fps: float = 12.0,
    workers: int = 1,
    exercises: tuple[Exercise, ...] = EXERCISES,
    progress: bool = True,
) -> dict[str, Any]:
    """Write a QVED-shaped dataset of synthetic clips into `out_dir`; return a summary.

    Resumable: clips already present are kept (they are deterministic, so rewriting would give the same
    bytes); the label files and manifest are written last, once every clip exists.
    """
    from tqdm import tqdm

    if per_variant < 1 or size < 16 or num_frames < 1 or fps <= 0:
        raise ValueError(f"need per_variant ≥ 1, size ≥ 16, frames ≥ 1, fps > 0 (got {per_variant}, {size}, "
                         f"{num_frames}, {fps})")  # fmt: skip
    out_dir = Path(out_dir)
    specs = clip_specs(per_variant, exercises)
    jobs = [
        (s, out_dir, seed, size, num_frames, fps) for s in specs if not (out_dir / s.relative_path).exists()
    ]
    bar = tqdm(
        total=len(specs), initial=len(specs) - len(jobs), desc="synth", unit="clip", disable=not progress
    )
    if workers > 1 and len(jobs) > 1:
        import multiprocessing

        # fork (where there is one) spares each worker re-importing the package.
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with context.Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_clip, jobs, chunksize=4):
                bar.update()
    else:
        for job in jobs:
            _write_clip(job)
            bar.update()
    bar.close()
    labels, feedbacks, manifest = label_records(specs)
    write_json(out_dir / FINE_GRAINED_LABELS_NAME, labels)
    write_json(out_dir / FEEDBACKS_NAME, feedbacks)
    write_json(out_dir / MANIFEST_NAME, manifest)
    return {
        "clips": len(specs),
        "written": len(jobs),
        "classes": [e.class_name for e in exercises],
        "variants": sum(len(e.variants) for e in exercises),
        "size": size,
        "frames": num_frames,
        "fps": fps,
        "seed": seed,
    }

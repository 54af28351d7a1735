"""The synthetic exercises: six QVED exercises, their form variants, and the stick figure's poses.

Each clip of the synthetic dataset (DATA.md) shows a stick figure doing one exercise in one form variant:
correct form or a named mistake. Every clip starts from the exercise's start pose (squats, lunges-free
standing exercises share one; push-ups and mountain-climbers share the plank), so the first frame does not
tell the label: the exercise shows in what moves, the variant in how far, how symmetric or how upright it
moves.

Poses live in "body units": a standing figure is ~1 tall, feet on the ground at y = 0, y up, x to the
figure's front (side views) or its left (front views). `rendering.render_clip` maps them to pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

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

"""Pose integration from actions (camera and driving worlds), batched in NumPy.

Poses are ``(B, 4)`` float64 arrays:
    camera:  (x, y) metres on the ground plane, yaw degrees (counter-clockwise from +x), pitch
             degrees (up positive, clipped to +-60).
    driving: (x, y) metres, heading degrees (counter-clockwise from +x), speed m/s (>= 0).
The robot world's camera is fixed; it has no pose.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from gym_worldmodel.envs.actions import (
    CAMERA_MOVE,
    CAMERA_PITCH,
    CAMERA_YAW,
    DRIVING_ACCEL,
    DRIVING_STEER,
    CameraHead,
    DrivingHead,
)

if TYPE_CHECKING:
    from gym_worldmodel.models import WorldModelConfig

#: The pose columns of each world with a pose, with their units (``info["pose"]``, datasets).
POSE_FIELDS = {
    "camera": ("x_m", "y_m", "yaw_deg", "pitch_deg"),
    "driving": ("x_m", "y_m", "heading_deg", "speed_mps"),
}

Angle = TypeVar("Angle", float, np.ndarray)


def wrap_deg(angle: Angle) -> Angle:
    """Angles in degrees (a float or an array) wrapped to [-180, 180)."""
    return (angle + 180.0) % 360.0 - 180.0


# Camera translation keys (none, W, A, S, D) as (forward, left) unit steps.
_MOVES = np.array([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=np.float64)


def integrate_camera(
    pose: np.ndarray, vec: np.ndarray, move_m: float, turn_deg: float
) -> np.ndarray:
    """Advance camera poses ``(B, 4)`` by per-frame action vectors ``(B, F, 12)``.

    Poses are ``POSE_FIELDS["camera"]``: x, y in metres, yaw and pitch in degrees (yaw wraps to
    [-180, 180), pitch clips to +-60). Each frame, the move one-hot (columns 0-4: none, W, A, S,
    D) steps ``move_m`` metres forward, left, back or right of the yaw; column 10 turns
    ``turn_deg`` degrees per unit (positive: right, which lowers the yaw) and column 11 tilts
    the pitch by ``turn_deg`` per unit (positive: up). Returns new float64 poses ``(B, 4)``.
    """
    pose = pose.copy()
    for f in range(vec.shape[1]):
        move = _MOVES[vec[:, f, CAMERA_MOVE].argmax(-1)] * move_m
        pose[:, 2] = wrap_deg(pose[:, 2] - vec[:, f, CAMERA_YAW] * turn_deg)
        pose[:, 3] = np.clip(pose[:, 3] + vec[:, f, CAMERA_PITCH] * turn_deg, -60.0, 60.0)
        yaw = np.radians(pose[:, 2])
        pose[:, 0] += move[:, 0] * np.cos(yaw) - move[:, 1] * np.sin(yaw)
        pose[:, 1] += move[:, 0] * np.sin(yaw) + move[:, 1] * np.cos(yaw)
    return pose


def integrate_driving(
    pose: np.ndarray,
    vec: np.ndarray,
    dt: float,
    max_steer_deg: float,
    max_accel: float,
    max_speed: float,
    length_m: float = 5.0,
) -> np.ndarray:
    """Kinematic bicycle model over per-frame ``(B, F, 2)`` (steering, acceleration) fractions.

    The model highway-env's vehicles follow (the driving world was trained on it): the car moves
    at its speed along its heading plus the slip angle ``beta = atan(tan(steer) / 2)`` of its
    centre, turns at ``speed * sin(beta) / (length_m / 2)``, and only then changes speed. Given
    a recorded episode's start pose and its actions it gives back the recorded poses. Speed stays
    in ``[0, max_speed]`` m/s (the head's ``DrivingHead.max_speed``; the simulator reverses
    below 0).
    """
    pose = pose.copy()
    for f in range(vec.shape[1]):
        beta = np.arctan(0.5 * np.tan(np.radians(vec[:, f, DRIVING_STEER] * max_steer_deg)))
        heading = np.radians(pose[:, 2])
        pose[:, 0] += pose[:, 3] * np.cos(heading + beta) * dt
        pose[:, 1] += pose[:, 3] * np.sin(heading + beta) * dt
        turn = np.degrees(pose[:, 3] * np.sin(beta) / (length_m / 2) * dt)
        pose[:, 2] = wrap_deg(pose[:, 2] + turn)
        pose[:, 3] = np.clip(pose[:, 3] + vec[:, f, DRIVING_ACCEL] * max_accel * dt, 0.0, max_speed)
    return pose


def advance(
    pose: np.ndarray | None, vec: np.ndarray, head: object, dt: float, ego: EgoShift | None
) -> tuple[np.ndarray | None, np.ndarray]:
    """Poses ``(B, 4)`` after per-frame action vectors ``vec`` and the vectors the model reads.

    ``head``: the env's action head (its units); ``dt``: seconds a frame; ``ego``: the world's
    scene shift when its anchors move with the car (``DiTConfig.anchor_ego``), whose vectors
    then carry it. A world without a pose (``pose`` None) keeps none.
    """
    if pose is None:
        return None, vec
    if isinstance(head, CameraHead):
        return integrate_camera(pose, vec, head.move_m, head.turn_deg), vec
    if ego is not None:
        return ego.step(pose, vec)
    assert isinstance(head, DrivingHead)  # the other world with a pose
    return integrate_driving(pose, vec, dt, head.max_steer_deg, head.max_accel, head.max_speed), vec


def scene_shift(poses: np.ndarray, px_per_m: float) -> np.ndarray:
    """How far a top-down view that follows the car moves between frames, from its poses.

    Args:
        poses: Driving poses ``(..., T + 1, 4)``, one per frame.
        px_per_m: Pixels per metre of the view.

    Returns:
        ``(..., T, 2)`` float32 backward flow ``(dx, dy)`` in pixels, image y pointing down:
        frame ``t + 1`` shows at pixel ``p`` what frame ``t`` showed at ``p + (dx, dy)``,
        everything but the car itself (``DiTConfig.anchor_ego``).
    """
    step = np.diff(poses[..., :2], axis=-2) * px_per_m
    return np.stack([step[..., 0], -step[..., 1]], -1).astype(np.float32)


def car_box(image_size: int, px_per_m: float) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` pixels of the followed car: a driving world's ``ego_hold``.

    highway-env's ego car is 5 m by 2 m, heading along +x at the centre of the view that
    follows it; a pixel of outline is added around it.
    """
    centre, half_x, half_y = (image_size - 1) / 2, 2.5 * px_per_m + 1, 1.0 * px_per_m + 1
    return (
        math.ceil(centre - half_y),
        math.floor(centre + half_y) + 1,
        math.ceil(centre - half_x),
        math.floor(centre + half_x) + 1,
    )


class EgoShift:
    """Appends to driving actions the scene shift they cause (``DiTConfig.anchor_ego``).

    The world's anchors move with the car: its pose is integrated frame by frame from the
    actions and the start pose (the env's own poses), and each frame's shift in pixels joins the
    action vector after the driving columns.

    Args:
        px_per_m: Pixels per metre of the world's frames.
        dt: Seconds per frame.
        max_steer_deg: Steering at action 1 (``DrivingHead.max_steer_deg``).
        max_accel: Acceleration at action 1, m/s^2.
        max_speed: Top speed, m/s.
    """

    def __init__(
        self, px_per_m: float, dt: float, max_steer_deg: float, max_accel: float, max_speed: float
    ) -> None:
        self.px_per_m, self.dt = px_per_m, dt
        self.limits = (max_steer_deg, max_accel, max_speed)

    @classmethod
    def for_model(
        cls, config: WorldModelConfig, modality: str, head: DrivingHead | None = None
    ) -> EgoShift | None:
        """The shift a model's ``modality`` rows need (None: its anchors do not move so).

        ``head``: the env's driving head, whose limits are the car's (default: the driving
        world's own, ``DrivingHead()``).
        """
        if modality not in config.dit.anchor_ego:
            return None
        head = DrivingHead() if head is None else head
        px_per_m = cls.px_per_m_of(config, modality)
        return cls(px_per_m, 1.0 / config.fps, head.max_steer_deg, head.max_accel, head.max_speed)

    @staticmethod
    def px_per_m_of(config: WorldModelConfig, modality: str) -> float:
        """Pixels a metre of the scene spans in a model's frames (its view's extent in metres)."""
        from gym_worldmodel.memory import GEOMETRIES

        return config.vae.image_size / GEOMETRIES[modality].extent_m

    def step(self, pose: np.ndarray, vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Poses ``(B, 4)`` after actions ``(B, F, 2)``; the actions with shifts ``(B, F, 4)``."""
        poses = [pose]
        for f in range(vec.shape[1]):
            poses.append(integrate_driving(poses[-1], vec[:, f : f + 1], self.dt, *self.limits))
        shift = scene_shift(np.stack(poses, 1), self.px_per_m)
        return poses[-1], np.concatenate([vec.astype(np.float32), shift], -1)

"""Pose integration from actions (camera and driving worlds), batched in NumPy.

Poses are ``(B, 4)`` float64 arrays:
    camera:  (x, y) metres on the ground plane, yaw degrees (counter-clockwise from +x), pitch
             degrees (up positive, clipped to +-60).
    driving: (x, y) metres, heading degrees (counter-clockwise from +x), speed m/s (>= 0).
The robot world's camera is fixed; it has no pose.
"""

from __future__ import annotations

import numpy as np

POSE_FIELDS = {
    "camera": ("x_m", "y_m", "yaw_deg", "pitch_deg"),
    "driving": ("x_m", "y_m", "heading_deg", "speed_mps"),
}
# Camera translation keys (none, W, A, S, D) as (forward, left) unit steps.
_MOVES = np.array([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=np.float64)


def integrate_camera(pose: np.ndarray, vec: np.ndarray, move_m: float, turn_deg: float):
    """Advance camera poses by per-frame action vectors ``(B, F, 12)``; returns new poses."""
    pose = pose.copy()
    for f in range(vec.shape[1]):
        move = _MOVES[vec[:, f, :5].argmax(-1)] * move_m
        pose[:, 2] = (pose[:, 2] - vec[:, f, 10] * turn_deg + 180.0) % 360.0 - 180.0
        pose[:, 3] = np.clip(pose[:, 3] + vec[:, f, 11] * turn_deg, -60.0, 60.0)
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
        beta = np.arctan(0.5 * np.tan(np.radians(vec[:, f, 0] * max_steer_deg)))
        heading = np.radians(pose[:, 2])
        pose[:, 0] += pose[:, 3] * np.cos(heading + beta) * dt
        pose[:, 1] += pose[:, 3] * np.sin(heading + beta) * dt
        turn = np.degrees(pose[:, 3] * np.sin(beta) / (length_m / 2) * dt)
        pose[:, 2] = (pose[:, 2] + turn + 180.0) % 360.0 - 180.0
        pose[:, 3] = np.clip(pose[:, 3] + vec[:, f, 1] * max_accel * dt, 0.0, max_speed)
    return pose

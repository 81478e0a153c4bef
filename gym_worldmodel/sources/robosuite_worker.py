"""robosuite episode worker: runs inside robosuite's own venv (numpy<2), driven over stdin/stdout.

This file is executed by path with the robosuite venv's Python and imports only numpy, mujoco and
robosuite (never gym_worldmodel or torch). ``gym_worldmodel.sources.robosuite_source`` starts it and
sends one JSON request per line; the worker answers one JSON line per request:

    {"cmd": "rollout", "seed": s, "steps": T, "out": path}  -> {"ok": true}  (npz written to out)
    {"cmd": "replay", "seed": s, "actions": path, "out": path} -> {"ok": true}
    {"cmd": "start", "seed": s, "out": path}                -> {"ok": true}  (frames (1, S, S, 3))
    {"cmd": "act", "osc": [[7 floats], ...], "out": path}   -> {"ok": true}  (a frame per input)
    {"cmd": "get_state", "out": path}                       -> {"ok": true}  (the state arrays)
    {"cmd": "set_state", "state": path, "out": path}        -> {"ok": true}
    {"cmd": "quit"}
    on failure                                                -> {"ok": false, "error": "..."}
    (``"bad_input": true`` added where a state's arrays did not fit: ``BadState``)

``get_state`` and ``set_state`` save and restore the episode between steps: MuJoCo's integration
state (positions, velocities, controls, warm start, time), the grippers' current actions
(robosuite moves a gripper towards its command a little each step), the controllers' goals and
cached state (``CONTROLLER_STATE``), and the env's step clock. An episode replays from it bit
for bit, in the same worker or a new one (every worker builds the task from seed 0, so the
cube's size, drawn once at construction, is the same in all).

``start`` and ``act`` step one episode a few frames at a time (``SimulatorEnv``): the same
reset and frames as ``rollout`` and ``replay``.

The npz holds ``frames`` uint8 (T + 1, S, S, 3) and ``osc`` float32 (T, 7): the OSC_POSE inputs
actually sent, ``[dx, dy, dz, dax, day, daz, gripper]`` in [-1, 1] (translation in units of
``OSC_MAX_M`` and rotation in units of ``OSC_MAX_RAD`` per control step; gripper +1 closes).
The parent converts them to RT-1 model vectors.

Every worker builds the task from seed 0: robosuite draws the cube's size once, at
construction, so it is the same in every worker and an episode's seed alone decides the rest
(before 2026-12-06 the size was drawn unseeded, a little different in each worker).

Behaviour policies (all randomness from ``np.random.default_rng(seed)``), named in ``STYLES``:
end-effector velocity targets held for a while (random direction and speed), with a pull back
towards a box-shaped workspace above the table; random small wrist rotations; the gripper
toggles now and then; now and then a reach towards the cube. ``smooth`` holds a target 4-20
frames at speed 0.1-0.4 and low-pass filters it, so an action is nearly the previous one;
``agile`` holds 1-6 frames at speed 0.3-0.8 with no filter, so each action tells more than the
frames before it did and moves the arm further in one frame.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TypedDict

import numpy as np

OSC_MAX_M = 0.05  # metres per control step at input 1 (robosuite's OSC_POSE output_max)
OSC_MAX_RAD = 0.5  # radians per control step at input 1


class Style(TypedDict):
    """A behaviour policy style (see :data:`STYLES`)."""

    hold: tuple[int, int]
    speed: tuple[float, float]
    follow: float
    grip_hold: tuple[int, int]


#: Behaviour policy styles: frames a velocity target is held ([low, high)), its translation input
#: range, the low-pass factor towards it (1 = none) and frames the gripper holds its state.
STYLES: dict[str, Style] = {
    "smooth": {"hold": (4, 21), "speed": (0.1, 0.4), "follow": 0.3, "grip_hold": (10, 41)},
    "agile": {"hold": (1, 7), "speed": (0.3, 0.8), "follow": 1.0, "grip_hold": (5, 21)},
}
WORKSPACE = (np.array([-0.25, -0.3, 0.85]), np.array([0.2, 0.3, 1.25]))  # metres, world frame


def make_env(task: str, size: int, camera: str):
    """A robosuite env with one fast-rendered camera, one control step per frame at 15 Hz."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    import mujoco
    import robosuite as suite
    from robosuite import macros
    from robosuite.controllers import load_composite_controller_config

    macros.IMAGE_CONVENTION = "opencv"  # otherwise frames are upside down
    ctrl = load_composite_controller_config(controller="BASIC", robot="Panda")
    env = suite.make(
        task,
        robots="Panda",
        controller_configs=ctrl,
        has_renderer=False,
        has_offscreen_renderer=True,
        use_camera_obs=True,
        camera_names=[camera],
        camera_heights=size,
        camera_widths=size,
        control_freq=15,
        horizon=100_000,
        ignore_done=True,
        hard_reset=False,
        seed=0,  # the cube's size is drawn once, at construction: the same in every worker
    )
    env.reset()
    rc, model = env.sim._render_context_offscreen, env.sim.model._model
    model.vis.quality.offsamples = 0
    model.vis.global_.offwidth = size
    model.vis.global_.offheight = size
    rc.con.free()
    rc._set_mujoco_context_and_buffers()
    for flag in (
        mujoco.mjtRndFlag.mjRND_SHADOW,
        mujoco.mjtRndFlag.mjRND_REFLECTION,
        mujoco.mjtRndFlag.mjRND_SKYBOX,
    ):
        rc.scn.flags[flag] = 0
    return env


class Policy:
    """Smooth random end-effector motion that stays in the workspace (see module docstring)."""

    def __init__(self, rng: np.random.Generator, style: str = "smooth") -> None:
        self.rng, self.style = rng, STYLES[style]
        self.hold = self.grip_hold = 0
        self.target = np.zeros(6)
        self.current = np.zeros(6)
        self.grip = -1.0

    def __call__(self, obs: dict) -> np.ndarray:
        """OSC_POSE input for the current observation."""
        rng, style = self.rng, self.style
        pos = obs["robot0_eef_pos"]
        if self.hold <= 0:
            self.hold = int(rng.integers(*style["hold"]))
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction) + 1e-9
            if rng.random() < 0.25 and "cube_pos" in obs:  # reach towards the cube
                to_cube = obs["cube_pos"] + np.array([0.0, 0.0, 0.03]) - pos
                direction = to_cube / (np.linalg.norm(to_cube) + 1e-9)
            self.target[:3] = direction * rng.uniform(*style["speed"])
            self.target[3:] = rng.normal(scale=0.15, size=3) * (rng.random() < 0.5)
        self.hold -= 1
        if self.grip_hold <= 0:
            self.grip_hold = int(rng.integers(*style["grip_hold"]))
            self.grip = -self.grip
        self.grip_hold -= 1
        self.current += style["follow"] * (self.target - self.current)
        action = np.concatenate([self.current, [self.grip]])
        low, high = WORKSPACE
        pull = np.clip(low - pos, 0, None) - np.clip(pos - high, 0, None)  # metres outside
        action[:3] += np.clip(pull / OSC_MAX_M, -1.0, 1.0)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


def start(env, seed: int, camera: str) -> tuple[dict, np.ndarray]:
    """Reset with ``seed``: the observations and the first frame."""
    # The env's generator is shared by reference with its placement sampler: reseed it in place.
    env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
    np.random.seed(seed)
    obs = env.reset()
    return obs, obs[f"{camera}_image"]


def act(env, action: np.ndarray, camera: str) -> tuple[dict, np.ndarray]:
    """One control step under an OSC_POSE input (clipped to [-1, 1]): observations and frame."""
    env.step(np.clip(action, -1.0, 1.0).astype(np.float64))
    # step() returns observables sampled at the step's first physics substep, so its image and
    # poses show the state before this action acted (one frame stale): read them now.
    obs = env._get_observations(force_update=True)
    return obs, obs[f"{camera}_image"]


def record(
    env, seed: int, steps: int, camera: str, style: str, actions: np.ndarray | None = None
) -> dict:
    """Reset with ``seed``; record ``steps`` actions of the ``style`` policy (or the given ones)."""
    obs, first = start(env, seed, camera)
    policy = Policy(np.random.default_rng(seed), style)
    frames = np.empty((steps + 1, *first.shape), np.uint8)
    sent = np.empty((steps, 7), np.float32)
    frames[0] = first
    for t in range(steps):
        action = policy(obs) if actions is None else np.clip(actions[t], -1.0, 1.0)
        obs, frames[t + 1] = act(env, action, camera)
        sent[t] = action
    return {"frames": frames, "osc": sent}


#: The controllers' attributes that change during an episode (the rest is configuration): goals,
#: references and the joint state, Jacobians and torques they cache between updates. Some are
#: None (or absent) until the first step after a reset; a state stores that as an empty array.
CONTROLLER_STATE = {
    "arm": (
        "J_full", "J_ori", "J_pos", "action_input_transform", "action_output_transform",
        "action_scale", "goal_ori", "goal_pos", "initial_joint", "initial_ref_ori_mat",
        "initial_ref_pos", "joint_pos", "joint_vel", "mass_matrix", "new_update", "ori_ref",
        "origin_ori", "origin_pos", "ref_ori_mat", "ref_ori_vel", "ref_pos", "ref_pos_vel",
        "relative_ori", "torques",
    ),
    "gripper": (
        "action_input_transform", "action_output_transform", "action_scale", "goal_qvel",
        "initial_joint", "joint_pos", "joint_vel", "new_update", "previous_qpos", "torques",
        "vels",
    ),
}  # fmt: skip


class BadState(ValueError):
    """A ``set_state`` request whose arrays do not fit this env (reported as bad input)."""


def get_state(env) -> dict:
    """The episode's state between steps (see the module docstring)."""
    import mujoco

    model, data = env.sim.model._model, env.sim.data._data
    full = np.empty(mujoco.mj_stateSize(model, _STATE_SPEC()))
    mujoco.mj_getState(model, data, full, _STATE_SPEC())
    grippers = env.robots[0].gripper
    state = {
        "mujoco": full,
        "gripper": np.stack([np.asarray(grippers[k].current_action) for k in sorted(grippers)]),
        "clock": np.array([env.timestep, env.cur_time], np.float64),
    }
    for key, (controller, name) in _controller_attributes(env).items():
        value = getattr(controller, name, None)
        state[key] = np.empty(0) if value is None else np.asarray(value)
    return state


def _controller_attributes(env) -> dict:
    """``{state key: (controller, attribute)}`` for :data:`CONTROLLER_STATE`."""
    out = {}
    for part, controller in sorted(env.robots[0].composite_controller.part_controllers.items()):
        names = CONTROLLER_STATE["gripper" if part.endswith("gripper") else "arm"]
        for name in names:  # (some only exist after the first step)
            out[f"controller/{part}/{name}"] = (controller, name)
    return out


def set_state(env, state: dict) -> None:
    """Restore :func:`get_state`'s arrays.

    Every one is checked and converted first, so a state that does not fit (:class:`BadState`)
    changes nothing.
    """
    import mujoco

    model, data = env.sim.model._model, env.sim.data._data
    grippers = env.robots[0].gripper
    own = get_state(env)
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise BadState(f"state['source'] has unexpected entries {unknown}")
    for key in own:
        given = state.get(key)
        if given is None or np.asarray(given).dtype.kind not in "biuf":
            raise BadState(f"state['source'][{key!r}] must be an array of numbers")
        if not np.isfinite(given).all():
            raise BadState(f"state['source'][{key!r}] holds NaN or inf")
    for key in ("mujoco", "clock"):
        if np.shape(state[key]) != own[key].shape:
            raise BadState(f"state['source'][{key!r}] must have shape {own[key].shape}")
    actions = []  # a gripper's action is (1,) after a reset, one per finger joint once stepped
    parts = env.robots[0].composite_controller.part_controllers
    for k, action in zip(sorted(grippers), np.atleast_2d(state["gripper"]), strict=False):
        widths = {1, parts[f"{k}_gripper"].joint_dim} if f"{k}_gripper" in parts else {1}
        if np.ndim(action) != 1 or len(action) not in widths:
            raise BadState(f"state['source']['gripper'] rows must have a width in {widths}")
        actions.append(np.array(action, np.float64))
    if np.ndim(state["gripper"]) != 2 or len(actions) != len(grippers):
        raise BadState(f"state['source']['gripper'] must have {len(grippers)} rows")
    values: dict[str, object] = {}
    for key, (controller, name) in _controller_attributes(env).items():
        old, given = getattr(controller, name, None), np.asarray(state[key])
        if given.size == 0:
            values[key] = None
        elif isinstance(old, np.ndarray) and given.shape != old.shape:
            raise BadState(f"state['source'][{key!r}] must have shape {old.shape}")
        elif isinstance(old, np.ndarray) or old is None:
            values[key] = np.array(given, old.dtype if old is not None else np.float64)
        elif given.shape != () or (isinstance(old, bool) and given.item() not in (0, 1)):
            raise BadState(f"state['source'][{key!r}] must be one {type(old).__name__}")
        else:
            values[key] = type(old)(given.item())
    # everything fits: restore
    mujoco.mj_setState(model, data, np.asarray(state["mujoco"], np.float64), _STATE_SPEC())
    mujoco.mj_forward(model, data)
    for k, action in zip(sorted(grippers), actions, strict=True):
        grippers[k].current_action = action
    for key, (controller, name) in _controller_attributes(env).items():
        setattr(controller, name, values[key])
    env.timestep, env.cur_time = int(state["clock"][0]), float(state["clock"][1])
    env._get_observations(force_update=True)  # the observables read the restored state
    # mj_forward (above, and in the observations' update) overwrites the solver's warm start
    # with this state's own acceleration; the stepped episode kept its last step's: put it back
    mujoco.mj_setState(model, data, np.asarray(state["mujoco"], np.float64), _STATE_SPEC())


def _STATE_SPEC():  # noqa: N802 - a constant of mujoco, imported late
    import mujoco

    return mujoco.mjtState.mjSTATE_INTEGRATION


def serve(env, request: dict, camera: str, style: str) -> dict:
    """The arrays one request asks for (see the module docstring)."""
    if request["cmd"] == "get_state":
        return get_state(env)
    if request["cmd"] == "set_state":
        with np.load(request["state"]) as given:
            set_state(env, dict(given))
        return {}
    if request["cmd"] == "start":
        return {"frames": start(env, int(request["seed"]), camera)[1][None]}
    if request["cmd"] == "act":
        osc = np.asarray(request["osc"], np.float32).reshape(-1, 7)
        return {"frames": np.stack([act(env, a, camera)[1] for a in osc])}
    given = np.load(request["actions"]) if request["cmd"] == "replay" else None
    steps = len(given) if given is not None else int(request["steps"])
    return record(env, int(request["seed"]), steps, camera, style, given)


def main() -> None:
    """Serve requests from stdin until ``quit`` (see the module docstring)."""
    sys.path.pop(0)  # this file's folder holds modules that must not shadow robosuite's imports
    task, size, camera, style = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    env = make_env(task, size, camera)
    for line in sys.stdin:
        request = json.loads(line)
        if request["cmd"] == "quit":
            break
        try:
            arrays = serve(env, request, camera, style)
            tmp = request["out"] + ".tmp.npz"
            np.savez(tmp, **arrays)
            os.replace(tmp, request["out"])
            reply: dict[str, object] = {"ok": True}
        except Exception as err:  # noqa: BLE001 - reported to the parent, which raises
            reply = {"ok": False, "error": f"{type(err).__name__}: {err}"}
            reply["bad_input"] = isinstance(err, BadState)
        print(json.dumps(reply), flush=True)
    env.close()


if __name__ == "__main__":
    main()

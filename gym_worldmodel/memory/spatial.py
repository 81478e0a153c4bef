"""Spatial memory: a bounded bank of past chunks per env, retrieved by view overlap.

Every generated chunk goes into its env's bank with the pose it was seen from (but the last
chunk of an env about to start over, which its reset would drop). Before a step,
each env retrieves the stored chunks whose view overlaps most with where it is about to look
(top-k by :meth:`ViewGeometry.overlap`); the engine writes them into the KV cache's memory
slots, where they sit just after the sink in the position index however old they are (reframed
positions), so the model can repaint a place it saw long ago.

* Poses are the env's (``envs.pose``): camera ``(x_m, y_m, yaw_deg, pitch_deg)``, driving
  ``(x_m, y_m, heading_deg, speed_mps)``. A world without a pose (the robot's fixed camera)
  retrieves by latent similarity instead: the cosine between the mean latent of the env's last
  chunk and each stored chunk's.
* Chunks the env already attends to (its sink and its ring window) are never retrieved for it.
* The bank is bounded: ``capacity`` chunks per bank. A new chunk takes an empty slot; in a full
  bank it replaces a stored one whose view it nearly repeats (overlap >= ``replace_overlap``),
  else the oldest; so walking the same street twice refreshes the entries rather than evicting
  everything else.
* Several envs may share one bank (``banks``): what one saw, another finds (PettingZoo agents
  of one world). Each entry remembers its owner, so an env's reset removes only its entries.

Latents live on the engine's device; poses, scores and bookkeeping are small NumPy arrays on
the host (poses are integrated there); the retrieved chunks' latents are gathered on the device by
host indices (on a GPU, a small upload a step). Latent-similarity scores (the robot's) are
computed on the device and read back to rank, a wait for the device each step on a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

#: Entries are numbered from 0 as they are stored; a saved state's uids stay below this.
_MAX_UID = 2**62
#: Least view overlap (or latent similarity) that counts as a memory hit, at run time and in
#: training's windows alike.
MIN_SCORE = 0.2


@dataclass(frozen=True)
class ViewGeometry:
    """What a pose sees, for view-overlap retrieval.

    Attributes:
        kind: ``"frustum"`` (first-person camera: a horizontal wedge ``fov_deg`` wide reaching
            ``depth_m``, pitch differences discounting overlap), ``"topdown"`` (a square
            ``extent_m`` wide centred on the pose, north up) or ``"latent"`` (no pose: latent
            similarity).
        fov_deg: Horizontal field of view of a frustum.
        depth_m: How far a frustum sees.
        extent_m: Side of a top-down view.
        samples: Points sampled over the current view to estimate overlap.
    """

    kind: str = "frustum"
    fov_deg: float = 60.0
    depth_m: float = 8.0
    extent_m: float = 32.0
    samples: int = 8

    def __post_init__(self) -> None:
        if self.kind not in ("frustum", "topdown", "latent"):
            raise ValueError(f"kind must be frustum, topdown or latent, got {self.kind!r}")
        if not 0.0 < self.fov_deg <= 180.0:  # the wedge test reads cos(fov / 2) >= 0
            raise ValueError(f"fov_deg must be in (0, 180], got {self.fov_deg}")

    def points(self, poses: np.ndarray) -> np.ndarray:
        """World points ``(B, P, 2)`` spread over what each pose ``(B, 4)`` sees."""
        s = (np.arange(self.samples) + 0.5) / self.samples
        if self.kind == "frustum":
            half = np.radians(self.fov_deg) / 2
            depth, angle = np.meshgrid(s * self.depth_m, (2 * s - 1) * half, indexing="ij")
            bearing = np.radians(poses[:, 2])[:, None] + angle.ravel()
            x = poses[:, 0, None] + depth.ravel() * np.cos(bearing)
            y = poses[:, 1, None] + depth.ravel() * np.sin(bearing)
            return np.stack((x, y), -1)
        dx, dy = np.meshgrid((s - 0.5) * self.extent_m, (s - 0.5) * self.extent_m, indexing="ij")
        return np.stack((poses[:, 0, None] + dx.ravel(), poses[:, 1, None] + dy.ravel()), -1)

    def overlap(
        self, query: np.ndarray, stored: np.ndarray, where: np.ndarray | None = None
    ) -> np.ndarray:
        """Fraction of each query pose's view ``(B, 4)`` also seen from stored poses ``(B, N, 4)``.

        Returns ``(B, N)`` in [0, 1]. Walls are ignored: a view behind a wall counts as seen.
        ``where`` ``(B, N)`` bool: the pairs to score (others read 0). Pairs too far apart to
        share a point read 0 without being scored, so where most are (a long walk), the cost
        follows the views nearby, not the bank's size.
        """
        near = self._within_reach(query, stored)
        if where is not None:
            near &= where
        if near.size and near.mean() > 0.5:  # most pairs in reach (a small map): score them all
            return np.where(near, self._overlap(query, stored), 0.0)
        b, n = np.nonzero(near)
        out = np.zeros(near.shape)
        if len(b):  # each pair a row of one stored pose; each query's view sampled once
            seen = self._view(query)[b]
            out[b, n] = self._overlap(query[b], stored[b, n][:, None], seen)[:, 0]
        return out

    def _within_reach(self, query: np.ndarray, stored: np.ndarray) -> np.ndarray:
        """``(B, N)``: pairs whose views may share a point (the others overlap 0).

        A frustum's sampled points lie under ``depth_m`` from its camera, so two cameras
        farther apart than twice that share none; a top-down view's lie under ``extent_m / 2``
        from its centre on each axis.
        """
        d = stored[..., :2] - query[:, None, :2]
        if self.kind == "topdown":
            return (np.abs(d) <= self.extent_m).all(-1)
        return (d * d).sum(-1) <= (2 * self.depth_m) ** 2

    def _view(self, query: np.ndarray) -> np.ndarray:
        """:meth:`points` of each query pose ``(B, 4)`` relative to it, float32 ``(B, P, 2)``.

        Relative to the query: float32 keeps far from the origin.
        """
        return (self.points(query) - query[:, None, :2]).astype(np.float32)

    def _overlap(
        self, query: np.ndarray, stored: np.ndarray, view: np.ndarray | None = None
    ) -> np.ndarray:
        """:meth:`overlap` of every pair, scored (``view``: the queries' :meth:`_view`)."""
        # float32 and no angles: this runs over the stored entries nearby of every row each step.
        origin = query[:, None, :2]
        pts = (self._view(query) if view is None else view)[:, None]  # (B, 1, P, 2)
        at = np.concatenate((stored[..., :2] - origin, stored[..., 2:]), -1)
        at = at.astype(np.float32)[..., None]  # (B, N, 4, 1)
        dx, dy = pts[..., 0] - at[:, :, 0], pts[..., 1] - at[:, :, 1]  # (B, N, P)
        if self.kind == "topdown":
            half = self.extent_m / 2
            return ((np.abs(dx) <= half) & (np.abs(dy) <= half)).mean(-1)
        # Within the wedge: ahead of the stored camera by at least cos(fov / 2) of the distance.
        heading = np.radians(at[:, :, 2])
        ahead = dx * np.cos(heading) + dy * np.sin(heading)
        dist2 = dx * dx + dy * dy
        cos2 = np.cos(np.radians(self.fov_deg / 2)) ** 2
        inside = (dist2 <= self.depth_m**2) & (ahead >= 0) & (ahead * ahead >= cos2 * dist2)
        pitch = np.abs(query[:, None, 3] - stored[..., 3])
        return inside.mean(-1) * np.clip(1.0 - pitch / self.fov_deg, 0.0, 1.0)


#: Side of the driving world's top-down view, metres: its 64 px frames at 2 px/m. The highway
#: source renders at this scale and the anchors that move with the car shift by it
#: (``envs.pose.EgoShift``), so it is the world's, not a retrieval setting to tune.
DRIVING_VIEW_M = 32.0

#: Geometry of each modality's views; the robot's camera is fixed (no pose).
GEOMETRIES = {
    "camera": ViewGeometry("frustum", fov_deg=60.0, depth_m=8.0),  # MiniWorld's 60 deg camera
    "driving": ViewGeometry("topdown", extent_m=DRIVING_VIEW_M),
    "robot": ViewGeometry("latent"),
}


@dataclass
class Recall:
    """What :meth:`SpatialMemory.retrieve` found for each row.

    Attributes:
        uid: ``(B, k)`` int64 unique ids of the retrieved entries (-1: none).
        bank: ``(B, k)`` bank of each entry.
        slot: ``(B, k)`` slot of each entry in its bank.
        score: ``(B, k)`` view overlap (or latent similarity) of each entry.
    """

    uid: np.ndarray
    bank: np.ndarray
    slot: np.ndarray
    score: np.ndarray

    @property
    def hits(self) -> np.ndarray:
        """``(B,)`` entries retrieved per row."""
        return (self.uid >= 0).sum(1)


class SpatialMemory:
    """Bounded banks of past chunks with poses, retrieved by view overlap.

    Args:
        num_rows: Envs (rows of the engine).
        chunk_shape: ``(F, C, h, w)`` of one chunk's latents.
        geometry: How poses see (:data:`GEOMETRIES`).
        capacity: Chunks per bank.
        k: Chunks retrieved per step (the model's memory slots).
        exclude_recent: Chunks an env still holds in its ring window (never retrieved for it).
        min_score: Least overlap (or similarity) that counts as a hit.
        replace_overlap: A new chunk replaces a stored one whose view overlap is this high.
        stickiness: Score bonus, when ranking, of the entries a row holds already (``held`` of
            :meth:`retrieve`): a held chunk is kept until another overlaps better by more than
            this, so the memory slot is not re-encoded every time the best view changes a little.
            Turning in place moves the camera's overlap in steps of 1/8 (its sampled view
            columns): the default keeps a chunk until another is two such steps better.
        banks: Bank id of each row (rows with the same id share a bank); default one per row.
        device: Where latents live.
        dtype: What the stored latents are kept in: the precision the model reads them at (a
            bfloat16 engine's casts them to bfloat16 in its first layer, so keeping them so
            halves the bank and changes no bit of what is read).

    Example:
        >>> import numpy as np, torch
        >>> mem = SpatialMemory(1, (2, 4, 8, 8), GEOMETRIES["camera"], capacity=8)
        >>> here = np.zeros((1, 4))
        >>> for _ in range(4):  # stand still for 4 chunks
        ...     mem.add(torch.zeros(1, 2, 4, 8, 8), here)
        >>> mem.retrieve(here).hits  # the oldest non-sink chunk is out of the window
        array([1])
    """

    def __init__(
        self,
        num_rows: int,
        chunk_shape: tuple[int, ...],
        geometry: ViewGeometry,
        capacity: int = 256,
        k: int = 1,
        exclude_recent: int = 2,
        min_score: float = MIN_SCORE,
        replace_overlap: float = 0.9,
        stickiness: float = 0.15,
        banks: Sequence[int] | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        for name, count in (("num_rows", num_rows), ("capacity", capacity), ("k", k)):
            if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or count < 1:
                raise ValueError(f"{name} must be an int >= 1, got {count!r}")
        self.banks = np.arange(num_rows) if banks is None else np.asarray(banks, np.int64)
        if self.banks.shape != (num_rows,) or self.banks.min() < 0:
            raise ValueError(f"banks must be {num_rows} non-negative ids, got {banks}")
        self.geometry, self.capacity, self.k = geometry, capacity, k
        self.exclude_recent, self.min_score = exclude_recent, min_score
        self.replace_overlap, self.stickiness = replace_overlap, stickiness
        g = int(self.banks.max()) + 1
        try:
            self.latents = torch.zeros(g, capacity, *chunk_shape, device=device, dtype=dtype)
        except (RuntimeError, MemoryError) as err:  # torch's allocator says only the bytes
            size = g * capacity * int(np.prod(chunk_shape)) * dtype.itemsize / 2**30
            raise MemoryError(
                f"a memory bank of {capacity} chunks for each of {g} banks needs {size:.1f} GiB "
                f"on {device}: lower the capacity (the env's memory_capacity) ({err})"
            ) from None
        # the keys of latent-similarity retrieval; pose-retrieving banks keep none
        width = int(np.prod(chunk_shape[1:])) if geometry.kind == "latent" else 0
        self.keys = torch.zeros(g, capacity, width, device=device)
        self.poses = np.zeros((g, capacity, 4))
        self.uid = np.full((g, capacity), -1, np.int64)  # -1: empty
        self.owner = np.full((g, capacity), -1, np.int64)
        self.step = np.zeros((g, capacity), np.int64)  # owner's chunk index of the entry
        self.chunks = np.zeros(num_rows, np.int64)  # chunks seen per row since its reset
        self.enabled = np.ones(num_rows, bool)  # retrieves
        self.storing = np.ones(num_rows, bool)  # stores what it sees
        self._next_uid = 0

    @property
    def num_rows(self) -> int:
        """Rows."""
        return len(self.banks)

    # --- writing ---------------------------------------------------------------------------------

    def add(
        self,
        latents: Tensor,
        poses: np.ndarray | None = None,
        rows: Sequence[int] | None = None,
        store: np.ndarray | None = None,
    ):
        """Store each row's new chunk ``(n, F, C, h, w)`` seen from ``poses`` ``(n, 4)``.

        ``rows``: distinct rows (default all). ``store`` ``(n,)`` bool: of those, the ones whose
        chunk goes into their bank this time (default all); every row counts its chunk, stored
        or not, as a read-only row does (``set_enabled(store=False)``).
        """
        if rows is None:
            ids = np.arange(self.num_rows)
        else:
            ids = np.asarray(rows, np.int64)
            if len(np.unique(ids)) != len(ids):
                raise ValueError(f"rows must be distinct, got {ids.tolist()}")
        if latents.shape[0] != len(ids) or latents.shape[1:] != self.latents.shape[2:]:
            raise ValueError(
                f"latents must be ({len(ids)}, {', '.join(map(str, self.latents.shape[2:]))}), "
                f"got {tuple(latents.shape)}"
            )
        poses = self._check_poses(poses, len(ids))
        self.chunks[ids] += 1  # counts every chunk seen, stored or not (the ring window's)
        storing = self.storing[ids] if store is None else self.storing[ids] & store
        keep = np.flatnonzero(storing)
        if not len(keep):
            return
        if len(keep) < len(ids):
            ids, latents, poses = ids[keep], latents[torch.from_numpy(keep)], poses[keep]
        banks = self.banks[ids]
        if len(np.unique(banks)) == len(banks):  # a new entry per bank: all slots at once
            self._write(banks, self._free_slots(banks, poses), ids, latents, poses)
            return
        for i in range(len(ids)):  # rows sharing a bank take their slots in turn
            one = slice(i, i + 1)
            slot = self._free_slots(banks[one], poses[one])
            self._write(banks[one], slot, ids[one], latents[one], poses[one])

    def _free_slots(self, banks: np.ndarray, poses: np.ndarray) -> np.ndarray:
        """A slot in each of ``banks`` (distinct) for a chunk seen from ``poses``.

        An empty slot, else one whose view the new chunk nearly repeats, else the oldest entry.
        """
        filled = self.uid[banks] >= 0
        slots = np.argmin(filled, 1)  # the first empty slot
        full = np.flatnonzero(filled.all(1))
        if len(full):
            oldest = np.argmin(self.uid[banks[full]], 1)  # uids grow with insertion
            if self.geometry.kind != "latent":
                overlap = self.geometry.overlap(poses[full], self.poses[banks[full]])
                best = np.argmax(overlap, 1)
                repeats = overlap[np.arange(len(full)), best] >= self.replace_overlap
                oldest = np.where(repeats, best, oldest)
            slots[full] = oldest
        return slots

    def _write(self, banks, slots, rows, latents: Tensor, poses) -> None:
        """Store entries: rows ``rows``' chunks into ``slots`` of ``banks`` (all ``(n,)``).

        Through ``index_copy_`` on flat views: on the CPU, assigning through an index
        (``index_put_``) took milliseconds for a few chunks, ``index_copy_`` microseconds.
        """
        at = self._entries(banks, slots)
        self.latents.view(-1, *self.latents.shape[2:]).index_copy_(0, at, latents.to(self.latents))
        if self.geometry.kind == "latent":  # the keys of latent-similarity retrieval
            keys = _descriptor(latents).to(self.keys)
            self.keys.view(-1, self.keys.shape[2]).index_copy_(0, at, keys)
        self.poses[banks, slots] = poses
        self.uid[banks, slots] = self._next_uid + np.arange(len(rows))
        self._next_uid += len(rows)
        self.owner[banks, slots], self.step[banks, slots] = rows, self.chunks[rows] - 1

    def reset(self, rows: Sequence[int] | None = None) -> None:
        """Forget what rows ``rows`` (all if None) stored; other rows' entries stay.

        A bank every row of which resets here is emptied: what no row owns (a fork's copy of
        the views of rows it was not forked from, or views handed over, :meth:`hand_over`)
        belongs to the episodes that end.
        """
        ids = np.arange(self.num_rows) if rows is None else np.asarray(rows, np.int64)
        for row in ids:
            mine = self.owner[self.banks[row]] == row
            self.uid[self.banks[row], mine] = -1
            self.owner[self.banks[row], mine] = -1
            self.chunks[row] = 0
        for bank in np.unique(self.banks[ids]):
            if np.isin(np.flatnonzero(self.banks == bank), ids).all():
                self.uid[bank], self.owner[bank] = -1, -1

    def hand_over(self, rows: Sequence[int]) -> None:
        """Keep what rows ``rows`` stored for the other rows of their banks when these reset.

        The entries lose their owner: a reset of the rows no longer forgets them, and no row
        holds them as its own recent context. They go when every row of the bank resets at
        once (:meth:`reset`). A PettingZoo agent that ended its episode leaves its views so to
        the agents still live.
        """
        for row in np.asarray(rows, np.int64):
            bank = self.banks[row]
            self.owner[bank, self.owner[bank] == row] = self.num_rows  # no row's (set_state's)

    def set_enabled(
        self, enabled: bool | None, rows: Sequence[int] | None = None, store: bool | None = None
    ) -> None:
        """Switch retrieval (``enabled``) and storing (``store``) for rows ``rows`` (all if None).

        None leaves that switch as it is. A row that does not store keeps reading.
        """
        sel = slice(None) if rows is None else np.asarray(rows, np.int64)
        if enabled is not None:
            self.enabled[sel] = enabled
        if store is not None:
            self.storing[sel] = store

    # --- reading ---------------------------------------------------------------------------------

    def retrieve(
        self,
        poses: np.ndarray | None = None,
        query: Tensor | None = None,
        held: np.ndarray | None = None,
    ) -> Recall:
        """Top-k stored chunks for each row about to look from ``poses`` ``(B, 4)``.

        ``query`` ``(B, F, C, h, w)``: each row's last chunk, used (instead of poses) by the
        latent geometry. ``held`` ``(B, k)``: uids each row retrieved last (-1: none); they rank
        ``stickiness`` higher than their score (the reported score is the real one).
        """
        b = self.num_rows
        if self.geometry.kind != "latent":
            poses = self._check_poses(poses, b)
        elif query is None:
            raise ValueError("latent retrieval needs the rows' last chunk as query")
        banks, rows = self.banks, np.arange(b)[:, None]
        step = self.step[banks]  # (B, capacity): every row's view of its bank
        # Not the row's own sink or ring window: those are in its context already.
        recent = (self.owner[banks] == rows) & (
            (step == 0) | (step >= self.chunks[:, None] - self.exclude_recent)
        )
        usable = (self.uid[banks] >= 0) & ~recent & self.enabled[:, None]
        if self.geometry.kind == "latent":
            assert query is not None  # checked above
            q = _descriptor(query.to(self.keys.device))  # (B, D)
            # Float32 products summed per entry: a batched matmul (bf16 under autocast) gave a
            # row other last digits, so another ranking at a near tie, for other batch sizes.
            sim = (self.keys[torch.from_numpy(banks)] * q[:, None]).sum(-1)
            score = sim.cpu().numpy().astype(np.float64)
        else:
            assert poses is not None  # _check_poses above
            score = self.geometry.overlap(poses, self.poses[banks], where=usable)
        # Entries under ``min_score`` are out before ranking: a held chunk that no longer
        # counts as a hit must not outrank a fresh one that does.
        score = np.where(usable & (score >= self.min_score), score, -np.inf)
        rank = score
        if held is not None and self.stickiness:
            kept = (self.uid[banks][:, :, None] == held[:, None, :]) & (held[:, None, :] >= 0)
            rank = score + self.stickiness * kept.any(-1)
        top = np.argsort(-rank, axis=1, kind="stable")[:, : self.k]  # (B, k)
        best = np.take_along_axis(score, top, 1)
        hit = best >= self.min_score
        return Recall(
            uid=np.where(hit, np.take_along_axis(self.uid[banks], top, 1), -1),
            bank=np.where(hit, banks[:, None], -1),
            slot=np.where(hit, top, -1),
            score=np.where(hit, best, 0.0),
        )

    def gather(self, recall: Recall, j: int) -> tuple[Tensor, np.ndarray]:
        """Latents of every row's ``j``-th retrieved chunk ``(B, F, C, h, w)`` and its validity.

        In float32, whatever precision the bank keeps them at.
        """
        valid = recall.uid[:, j] >= 0
        bank, slot = np.where(valid, recall.bank[:, j], 0), np.where(valid, recall.slot[:, j], 0)
        flat = self.latents.view(-1, *self.latents.shape[2:])
        return flat.index_select(0, self._entries(bank, slot)).float(), valid

    def _entries(self, banks: np.ndarray, slots: np.ndarray) -> Tensor:
        """Flat indices of entries in ``(banks * capacity, ...)`` views of the latents and keys."""
        return torch.from_numpy(banks * self.capacity + slots).to(self.latents.device)

    def _check_poses(self, poses: np.ndarray | None, n: int) -> np.ndarray:
        if poses is None:
            if self.geometry.kind != "latent":
                raise ValueError(f"{self.geometry.kind} retrieval needs poses (n, 4)")
            return np.zeros((n, 4))
        poses = np.asarray(poses, np.float64)
        if poses.shape != (n, 4) or not np.isfinite(poses).all():
            got = f"shape {poses.shape}" if poses.shape != (n, 4) else "NaN or inf"
            raise ValueError(f"poses must be a finite ({n}, 4) array, got {got}")
        return poses

    # --- state -----------------------------------------------------------------------------------

    def get_state(self, rows: Sequence[int]) -> list[dict[str, Any]]:
        """Copies of each row's bank (its entries and its own counters), one dict per row."""
        states = []
        for row in rows:
            bank = self.banks[row]
            states.append(
                {
                    "latents": self.latents[bank].clone(),
                    "keys": self.keys[bank].clone(),
                    "poses": self.poses[bank].copy(),
                    "uid": self.uid[bank].copy(),
                    "owner_is_row": self.owner[bank] == row,
                    "has_owner": self.owner[bank] >= 0,
                    "step": self.step[bank].copy(),
                    "chunks": int(self.chunks[row]),
                    "enabled": bool(self.enabled[row]),
                    "storing": bool(self.storing[row]),
                }
            )
        return states

    @staticmethod
    def check_states(states: Sequence[dict[str, Any]]) -> None:
        """Raise ``ValueError`` naming a row state whose counters cannot be this memory's.

        Shapes and dtypes are the caller's to compare (``envs.state.check_state``); here the
        values: a stored entry's uid in [0, 2**62) and unique in its bank (-1 marks an empty
        slot), the step it was stored at >= 0, the row's chunk count in [0, 2**62), and
        ``has_owner`` wherever the row owns an entry.
        """
        for i, state in enumerate(states):
            uid, step = np.asarray(state["uid"]), np.asarray(state["step"])
            stored = uid >= 0
            problems = []
            if (uid < -1).any():
                problems.append("uids below -1 (-1 marks an empty slot)")
            if (uid >= _MAX_UID).any():  # new entries count on from the largest
                problems.append("uids from 2**62 (no memory numbers that many entries)")
            if len(np.unique(uid[stored])) != int(stored.sum()):
                problems.append("a uid twice")
            if (step[stored] < 0).any():
                problems.append("an entry stored at a negative step")
            if not 0 <= state["chunks"] < _MAX_UID:  # a count of chunks seen, loaded as int64
                problems.append(f"chunks {state['chunks']}")
            if (np.asarray(state["owner_is_row"]) & ~np.asarray(state["has_owner"])).any():
                problems.append("an entry the row owns without an owner")
            if problems:
                raise ValueError(f"state['engine']['memory'][{i}] holds {', '.join(problems)}")

    def set_state(self, states: Sequence[dict[str, Any]], rows: Sequence[int]) -> None:
        """Load :meth:`get_state` output into rows ``rows``.

        A bank that no other row uses (every row of it is loaded in this call) becomes the first
        saved bank loaded into it, whole: entries the saved row owned become the target row's,
        those of other owners belong to someone else (never excluded as recent) unless another
        row loaded in the same call owned them. In a bank that rows outside ``rows`` share (the
        PettingZoo agents of one world), a row's state replaces only that row's own entries, as
        a reset and what it saved since would: the other rows' entries stay as they are.
        """
        if len(states) != len(rows):
            raise ValueError(f"{len(states)} memory states for {len(rows)} rows")
        whole: set[int] = set()  # banks already loaded whole in this call
        for state, row in zip(states, rows, strict=True):
            bank = int(self.banks[row])
            saved = np.asarray(state["uid"])
            self._next_uid = max(self._next_uid, int(saved.max(initial=-1)) + 1)
            if bank not in whole and np.isin(np.flatnonzero(self.banks == bank), rows).all():
                self._load_bank(bank, state, row)
                whole.add(bank)
            else:
                self._load_own_entries(bank, state, row)
            self.chunks[row], self.enabled[row] = state["chunks"], state["enabled"]
            self.storing[row] = state.get("storing", True)

    def _load_bank(self, bank: int, state: dict[str, Any], row: int) -> None:
        """Replace bank ``bank`` with the saved one; the saved row's entries become ``row``'s."""
        self.latents[bank] = state["latents"].to(self.latents)
        self.keys[bank] = state["keys"].to(self.keys)
        self.poses[bank], self.uid[bank] = state["poses"], state["uid"]
        self.step[bank] = state["step"]
        self.owner[bank] = np.where(
            state["owner_is_row"], row, np.where(state["has_owner"], self.num_rows, -1)
        )

    def _load_own_entries(self, bank: int, state: dict[str, Any], row: int) -> None:
        """Make ``row``'s entries in ``bank`` the ones its state saved; leave the others.

        A saved entry still in the bank (the same uid, step, pose and latents: uids are only
        unique within one memory, and a state may come from another) is rewritten where it is,
        unless another row of the bank owns it (a state of one row loaded into another: both see it,
        as sharers do). The others go in as new entries, to their saved slot if it is free,
        else to a free one, the newest first; those that find no free slot are left out.
        """
        saved_uid, saved_step = np.asarray(state["uid"]), np.asarray(state["step"])
        saved_poses = np.asarray(state["poses"])
        mine = np.flatnonzero(state["owner_is_row"] & (saved_uid >= 0))
        mine = mine[np.argsort(-saved_uid[mine], kind="stable")]  # the newest first
        held = {}  # saved entry -> its slot in the bank, where the bank still holds it
        for j in mine:
            at = np.flatnonzero(self.uid[bank] == saved_uid[j])
            if len(at) and self._same_entry(bank, int(at[0]), state, j):
                held[j] = int(at[0])
        dropped = self.owner[bank] == row
        dropped[list(held.values())] = False
        self.uid[bank, dropped], self.owner[bank, dropped] = -1, -1
        for j in mine:
            uid = saved_uid[j]
            if j in held:
                slot: int | np.integer = held[j]
                if self.owner[bank, slot] not in (row, -1, self.num_rows):
                    continue  # another row's entry, which this row sees anyway
            else:
                free = np.flatnonzero(self.uid[bank] < 0)
                if len(free) == 0:
                    continue
                slot = j if self.uid[bank, j] < 0 else int(free[0])
                if (self.uid[bank] == uid).any():  # another entry's uid (from another memory)
                    uid, self._next_uid = self._next_uid, self._next_uid + 1
            self.latents[bank, slot] = state["latents"][j].to(self.latents)
            self.keys[bank, slot] = state["keys"][j].to(self.keys)
            self.poses[bank, slot], self.uid[bank, slot] = saved_poses[j], uid
            self.step[bank, slot], self.owner[bank, slot] = saved_step[j], row

    def _same_entry(self, bank: int, slot: int, state: dict[str, Any], j: int | np.integer) -> bool:
        """Whether slot ``slot`` of bank ``bank`` holds saved entry ``j`` (step, pose, latents)."""
        return (
            self.step[bank, slot] == state["step"][j]
            and np.array_equal(self.poses[bank, slot], state["poses"][j])
            and torch.equal(self.latents[bank, slot], state["latents"][j].to(self.latents))
        )

    def locate(self, state: dict[str, Any], row: int, uids: np.ndarray) -> np.ndarray:
        """The uids under which ``row``'s bank holds the saved entries ``uids`` name (-1: none).

        For after :meth:`set_state` of ``state`` into ``row``: a saved uid may since name
        another entry or none (uids are unique within one memory only; an entry loaded where
        its uid is taken gets a new one, and in a shared bank only the row's own entries load).
        """
        bank, saved_uid = int(self.banks[row]), np.asarray(state["uid"])
        found = np.full(len(uids), -1, np.int64)
        for k, uid in enumerate(np.asarray(uids)):
            saved = np.flatnonzero((saved_uid == uid) & (uid >= 0))
            if not len(saved):
                continue
            j = int(saved[0])
            at = np.flatnonzero(self.uid[bank] == uid)
            if len(at) and self._same_entry(bank, int(at[0]), state, j):
                found[k] = uid  # where it was (a state of this memory): not an identical twin
                continue
            maybe = (self.uid[bank] >= 0) & (self.step[bank] == state["step"][j])
            for slot in np.flatnonzero(maybe):  # a step matches few entries: compare those
                if self._same_entry(bank, int(slot), state, j):
                    found[k] = self.uid[bank, slot]
                    break
        return found


def _descriptor(latents: Tensor) -> Tensor:
    """Unit-norm mean latent of each chunk ``(n, F, C, h, w)`` -> ``(n, C * h * w)``."""
    d = latents.float().mean(1).flatten(1)
    return d / d.norm(dim=1, keepdim=True).clamp_min(1e-6)

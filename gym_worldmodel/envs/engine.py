"""The batched engine an environment drives: model, KV cache, generators and rollout for B rows.

The env owns the rollout contract (validation, resets, rewards, bookkeeping); this object owns the
tensors and does the model work. Anything with the methods of :class:`Engine` can stand in for it
(the tests use a counting world to pin autoreset semantics exactly).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from gym_worldmodel.envs.state import all_finite
from gym_worldmodel.memory import GEOMETRIES, KVCache, Recall, SpatialMemory
from gym_worldmodel.models import SamplerConfig, WorldModel, WorldModelConfig, precision
from gym_worldmodel.sampling import ChunkRollout, RowGenerators


class Engine(Protocol):
    """What an env asks of its engine (:class:`WorldEngine` is the one that runs a model).

    ``memory`` and ``recall`` (what the last step retrieved) are read where an engine has them;
    ``model`` is needed only to ``fork`` the env, ``set_memory_enabled`` only to switch memory;
    ``check_state(state)``, where an engine has it, vets a state before ``set_state`` loads any.
    """

    config: WorldModelConfig

    def seed(self, seeds: Sequence[int], *, env_idx: Sequence[int]) -> None:
        """Reseed rows ``env_idx``."""

    def start(
        self,
        env_idx: Sequence[int],
        frames: Tensor,
        poses: np.ndarray | None = None,
        seeds: Sequence[int] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Start rows over from frames; their start latents and frames."""

    def step(
        self,
        actions: np.ndarray,
        decode: slice = ...,
        poses: np.ndarray | None = None,
        remember: Tensor | None = None,
        store: np.ndarray | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Generate one chunk for every row; its latents and the decoded frames."""

    def get_state(self, env_idx: Sequence[int]) -> dict[str, Any]:
        """Copies of the rows' state."""

    def set_state(self, state: dict[str, Any], env_idx: Sequence[int]) -> None:
        """Load rows from :meth:`get_state` output."""


class FullEngine(Engine, Protocol):
    """An :class:`Engine` with the members that forking the env and switching memory read.

    :class:`WorldEngine` is one; an engine without them runs every other env call.
    """

    model: WorldModel
    memory: SpatialMemory | None

    @property
    def weights(self) -> str:
        """The model's ``weights_digest()``, which states carry."""

    def set_memory_enabled(
        self,
        enabled: bool | None,
        env_idx: Sequence[int] | None = None,
        store: bool | None = None,
    ) -> None:
        """Turn memory retrieval (and with ``store``, storing) on or off for rows ``env_idx``."""


class WorldEngine:
    """B rows of one world model stepping together, one batched forward per step.

    Args:
        model: The world model (moved to ``device``).
        num_envs: Rows.
        modality: Action expert the rows use (``"camera"``, ``"robot"``, ``"driving"``).
        device: Where tensors live.
        dtype: ``torch.float32`` or ``torch.bfloat16`` (autocast) for the forwards.
        memory: Keep a spatial memory (:class:`SpatialMemory`) and fill the cache's memory slots
            from it before every step (needs a model with memory slots).
        memory_banks: Bank id per row (rows with one id share a bank); default one per row.
        memory_capacity: Chunks per bank.
        sampler: Sampling settings (default: the model's own, ``model.config.sampler``); the
            model itself is shared, not copied.
        weights: ``model.weights_digest()``, where the caller has it (a fork, its parent
            engine's); otherwise computed at the first ``get_state``, which states carry.
    """

    def __init__(
        self,
        model: WorldModel,
        num_envs: int,
        modality: str,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        memory: bool = False,
        memory_banks: Sequence[int] | None = None,
        memory_capacity: int = 256,
        sampler: SamplerConfig | None = None,
        weights: str | None = None,
    ) -> None:
        self.device, self.dtype = torch.device(device), dtype
        self.model = model.to(self.device).eval()
        if weights is not None:
            self.__dict__["weights"] = weights  # the cached property's value, given
        sampler = model.config.sampler if sampler is None else sampler
        self.config = cfg = dataclasses.replace(model.config, sampler=sampler)  # what rows run
        self._cache = KVCache.for_model(cfg.dit, model.dit.rope, num_envs, self.device, dtype)
        # The last step's cache-write pass, run when the cache or the generators are next used
        # (:meth:`_write_pending`): a planner that loads every row's state after its last step
        # never pays for it. (The step's latents, its padded actions and its anchors.)
        self._pending: tuple[Tensor, Tensor, Tensor | None] | None = None
        self.rollout = ChunkRollout(model.dit, cfg.sampler)
        self._gens = RowGenerators([0] * num_envs, self.device)
        ids = torch.full((num_envs,), cfg.dit.modality_id(modality), dtype=torch.long)
        self.modality = ids.to(self.device)
        self.action_dim = cfg.dit.action_dim
        self.memory: SpatialMemory | None = None
        if memory:
            if cfg.dit.memory_chunks < 1:
                raise ValueError("memory=True needs a model with memory slots (memory_chunks >= 1)")
            self.memory = SpatialMemory(
                num_envs,
                self.rollout.latent_shape,
                GEOMETRIES[modality],
                capacity=memory_capacity,
                k=cfg.dit.memory_chunks,
                exclude_recent=cfg.dit.window_chunks,
                banks=memory_banks,
                device=self.device,
                dtype=dtype,
            )
        # Entry held in each row's memory slots (-1: none), so unchanged slots are not rewritten.
        self.slot_uid = np.full((num_envs, cfg.dit.memory_chunks), -1, np.int64)
        self.last_latents: Tensor | None = None  # each row's last chunk (latent retrieval query)
        self.recall: Recall | None = None  # what the last step retrieved

    @property
    def cache(self) -> KVCache:
        """The rows' KV cache, the last step's chunk written into it."""
        self._write_pending()
        return self._cache

    @property
    def gens(self) -> RowGenerators:
        """The rows' generators, past the draws of the last step's cache write."""
        self._write_pending()
        return self._gens

    def _write_pending(self) -> None:
        """Run the last step's cache-write pass, if it has not run yet.

        The same pass, on the same latents, cache and generators, as if the step had run it:
        nothing of the engine's reads the cache or draws from the generators in between. It runs
        with the model's weights and the autocast of the call that needs it: weights of a shared
        model changed between steps (a world model trained online) write the last step's chunk
        with the new ones, unless a call such as ``get_state`` writes it first.
        """
        if self._pending is not None:
            latents, actions, anchors = self._pending
            self._pending = None
            with torch.no_grad(), precision(self.device, self.dtype):
                self.rollout.commit(
                    self._cache, latents, actions, self.modality, self._gens, anchors
                )

    @functools.cached_property
    def weights(self) -> str:
        """The model's ``weights_digest()``: read once, when a state first needs it."""
        return self.model.weights_digest()

    @property
    def num_envs(self) -> int:
        """Rows."""
        return self._cache.batch_size

    def seed(self, seeds: Sequence[int], *, env_idx: Sequence[int]) -> None:
        """Reseed the generators of rows ``env_idx`` with ``seeds`` (as ``RowGenerators.seed``).

        ``env_idx`` is keyword-only: both are int sequences, and an order swapped would seed
        other rows without a word.
        """
        self._write_pending()  # its draws come from the generators as they were
        self._gens.seed(seeds, env_idx)

    def start(
        self,
        env_idx: Sequence[int],
        frames: Tensor,
        poses: np.ndarray | None = None,
        seeds: Sequence[int] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Start rows ``env_idx`` over from uint8 frames ``(n, F, H, W, 3)``; other rows keep going.

        The frames are encoded and written to the rows' emptied caches as their first chunk;
        with memory, the rows' banks forget them and store the start chunk seen from ``poses``.
        ``seeds`` reseeds the rows' generators first. A start that fails leaves the rows, their
        generators included, as they were.

        Returns:
            The start latents ``(n, F, C, h, w)`` and the frames the episode starts from.
        """
        self._write_pending()  # before the generators are copied: it draws from them
        idx = list(env_idx)
        gens = self._gens.select(idx)  # a copy, kept only if the start succeeds
        if seeds is not None:
            gens.seed(seeds)
        sub = self.cache.select(idx)
        sub.reset()
        with torch.no_grad(), precision(self.device, self.dtype):
            latents = self.model.vae.encode(frames.to(self.device)).float()
            actions = torch.zeros(len(idx), *self.rollout.action_shape, device=self.device)
            self.rollout.commit(sub, latents, actions, self.modality[idx], gens)
        self._gens.set_state(gens.get_state(), idx)
        self.cache.load_state_dict(sub.state_dict(), env_idx=idx)
        self.slot_uid[idx] = -1
        if self.recall is not None:  # nothing retrieved yet in the new episodes
            self.recall.uid[idx], self.recall.score[idx] = -1, 0.0
        if self.memory is not None:
            self._remember(latents, idx)
            self.memory.reset(idx)
            self.memory.add(latents, poses, idx)
        return latents, frames

    def _remember(self, latents: Tensor, rows: list[int] | slice) -> None:
        """Keep the rows' last chunk: the query of latent-similarity retrieval."""
        if self.last_latents is None:
            self.last_latents = torch.zeros(self.num_envs, *latents.shape[1:], device=self.device)
        self.last_latents[rows] = latents.to(self.last_latents)  # a state's may be on the host

    def step(
        self,
        actions: np.ndarray,
        decode: slice = slice(None),
        poses: np.ndarray | None = None,
        remember: Tensor | None = None,
        store: np.ndarray | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Generate one chunk for every row.

        Args:
            actions: ``(B, F, w)`` float32 action vectors of the rows' modality (``w <= A``).
            decode: Which of the chunk's frames to decode (default all; ``slice(-1, None)``
                decodes only the last, for callers that read nothing else).
            poses: ``(B, 4)`` poses the rows look from after these actions (memory retrieval;
                needed with memory in worlds with a pose).
            remember: Latents ``(B, F, C, h, w)`` to store in memory for this step instead of
                the generated chunk: the encoded recorded frames give an oracle memory, which
                separates how well the model uses memory from how good its memories are.
            store: ``(B,)`` bool, the rows whose chunk goes into their bank (default all; the
                others still count it, as a read-only row does): the env leaves out rows that
                start over next, so that in a shared bank the chunk their reset would drop
                evicts no other row's entry first.

        Returns:
            Latents ``(B, F, C, h, w)`` and uint8 frames ``(B, F', H, W, 3)`` on the device.
        """
        if remember is not None:  # checked before any state moves
            expected = (self.num_envs, *self.rollout.latent_shape)
            if tuple(remember.shape) != expected:
                raise ValueError(f"remember must be {expected}, got {tuple(remember.shape)}")
        if store is not None:
            store = np.asarray(store)
            if store.shape != (self.num_envs,) or store.dtype != bool:
                raise ValueError(f"store must be a ({self.num_envs},) bool mask, got {store!r}")
        padded = torch.zeros(self.num_envs, actions.shape[1], self.action_dim, device=self.device)
        padded[..., : actions.shape[2]] = torch.from_numpy(actions).to(self.device)
        self._write_pending()  # the step before's chunk
        with torch.no_grad(), precision(self.device, self.dtype):
            if self.memory is not None:
                self._recall(poses)
            latents, anchors = self.rollout.sample(self._cache, padded, self.modality, self._gens)
            # written when next needed, from a copy: a caller may change the returned latents
            self._pending = (latents.clone(), padded, anchors)
            finite = torch.isfinite(latents).flatten(1).all(1)  # read after the decode is queued
            frames = self.model.vae.decode(latents[:, decode])
        _check_finite(finite)
        if self.memory is not None:
            stored = latents if remember is None else remember.to(latents)
            self._remember(stored, slice(None))  # every row (a list would upload an index)
            self.memory.add(stored, poses, store=store)  # every row
        return latents, frames

    def _recall(self, poses: np.ndarray | None) -> None:
        """Retrieve each row's memory and write changed entries into the cache's memory slots."""
        memory = self.memory
        assert memory is not None  # called only with memory
        self.recall = recall = memory.retrieve(poses, self.last_latents, self.slot_uid)
        valid = np.zeros(self.slot_uid.shape, bool)
        for j in range(self.slot_uid.shape[1]):
            latents, valid[:, j] = memory.gather(recall, j)
            changed = np.flatnonzero(valid[:, j] & (recall.uid[:, j] != self.slot_uid[:, j]))
            if len(changed):
                rows = torch.from_numpy(changed).to(self.device)
                self.model.dit.encode_memory(
                    latents[rows],
                    self.config.sampler.memory_level,
                    self.modality[rows],
                    self.cache,
                    j,
                    rows,
                )
            self.slot_uid[:, j] = np.where(valid[:, j], recall.uid[:, j], -1)
        self.cache.set_memory(torch.from_numpy(valid))

    def set_memory_enabled(
        self,
        enabled: bool | None,
        env_idx: Sequence[int] | None = None,
        store: bool | None = None,
    ) -> None:
        """Turn memory retrieval (and with ``store``, storing) on or off for rows ``env_idx``."""
        if self.memory is None:
            if enabled or store:
                raise ValueError(
                    "this env was made without memory: make it with memory=True to turn it on"
                )
            return
        self.memory.set_enabled(enabled, env_idx, store)

    def get_state(self, env_idx: Sequence[int]) -> dict[str, Any]:
        """Copies of the rows' cache, generator and memory states (repeats allowed: fork)."""
        self._write_pending()
        idx = list(env_idx)
        return {
            "cache": self.cache.state_dict(idx),
            "generators": [self._gens.generators[int(i)].get_state() for i in idx],
            "last_latents": None if self.last_latents is None else self.last_latents[idx].clone(),
            "slot_uid": self.slot_uid[idx].copy(),
            "memory": None if self.memory is None else self.memory.get_state(idx),
            "weights": self.weights,
        }

    def check_state(self, state: dict[str, Any]) -> None:
        """Raise ``ValueError`` naming what of a state cannot be restored; nothing changes.

        For a state whose keys, shapes and dtypes are already those of :meth:`get_state`'s: the
        generator bytes (known only by restoring them, here on throwaway generators), the
        cache's chunk counts and the memory's entries (their floats finite).
        """
        for i, gen_state in enumerate(state["generators"]):
            try:
                torch.Generator(self.device).set_state(gen_state)
            except (RuntimeError, TypeError, ValueError) as err:
                raise ValueError(
                    f"state['engine']['generators'][{i}] is no {self.device.type} generator state "
                    f"(what torch.Generator.get_state() returns): {err}"
                ) from None
        if (state["cache"]["chunks"] < 0).any():
            raise ValueError("state['engine']['cache']['chunks'] counts chunks written: >= 0")
        wrong = self._cache.miscounted_rows(state["cache"])  # (its layout: no pending write)
        if wrong:
            raise ValueError(
                f"state['engine']['cache'] rows {wrong[:8]}: their 'chunks' counts disagree with "
                "the slots their 'valid' mask marks written (edited, or from another cache)"
            )
        if self.memory is not None and state.get("memory") is not None:
            self.memory.check_states(state["memory"])
            for i, row in enumerate(state["memory"]):  # the entries stored (most slots are empty)
                stored = np.asarray(row["uid"]) >= 0
                for name in ("latents", "keys", "poses"):
                    values = row[name]
                    mask = torch.from_numpy(stored) if isinstance(values, Tensor) else stored
                    if not all_finite(values[mask]):
                        raise ValueError(
                            f"state['engine']['memory'][{i}][{name!r}] holds NaN or inf in a "
                            "stored entry"
                        )

    def set_state(self, state: dict[str, Any], env_idx: Sequence[int]) -> None:
        """Restore rows ``env_idx`` from :meth:`get_state` output of as many rows.

        A state of every row replaces the last step's chunk before it was written to the cache
        (a planner's futures reloaded after their last step): that write is skipped. The state
        is one :meth:`check_state` passed (the env checks it first): generator states it would
        refuse fail part way through the load.
        """
        idx = list(env_idx)
        every_row = sorted(idx) == list(range(self.num_envs))
        if not every_row:
            self._write_pending()  # the other rows keep theirs
        self._cache.load_state_dict(state["cache"], env_idx=idx)  # (refused: nothing changed)
        if every_row:  # every row's cache is replaced, and their generators next
            self._pending = None
        self._gens.set_state(state["generators"], idx)
        slot_uid: np.ndarray | list[np.ndarray] = np.broadcast_to(
            state.get("slot_uid", -1), (len(idx), self.slot_uid.shape[1])
        )
        if self.memory is not None and state.get("memory") is not None:
            self._remember(state["last_latents"], idx)
            self.memory.set_state(state["memory"], idx)
            # A memory slot's K/V stay valid while its uid names the entry they were made from:
            # a state of another memory may have given that entry a new uid, or its old uid to
            # another entry. (Other rows sharing the bank keep their slots: within one memory a
            # uid always names the same latents, and one the reload removed is not retrieved.)
            slot_uid = [
                self.memory.locate(row_state, row, uids)
                for row_state, row, uids in zip(state["memory"], idx, slot_uid, strict=True)
            ]
        self.slot_uid[idx] = slot_uid


def _check_finite(finite: Tensor) -> None:
    """Raise ``FloatingPointError`` naming the rows whose generated chunk holds NaN or inf.

    ``finite``: ``(B,)`` bool per row. A finite model on a finite context generates finite
    chunks: these rows' KV cache or memory holds non-finite values (put there by other means
    than ``set_state``, which refuses such a state) or the weights overflow in the dtype.
    Raised before the chunk is remembered or returned; but the step's forward has run on every
    row, so every row's cache and generators have moved on a chunk while the env's frames,
    poses and step counts have not: reset all rows, or load a state saved before the step. On a
    GPU this is a host sync, read after the decode is queued.
    """
    if not bool(finite.all()):
        rows = torch.nonzero(~finite).flatten().tolist()
        raise FloatingPointError(
            f"the model generated NaN or inf for rows {rows}: their KV cache or memory holds "
            "non-finite values (a state edited by hand?), or the weights overflow in this dtype. "
            "The step ran on every row's cache: reset all rows, or load a state saved before it"
        )

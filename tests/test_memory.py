"""Contracts of the spatial memory: retrieval by view, bounded banks, reframed positions, row
independence of reset/fork/state, shared banks, and memory through the env."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import kept_anchors

from gym_worldmodel.envs.engine import WorldEngine
from gym_worldmodel.envs.vector_env import WorldModelVectorEnv
from gym_worldmodel.memory import GEOMETRIES, KVCache, SpatialMemory, ViewGeometry
from gym_worldmodel.models import WorldModel
from gym_worldmodel.sampling import ChunkRollout, RowGenerators

SHAPE = (2, 4, 16, 16)
CAMERA = GEOMETRIES["camera"]


def pose(x=0.0, y=0.0, yaw=0.0, pitch=0.0):
    return np.array([[x, y, yaw, pitch]])


def chunk(value: float, n: int = 1) -> torch.Tensor:
    return torch.full((n, *SHAPE), float(value))


def filled(memory: SpatialMemory, poses: list[np.ndarray], row: int = 0) -> None:
    for i, p in enumerate(poses):
        memory.add(chunk(i), p, [row])


# --- view overlap and retrieval ----------------------------------------------------------------


def test_overlap_is_high_facing_the_same_way_and_zero_facing_away():
    stored = np.array([[[0.0, 0.0, 0.0, 0.0]]])
    same = CAMERA.overlap(pose(0.5, 0.0, 5.0), stored)[0, 0]
    away = CAMERA.overlap(pose(0.0, 0.0, 180.0), stored)[0, 0]
    looking_up = CAMERA.overlap(pose(0.0, 0.0, 0.0, 45.0), stored)[0, 0]
    assert same > 0.7 and away == 0.0 and 0.0 < looking_up < same


def test_topdown_overlap_follows_distance():
    top = GEOMETRIES["driving"]
    stored = np.array([[[0.0, 0.0, 0.0, 10.0]]])
    near, far = (top.overlap(pose(x), stored)[0, 0] for x in (4.0, 40.0))
    assert near > 0.8 and far == 0.0


@pytest.mark.parametrize(
    ("kind", "span", "most_in_reach"),
    [
        ("camera", 20.0, False),
        ("camera", 4.0, True),
        ("driving", 60.0, False),
        ("driving", 8.0, True),
    ],
)
def test_overlap_scores_only_views_in_reach_and_equals_scoring_every_pair(
    kind, span, most_in_reach
):
    """Pairs too far apart to share a point are skipped, not scored (or, where most pairs are
    in reach, all are scored and the rest masked): the same figures, to the bit, as scoring
    every pair (cameras ``span`` m apart at most on each axis), and ``where`` zeroes the pairs
    it leaves out."""
    geometry, rng = GEOMETRIES[kind], np.random.default_rng(0)
    query = np.concatenate((rng.uniform(-20, 20, (16, 2)), rng.uniform(-180, 180, (16, 2))), 1)
    stored = query[:, None] + np.concatenate(
        (rng.uniform(-span, span, (16, 64, 2)), rng.uniform(-90, 90, (16, 64, 2))), -1
    )
    every = geometry._overlap(query, stored)
    np.testing.assert_array_equal(geometry.overlap(query, stored), every)
    reach = geometry._within_reach(query, stored)
    assert (reach.mean() > 0.5) == most_in_reach and reach.mean() > 0.1
    assert (every[~reach] == 0).all() and (every[reach] > 0).any()
    where = rng.random((16, 64)) < 0.5
    np.testing.assert_array_equal(geometry.overlap(query, stored, where), np.where(where, every, 0))


def test_a_pose_facing_a_stored_view_retrieves_it_and_one_facing_away_does_not():
    memory = SpatialMemory(1, SHAPE, CAMERA, capacity=16, exclude_recent=2)
    # Chunk 1 looks east from the origin; then the row walks north, looking north.
    filled(memory, [pose(), pose(yaw=0.0), *(pose(0, 3.0 + i, 90.0) for i in range(4))])
    found = memory.retrieve(pose(0.2, 0.0, 0.0))
    assert found.hits.tolist() == [1] and memory.step[0, found.slot[0, 0]] == 1
    latents, valid = memory.gather(found, 0)
    assert valid.tolist() == [True] and torch.equal(latents, chunk(1))
    assert memory.retrieve(pose(0.0, 0.0, 180.0)).hits.tolist() == [0]  # facing west: nothing


def test_own_sink_and_ring_window_are_never_retrieved():
    memory = SpatialMemory(1, SHAPE, CAMERA, capacity=8, exclude_recent=2)
    filled(memory, [pose()] * 3)  # the sink and two chunks still in the window
    assert memory.retrieve(pose()).hits.tolist() == [0]
    memory.add(chunk(9), pose(), [0])  # chunk 1 leaves the window
    found = memory.retrieve(pose())
    assert memory.step[0, found.slot[0, 0]] == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_rows": 0}, "num_rows must be an int >= 1, got 0"),
        ({"capacity": "8"}, "capacity must be an int >= 1, got '8'"),
        ({"capacity": 1.5}, "capacity must be an int >= 1"),
        ({"k": True}, "k must be an int >= 1"),
    ],
)
def test_memory_sizes_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpatialMemory(**{"num_rows": 1, "chunk_shape": SHAPE, "geometry": CAMERA, **kwargs})


def test_retrieval_can_be_switched_off_per_row():
    memory = SpatialMemory(2, SHAPE, CAMERA, capacity=8)
    for _ in range(4):
        memory.add(chunk(0, 2), np.zeros((2, 4)))
    memory.set_enabled(False, [1])
    assert memory.retrieve(np.zeros((2, 4))).hits.tolist() == [1, 0]


def test_latent_geometry_retrieves_the_most_similar_chunk():
    memory = SpatialMemory(1, SHAPE, GEOMETRIES["robot"], capacity=8, min_score=0.5)
    gen = torch.Generator().manual_seed(0)
    stored = [torch.randn(1, *SHAPE, generator=gen) for _ in range(5)]
    for latents in stored:
        memory.add(latents)
    query = stored[2] + 0.1 * torch.randn(1, *SHAPE, generator=gen)
    found = memory.retrieve(query=query)
    assert memory.step[0, found.slot[0, 0]] == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_latent_scores_of_a_row_do_not_depend_on_the_other_rows(dtype):
    """A row's similarity scores (``info["memory_score"]``, and the ranking) are the same alone
    and among other rows: a batched matmul gave them other last digits for other batch sizes
    (in float32, with latents of an odd width as here)."""
    gen, shape = torch.Generator().manual_seed(0), (1, 3, 5, 7)
    for rows in (2, 3, 5, 8, 16):
        alone, many = (SpatialMemory(n, shape, GEOMETRIES["robot"], capacity=16) for n in (1, rows))
        for _ in range(16):
            latents = torch.randn(rows, *shape, generator=gen)
            alone.add(latents[:1])
            many.add(latents)
        query = torch.randn(rows, *shape, generator=gen)
        with torch.autocast("cpu", dtype, enabled=dtype != torch.float32):
            one, together = alone.retrieve(query=query[:1]), many.retrieve(query=query)
        assert np.array_equal(one.score[0], together.score[0]), rows
        assert np.array_equal(one.slot[0], together.slot[0]), rows


def test_bank_is_bounded_and_a_repeated_view_replaces_its_entry():
    memory = SpatialMemory(1, SHAPE, CAMERA, capacity=4, replace_overlap=0.9)
    filled(memory, [pose(10.0 * i) for i in range(4)])  # four distinct places: full
    memory.add(chunk(7), pose(20.0), [0])  # the third place again: replaces it
    assert (memory.uid[0] >= 0).sum() == 4
    assert sorted(memory.poses[0, :, 0].tolist()) == [0.0, 10.0, 20.0, 30.0]
    memory.add(chunk(8), pose(99.0), [0])  # a new place: the oldest entry goes
    assert sorted(memory.poses[0, :, 0].tolist()) == [10.0, 20.0, 30.0, 99.0]


@pytest.mark.parametrize("kind", ["camera", "driving", "robot"])
def test_rows_stored_together_fill_their_banks_as_rows_stored_one_at_a_time(kind):
    """``add`` picks every row's slot in one pass (rows in banks of their own): the same entries.

    Full banks of 3, random places near each other, so both the view-repeat replacement and
    the oldest-entry eviction happen; a read-only row and a row outside ``rows`` store nothing.
    """
    rng = np.random.default_rng(0)
    together, alone = (SpatialMemory(4, SHAPE, GEOMETRIES[kind], capacity=3) for _ in range(2))
    for m in (together, alone):
        m.set_enabled(None, [2], store=False)
    for _ in range(12):
        poses = np.zeros((3, 4))
        poses[:, :2] = rng.integers(0, 3, (3, 2))
        poses[:, 2] = rng.choice([0.0, 90.0], 3)
        latents = torch.from_numpy(rng.normal(size=(3, *SHAPE)).astype(np.float32))
        together.add(latents, poses, [0, 1, 2])
        for i in range(3):
            alone.add(latents[i : i + 1], poses[i : i + 1], [i])
    for name in ("uid", "owner", "step", "poses", "chunks"):
        assert np.array_equal(getattr(together, name), getattr(alone, name)), name
    assert torch.equal(together.latents, alone.latents) and torch.equal(together.keys, alone.keys)
    assert (together.uid[2:] < 0).all() and together.chunks.tolist() == [12, 12, 12, 0]


def test_rows_added_twice_in_one_call_and_a_field_of_view_past_180_are_refused():
    with pytest.raises(ValueError, match="distinct"):
        SpatialMemory(1, SHAPE, CAMERA).add(chunk(0, 2), np.zeros((2, 4)), [0, 0])
    with pytest.raises(ValueError, match=r"fov_deg must be in \(0, 180\]"):
        ViewGeometry("frustum", fov_deg=200.0)


def test_bad_poses_and_latents_raise_clear_errors():
    memory = SpatialMemory(2, SHAPE, CAMERA)
    with pytest.raises(ValueError, match=r"poses must be a finite \(2, 4\) array"):
        memory.add(chunk(0, 2), np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="latents must be"):
        memory.add(chunk(0, 3), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="needs poses"):
        memory.retrieve(None)
    with pytest.raises(ValueError, match="kind must be"):
        ViewGeometry("sphere")


def test_a_held_chunk_is_kept_until_another_overlaps_clearly_better():
    """Stickiness: the memory slot is not re-encoded for every small change of the best view."""
    memory = SpatialMemory(1, SHAPE, CAMERA, capacity=16, exclude_recent=0, stickiness=0.15)
    filled(memory, [pose(), pose(yaw=0.0), pose(yaw=10.0)])  # step 0 is the sink: never retrieved
    by_step = {i: memory.uid[0, memory.step[0] == i][0] for i in (1, 2)}
    looking = pose(yaw=8.0)  # the chunk at 10 degrees overlaps a little better
    best = memory.retrieve(looking)
    assert best.uid[0, 0] == by_step[2]
    held = memory.retrieve(looking, held=np.array([[by_step[1]]]))
    assert held.uid[0, 0] == by_step[1]  # within the margin: kept
    assert 0 < held.score[0, 0] < best.score[0, 0]  # the real score is reported
    turned = memory.retrieve(pose(yaw=50.0), held=np.array([[by_step[1]]]))
    assert turned.uid[0, 0] == by_step[2]  # clearly better elsewhere: switched
    away = memory.retrieve(pose(yaw=180.0), held=np.array([[by_step[1]]]))
    assert away.hits.tolist() == [0]  # a held chunk out of view is no hit


def test_a_held_chunk_under_the_threshold_gives_way_to_a_fresh_hit():
    """Stickiness ranks, it does not rescue: a held chunk that no longer counts as a hit does
    not push out a fresh one that does."""
    memory = SpatialMemory(1, SHAPE, CAMERA, capacity=16, exclude_recent=0, stickiness=0.15)
    filled(memory, [pose(), pose(yaw=50.0), pose(yaw=-45.0)])
    held_uid, fresh_uid = (memory.uid[0, memory.step[0] == i][0] for i in (1, 2))
    score = memory.retrieve(pose()).score  # fresh only: 0.25 against the held one's 0.125
    overlaps = CAMERA.overlap(pose(), memory.poses[:1, 1:3])[0]
    assert overlaps[0] < memory.min_score <= overlaps[1] < overlaps[0] + memory.stickiness
    found = memory.retrieve(pose(), held=np.array([[held_uid]]))
    assert found.uid[0, 0] == fresh_uid and found.score[0, 0] == score[0, 0] == overlaps[1]


def test_a_row_that_stops_storing_still_moves_its_window_on():
    """Chunks seen while storing is off still age the row's stored entries out of its window."""
    memory = SpatialMemory(1, SHAPE, CAMERA, capacity=16, exclude_recent=2)
    filled(memory, [pose(), pose()])  # the sink and one chunk, still in the window
    assert memory.retrieve(pose()).hits.tolist() == [0]
    memory.set_enabled(None, store=False)
    for _ in range(2):
        memory.add(chunk(9), pose())
    assert (memory.uid[0] >= 0).sum() == 2  # nothing new stored
    assert memory.retrieve(pose()).hits.tolist() == [1]  # but the stored chunk is out of it


# --- shared banks, reset, state ----------------------------------------------------------------


def test_rows_sharing_a_bank_find_what_the_other_saw():
    memory = SpatialMemory(2, SHAPE, CAMERA, capacity=16, banks=[0, 0])
    memory.add(chunk(5), pose(), [0])  # row 0 looks east from the origin
    memory.add(chunk(6), pose(yaw=180.0), [1])  # row 1 looks west
    found = memory.retrieve(np.array([[0, 0, 180.0, 0], [0, 0, 0.0, 0]]))
    latents, valid = memory.gather(found, 0)
    assert valid.all()  # another row's sink is not in this row's context: it is retrievable
    assert torch.equal(latents[0], chunk(6)[0]) and torch.equal(latents[1], chunk(5)[0])


def test_reset_forgets_only_that_rows_entries():
    shared = SpatialMemory(2, SHAPE, CAMERA, capacity=16, banks=[0, 0])
    shared.add(chunk(0, 2), np.zeros((2, 4)))
    shared.reset([1])
    assert (shared.owner[0] == 0).sum() == 1 and (shared.owner[0] == 1).sum() == 0
    own = SpatialMemory(2, SHAPE, CAMERA, capacity=16)
    own.add(chunk(0, 2), np.zeros((2, 4)))
    own.reset([0])
    assert (own.uid[0] >= 0).sum() == 0 and (own.uid[1] >= 0).sum() == 1


def test_a_bank_whose_rows_all_reset_is_emptied_and_handed_over_views_outlive_a_rows_reset():
    shared = SpatialMemory(2, SHAPE, CAMERA, capacity=16, banks=[0, 0])
    shared.add(chunk(0, 2), np.array([[0, 0, 0, 0], [0, 0, 180.0, 0]]))  # 0 east, 1 west
    # a fork of row 0 into a bank of its own holds row 1's view as no row's: a new episode of
    # the fork's row must not find it
    fork = SpatialMemory(1, SHAPE, CAMERA, capacity=16)
    fork.set_state(shared.get_state([0]), [0])
    assert fork.retrieve(pose(yaw=180.0)).hits.tolist() == [1]
    fork.reset([0])
    assert (fork.uid[0] >= 0).sum() == 0 and fork.retrieve(pose(yaw=180.0)).hits.tolist() == [0]
    # row 0 hands its view over, then starts over: row 1 still finds it (and row 0 too, as
    # no row's own now); both reset: gone
    shared.hand_over([0])
    shared.reset([0])
    assert shared.chunks.tolist() == [0, 1] and (shared.owner[0] == 0).sum() == 0
    assert shared.retrieve(np.array([[0, 0, 0, 0], [0, 0, 0.0, 0]])).hits.tolist() == [1, 1]
    shared.reset()
    assert (shared.uid[0] >= 0).sum() == 0


def test_state_round_trip_forks_a_row_into_independent_copies():
    memory = SpatialMemory(2, SHAPE, CAMERA, capacity=16)
    for i in range(4):
        memory.add(chunk(i, 2), np.array([[0, 0, 0, 0], [5, 5, 90, 0]]))
    forks = SpatialMemory(3, SHAPE, CAMERA, capacity=16)
    forks.set_state(memory.get_state([1, 1, 1]), [0, 1, 2])
    assert np.array_equal(forks.retrieve(np.tile([5, 5, 90, 0], (3, 1))).hits, [1, 1, 1])
    forks.add(chunk(9, 1), pose(5, 5, 90), [0])  # one fork moves on ...
    assert forks.chunks.tolist() == [5, 4, 4]  # ... the others and the source do not
    assert memory.chunks.tolist() == [4, 4]


def test_state_round_trip_of_a_shared_bank_keeps_each_rows_entries():
    shared = SpatialMemory(2, SHAPE, CAMERA, capacity=16, banks=[0, 0])
    for i in range(3):
        shared.add(chunk(i, 2), np.array([[0, 0, 0, 0], [5, 5, 90, 0]]))
    owners = shared.owner.copy()
    shared.set_state(shared.get_state([0, 1]), [0, 1])
    assert np.array_equal(shared.owner, owners)
    shared.reset([0])  # still forgets row 0's entries only
    assert set(shared.owner[0][shared.uid[0] >= 0].tolist()) == {1}


def bank_entries(memory: SpatialMemory, bank: int = 0) -> dict[int, tuple]:
    """uid -> (slot, owner, step, latents) of every stored entry of ``bank``."""
    return {
        int(memory.uid[bank, i]): (
            i,
            int(memory.owner[bank, i]),
            int(memory.step[bank, i]),
            memory.latents[bank, i].clone(),
        )
        for i in np.flatnonzero(memory.uid[bank] >= 0)
    }


def same_entries(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[u][:3] == b[u][:3] and torch.equal(a[u][3], b[u][3]) for u in a
    )


def test_restoring_one_row_of_a_shared_bank_leaves_the_other_rows_entries():
    shared = SpatialMemory(3, SHAPE, CAMERA, capacity=32, banks=[0, 0, 0])
    look = np.array([[0, 0, 0, 0], [5, 5, 90, 0], [9, 0, 180, 0]])
    for i in range(3):
        shared.add(chunk(i, 3), look)
    saved, before = shared.get_state([0]), bank_entries(shared)
    shared.set_state(saved, [0])  # row 0's own state, now: nothing changes
    assert same_entries(bank_entries(shared), before)
    for i in range(3, 6):
        shared.add(chunk(i, 3), look)
    later = bank_entries(shared)
    shared.set_state(saved, [0])  # row 0 goes back three chunks
    now = bank_entries(shared)
    others = {u: e for u, e in later.items() if e[1] != 0}
    assert same_entries({u: now[u] for u in others}, others)  # rows 1 and 2: as they were
    mine = {u: e for u, e in before.items() if e[1] == 0}
    assert same_entries({u: e for u, e in now.items() if e[1] == 0}, mine)
    assert shared.chunks.tolist() == [3, 6, 6]
    shared.reset([2])  # a reset still forgets that row's entries alone
    assert sorted({e[1] for e in bank_entries(shared).values()}) == [0, 1]


def test_a_row_restored_from_another_memory_keeps_its_entries_whatever_their_uids():
    """uids are only unique within one memory: here both hold uids 0 and 1, for other chunks."""
    here = SpatialMemory(2, SHAPE, CAMERA, capacity=8, banks=[0, 0])
    there = SpatialMemory(2, SHAPE, CAMERA, capacity=8, banks=[0, 0])
    here.add(chunk(10, 1), pose(), [0])
    here.add(chunk(11, 1), pose(), [1])
    there.add(chunk(20, 1), pose(), [1])
    there.add(chunk(21, 1), pose(), [0])
    here.set_state(there.get_state([0]), [0])
    entries = bank_entries(here)
    (mine,) = [e for e in entries.values() if e[1] == 0]
    assert torch.equal(mine[3], chunk(21, 1)[0])  # row 0's own chunk from there
    (theirs,) = [e for e in entries.values() if e[1] == 1]
    assert torch.equal(theirs[3], chunk(11, 1)[0])  # row 1's, untouched
    assert len(set(entries)) == 2  # one uid each
    # where the saved chunks are now: row 0's own (uid 1 there) under its new uid here; row 1's
    # there (uid 0, not loaded: here it names row 1's chunk 11) nowhere; an unknown uid nowhere
    saved = there.get_state([0])[0]
    (new_uid,) = [uid for uid, e in entries.items() if e[1] == 0]
    assert saved["uid"][saved["owner_is_row"]].tolist() == [1] and new_uid != 1
    assert here.locate(saved, 0, np.array([1, 0, 7, -1])).tolist() == [new_uid, -1, -1, -1]


def test_a_row_restored_into_a_full_shared_bank_keeps_its_newest_entries():
    shared = SpatialMemory(2, SHAPE, CAMERA, capacity=4, banks=[0, 0])
    shared.add(chunk(0, 1), pose(), [0])
    shared.add(chunk(1, 1), pose(yaw=90.0), [0])
    saved = shared.get_state([0])
    shared.reset([0])
    for i in range(4):  # row 1 fills the bank
        shared.add(chunk(2 + i, 1), pose(yaw=30.0 * i), [1])
    shared.reset([1])
    shared.add(chunk(7, 1), pose(), [1])
    shared.add(chunk(8, 1), pose(yaw=60.0), [1])
    shared.add(chunk(9, 1), pose(yaw=120.0), [1])  # one free slot left
    shared.set_state(saved, [0])
    kept = {u: e for u, e in bank_entries(shared).items() if e[1] == 0}
    assert list(kept) == [1]  # row 0's newer entry; the older did not fit
    assert sum(e[1] == 1 for e in bank_entries(shared).values()) == 3


# --- the model side: reframed positions --------------------------------------------------------


def test_reframed_memory_positions_stay_bounded_in_an_endless_episode(tiny_model):
    """A chunk retrieved at step 1 still sits at its slot's fixed position at step 40: the
    cached output equals a short sequence (sink, memory, receptive field) whose positions are
    all small, so the memory never drifts out of the trained position range."""
    dit, cfg = tiny_model.dit, tiny_model.dit.config
    cache = KVCache.for_model(cfg, dit.rope, 1)
    rollout = ChunkRollout(dit, tiny_model.config.sampler)
    modality, gens = torch.zeros(1, dtype=torch.long), RowGenerators([0])
    gen = torch.Generator().manual_seed(0)
    actions = torch.randn(41, 1, *rollout.action_shape, generator=gen)
    with torch.no_grad():
        memory = torch.randn(1, *rollout.latent_shape, generator=gen)
        chunks = [rollout.generate(cache, actions[0], modality, gens)]
        dit.encode_memory(memory, 0.0, modality, cache, 0, torch.zeros(1, dtype=torch.long))
        cache.set_memory(torch.ones(1, 1, dtype=torch.bool))
        chunks += [rollout.generate(cache, a, modality, gens) for a in actions[1:-1]]
        probe = torch.randn(1, *rollout.latent_shape, generator=gen)
        level = torch.full((1,), 0.6)
        cached = dit(probe, level, actions[-1], modality, cache)
        keep = [0, *range(40 - cfg.depth * cfg.window_chunks, 40)]
        t = torch.zeros(1, len(keep) + 1)
        t[:, -1] = 0.6
        short = dit.forward_sequence(
            torch.cat([chunks[i] for i in keep] + [probe], 1),
            t,
            torch.cat([actions[i] for i in keep] + [actions[-1]], 1),
            modality,
            memory=memory,
            anchors=kept_anchors(chunks, keep),
        )
    assert (short[:, -cfg.chunk_frames :] - cached).abs().max() <= 1e-4


# --- engine and env ----------------------------------------------------------------------------


def test_engine_rows_with_memory_off_match_an_engine_without_memory(tiny_model):
    """Memory only changes what a row attends to: switched off, a row is bitwise the plain row,
    while the row with memory on diverges once it retrieves something."""
    cfg = tiny_model.config
    size = cfg.vae.image_size
    frames = torch.zeros(2, cfg.dit.chunk_frames, size, size, 3, dtype=torch.uint8)
    engines = [
        WorldEngine(tiny_model, 2, "camera", memory=True),
        WorldEngine(tiny_model, 2, "camera", memory=False),
    ]
    engines[0].set_memory_enabled(False, [1])
    gen = np.random.default_rng(0)
    actions = gen.normal(size=(8, 2, cfg.dit.chunk_frames, 12)).astype(np.float32)
    out = []
    for engine in engines:
        engine.seed([3, 4], env_idx=[0, 1])
        engine.start([0, 1], frames, poses=np.zeros((2, 4)))
        out.append(torch.stack([engine.step(a, poses=np.zeros((2, 4)))[0] for a in actions]))
    assert engines[0].recall.hits.tolist() == [1, 0]
    assert torch.equal(out[0][:, 1], out[1][:, 1])
    assert not torch.equal(out[0][-1, 0], out[1][-1, 0])


def test_memory_guidance_extrapolates_from_the_memoryless_velocity_in_rows_holding_memory(
    tiny_model,
):
    """At one denoiser pass a chunk is noise - v, so guidance s gives out(s) = out(0) + s (out(1)
    - out(0)) in the step memory is first held, out(0) the chunk drawn with the memory slots
    masked; a row holding no memory is the same bits whatever the scale, at every step."""
    cfg = tiny_model.config
    size = cfg.vae.image_size
    frames = torch.zeros(2, cfg.dit.chunk_frames, size, size, 3, dtype=torch.uint8)
    actions = np.random.default_rng(0).normal(size=(8, 2, cfg.dit.chunk_frames, 12))
    out, first_hit = {}, set()
    for scale in (0.0, 1.0, 2.5):
        model = tiny_model.with_sampler(nfe=1, memory_guidance=scale).eval()
        engine = WorldEngine(model, 2, "camera", memory=True)
        engine.set_memory_enabled(False, [1])
        engine.seed([3, 4], env_idx=[0, 1])
        engine.start([0, 1], frames, poses=np.zeros((2, 4)))
        steps, hits = [], []
        for a in actions:
            steps.append(engine.step(a.astype(np.float32), poses=np.zeros((2, 4)))[0])
            assert engine.recall is not None
            hits.append(int(engine.recall.hits[0]))
        first_hit.add(hits.index(1))  # the first step drawn with memory held in row 0
        out[scale] = torch.stack(steps)
    (k,) = set(first_hit)  # the same step in each run: nothing differs before it
    for scale in (1.0, 2.5):
        assert torch.equal(out[scale][:k], out[0.0][:k])
        assert torch.equal(out[scale][:, 1], out[0.0][:, 1])  # the row holding none
    plain, masked = out[1.0][k, 0], out[0.0][k, 0]
    assert not torch.allclose(plain, masked)
    torch.testing.assert_close(out[2.5][k, 0], masked + 2.5 * (plain - masked))


def test_hidden_memory_reads_as_a_cache_holding_none_and_restores_what_it_held(tiny_model):
    cfg = tiny_model.config.dit
    cache = KVCache.for_model(cfg, tiny_model.dit.rope, batch_size=2)
    rollout = ChunkRollout(tiny_model.dit, tiny_model.config.sampler)
    gens = RowGenerators([0, 1])
    actions = torch.zeros(2, *rollout.action_shape)
    modality = torch.zeros(2, dtype=torch.long)
    for _ in range(2):
        rollout.generate(cache, actions, modality, gens)
    memory = torch.randn(2, *rollout.latent_shape)
    tiny_model.dit.encode_memory(memory, 0.0, modality, cache, 0, torch.arange(2))
    x, t = torch.randn(2, *rollout.latent_shape), torch.full((2,), 0.5)

    def velocity() -> torch.Tensor:
        return tiny_model.dit(x, t, actions, modality, cache)

    cache.set_memory(torch.tensor([[True], [False]]))
    assert cache.holds_memory
    held, valid = velocity(), cache.valid.clone()
    with cache.hidden_memory():
        hidden = velocity()
    assert torch.equal(cache.valid, valid) and torch.equal(velocity(), held)
    cache.set_memory(torch.zeros(2, 1, dtype=torch.bool))
    assert not cache.holds_memory
    assert torch.equal(hidden, velocity())
    assert not torch.equal(hidden[0], held[0]) and torch.equal(hidden[1], held[1])


def test_a_bf16_engine_keeps_its_bank_in_bf16_and_reads_the_same_bits(tiny_model):
    """The bank holds latents at the precision the model reads them at: a bfloat16 engine's
    chunks, bitwise those of the same engine whose bank is float32, in half the bytes."""
    cfg = tiny_model.config
    size = cfg.vae.image_size
    frames = torch.zeros(2, cfg.dit.chunk_frames, size, size, 3, dtype=torch.uint8)
    actions = np.random.default_rng(0).normal(size=(8, 2, cfg.dit.chunk_frames, 12))
    out = []
    for bank in (torch.bfloat16, torch.float32):
        engine = WorldEngine(tiny_model, 2, "camera", dtype=torch.bfloat16, memory=True)
        assert engine.memory is not None and engine.memory.latents.dtype == torch.bfloat16
        engine.memory.latents = engine.memory.latents.to(bank)
        engine.seed([3, 4], env_idx=[0, 1])
        engine.start([0, 1], frames, poses=np.zeros((2, 4)))
        steps = [engine.step(a.astype(np.float32), poses=np.zeros((2, 4))) for a in actions]
        assert engine.recall is not None and engine.recall.hits.tolist() == [1, 1]
        out.append(torch.stack([latents for latents, _ in steps]))
    assert torch.equal(out[0], out[1])


def test_engine_remembers_what_it_is_given(tiny_model):
    """``remember`` stores other latents than the generated chunk (the oracle-memory run)."""
    cfg = tiny_model.config
    size = cfg.vae.image_size
    engine = WorldEngine(tiny_model, 2, "camera", memory=True)
    start = torch.zeros(2, cfg.dit.chunk_frames, size, size, 3, dtype=torch.uint8)
    engine.start([0, 1], start, poses=np.zeros((2, 4)))
    actions = np.zeros((2, cfg.dit.chunk_frames, 12), np.float32)
    given = torch.randn(2, *engine.rollout.latent_shape)
    generated, _ = engine.step(actions, poses=np.zeros((2, 4)), remember=given)
    bank = engine.memory
    for row in range(2):
        newest = int(np.argmax(np.where(bank.owner[row] == row, bank.uid[row], -1)))
        assert torch.equal(bank.latents[row, newest], given[row])
        assert not torch.equal(bank.latents[row, newest], generated[row])
    with pytest.raises(ValueError, match="remember must be"):
        engine.step(actions, poses=np.zeros((2, 4)), remember=given[:1])


@pytest.mark.parametrize("memory_t, level", [(None, 0.5), (0.0, 0.0)])
def test_memory_is_presented_at_memory_t_else_like_history(tiny_model, memory_t, level):
    cfg = tiny_model.config
    sampler = dataclasses.replace(cfg.sampler, context_t=0.5, memory_t=memory_t)
    model = WorldModel(dataclasses.replace(cfg, sampler=sampler)).eval()
    model.load_state_dict(tiny_model.state_dict())
    levels = []
    encode = model.dit.encode_memory
    model.dit.encode_memory = lambda latents, t, *a: levels.append(t) or encode(latents, t, *a)
    engine = WorldEngine(model, 1, "camera", memory=True)
    size = cfg.vae.image_size
    start = torch.zeros(1, cfg.dit.chunk_frames, size, size, 3, dtype=torch.uint8)
    engine.start([0], start, poses=np.zeros((1, 4)))
    for _ in range(4):
        engine.step(np.zeros((1, cfg.dit.chunk_frames, 12), np.float32), poses=np.zeros((1, 4)))
    assert levels and set(levels) == {level}
    with pytest.raises(ValueError, match="memory_t"):
        dataclasses.replace(sampler, memory_t=1.0)


def make_env(n=2, **kw):
    return WorldModelVectorEnv(n, world="citywalk", model="random-tiny", **kw)


def test_env_reports_memory_hits_and_forks_memory_with_the_state():
    env = make_env()
    env.reset(seed=0)
    walk = np.array([[1, 0], [1, 0]])  # W, no turn
    for _ in range(5):
        obs, *_, info = env.step(walk)
    assert info["memory_hits"].tolist() == [1, 1] and (info["memory_score"] > 0.2).all()
    state = env.get_state()
    later = [env.step(walk)[0] for _ in range(3)]
    env.set_state(state)
    again = [env.step(walk)[0] for _ in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(later, again, strict=True))
    env.set_state(state)
    fork = env.fork(0, 2)
    forked = [fork.step(walk)[0] for _ in range(3)]
    assert all(np.array_equal(a[0], f[0]) for a, f in zip(later, forked, strict=True))
    *_, info = env.step(walk)
    scores = info["memory_score"].copy()
    env.reset(options={"env_idx": [1]})
    assert env._engine.memory.chunks.tolist()[1] == 1  # row 1 forgot all but its new start
    assert np.array_equal(info["memory_score"], scores)  # an info handed out stays as it was


def test_banks_keep_latent_keys_only_where_they_retrieve_by_them():
    """Pose-retrieving banks keep no keys; a state saved with them (an earlier version) loads."""
    camera = make_env()
    robot = WorldModelVectorEnv(2, world="robot", model="random-tiny", memory=True)
    for env in (camera, robot):
        env.reset(seed=0)
    assert camera._engine.memory.keys.shape[-1] == 0 < robot._engine.memory.keys.shape[-1]
    walk = np.array([[1, 0], [1, 0]])
    camera.step(walk)
    state = camera.get_state()
    old = [
        {**row, "keys": torch.zeros(*row["keys"].shape[:-1], 64)}
        for row in state["engine"]["memory"]
    ]
    later = [camera.step(walk)[0] for _ in range(2)]
    camera.set_state({**state, "engine": {**state["engine"], "memory": old}})
    assert all(np.array_equal(a, camera.step(walk)[0]) for a in later)


def test_a_row_about_to_start_over_stores_nothing_in_a_shared_bank():
    """Its last chunk would be dropped at its reset, but could first evict another row's entry."""
    ends = iter([False] * 3 + [True] + [False] * 10)
    env = make_env(
        memory_shared=True,
        memory_capacity=4,
        termination_fn=lambda obs, *_: np.array([False, next(ends)]),
    )
    env.reset(seed=0)
    walk = np.array([[1, 0], [1, 0]])
    for _ in range(4):  # row 1 terminates at the 4th step
        env.step(walk)
    memory = env._engine.memory
    before = memory._next_uid
    env.step(walk)  # row 1 starts over here (next-step autoreset)
    assert memory._next_uid - before == 2  # row 0's chunk and row 1's start chunk, no third
    assert (memory.owner[0] == 1).sum() == 1  # row 1 holds only its start


def test_memory_slots_after_a_state_name_the_chunks_their_kv_were_made_from():
    """A memory slot's K/V are reused while its uid names the same chunk; uids are only unique
    within one memory, so a row state from another env must not keep a uid naming another."""
    walk = np.array([[1, 0], [1, 0]])
    there, here = make_env(memory_shared=True), make_env(memory_shared=True)
    there.reset(seed=0)
    here.reset(seed=1)  # the same walk, other chunks under the same uids
    for _ in range(6):
        there.step(walk)
        here.step(walk)
    state = there.get_state([0])
    saved, slots = state["engine"]["memory"][0], state["engine"]["slot_uid"][0]
    assert (slots >= 0).all() and (here._engine.memory.uid[0] == slots[0]).any()
    here.set_state(state, env_idx=[0])
    memory = here._engine.memory
    for saved_uid, uid in zip(slots, here._engine.slot_uid[0], strict=True):
        if uid >= 0:  # kept: the bank holds the chunk the slot was made from under that uid
            made_from = saved["latents"][np.flatnonzero(saved["uid"] == saved_uid)[0]]
            assert torch.equal(memory.latents[0, memory.uid[0] == uid][0], made_from)
    assert (here._engine.slot_uid[0] == -1).all()  # here: another row's chunk, not loaded
    alone = make_env()  # a bank of its own loads whole: uids and slots kept, nothing re-encoded
    alone.reset(seed=0)
    for _ in range(6):
        alone.step(walk)
    state = alone.get_state()
    alone.set_state(state)
    assert (alone._engine.slot_uid >= 0).all()
    assert np.array_equal(alone._engine.slot_uid, state["engine"]["slot_uid"])
    # rows of a shared bank started from one picture hold identical start chunks: a state of
    # this env keeps each slot on its own entry, not on the first twin found
    twins = make_env(memory_shared=True)
    twins.reset(seed=0, options={"image": np.full((32, 32, 3), 128, np.uint8)})
    twins.step(np.array([[3, 4], [0, 4]]))
    state = twins.get_state()
    assert state["engine"]["slot_uid"].tolist() == [[1], [0]]  # each holds the other's start
    twins.set_state(state)
    assert twins._engine.slot_uid.tolist() == [[1], [0]]


@pytest.mark.parametrize("world", ["citywalk", "robot"])
def test_rows_the_store_mask_leaves_out_still_count_their_chunks(world):
    """A row whose chunk is not stored moves its window on (the exclusion of recent chunks)."""
    env = WorldModelVectorEnv(2, world=world, model="random-tiny", memory=True)
    env.reset(seed=0)
    engine, memory = env._engine, env._engine.memory
    before = memory._next_uid
    actions = np.zeros((2, engine.config.dit.chunk_frames, 2), np.float32)
    poses = np.zeros((2, 4)) if world == "citywalk" else None
    for k in range(4):
        engine.step(actions, poses=poses, store=np.array([True, k % 2 == 0]))
    engine.step(actions, poses=poses, store=np.zeros(2, bool))  # nobody stores
    assert memory.chunks.tolist() == engine.cache.chunks.tolist() == [6, 6]
    assert memory._next_uid - before == 4 + 2  # row 0's four, row 1's two
    with pytest.raises(ValueError, match="bool mask"):
        engine.step(actions, poses=poses, store=[True, False, True])


def test_memory_defaults_follow_the_world_and_can_be_switched_off():
    assert make_env().memory and not make_env(memory=False).memory
    assert not WorldModelVectorEnv(1, world="robot", model="random-tiny").memory
    env = make_env(memory=False)
    env.reset(seed=0)
    _, *_, info = env.step(np.array([[1, 0], [1, 0]]))
    assert "memory_hits" not in info
    with pytest.raises(ValueError, match="without memory"):
        env.set_memory(True)
    with pytest.raises(ValueError, match=r"rows in \[0, 2\)"):
        make_env().set_memory(False, [2])
    single = gym.make(
        "WorldModel-CityWalk-v0", model="random-tiny"
    )  # its one row, as the cards say
    single.reset(seed=0)
    single.unwrapped.set_memory(False)
    assert single.step(np.array([1, 0]))[-1]["memory_hits"] == 0
    assert single.unwrapped.vector._engine.memory.enabled.tolist() == [False]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_robot_world_retrieves_by_latent_similarity_at_either_precision(dtype):
    env = WorldModelVectorEnv(2, world="robot", model="random-tiny", memory=True, dtype=dtype)
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(4):
        *_, info = env.step(env.action_space.sample())
    assert info["memory_hits"].tolist() == [1, 1]
    assert np.isfinite(info["memory_score"]).all()


def test_single_env_reports_pose_and_memory():
    env = gym.make("WorldModel-CityWalk-v0", model="random-tiny")
    env.reset(seed=1)
    for _ in range(4):
        _, _, _, _, info = env.step(np.array([1, 0]))
    assert info["pose"].shape == (4,) and info["memory_hits"] == 1
    # one row of the vector env's infos, as the SB3 and PettingZoo adapters give it
    assert type(info["step"]) is int and type(info["memory_score"]) is float
    assert not any(key.startswith("_") for key in info)
    env.close()


@pytest.mark.parametrize("context_t", [0.0, 0.1])
def test_a_step_writes_its_chunk_when_next_needed_with_the_same_bits(tiny_model, context_t):
    """A step leaves its cache-write pass until the cache or the generators are next used
    (drawing the same noise then, at ``context_t`` > 0): any sequence of engine calls gives the
    bits of an engine that writes at once."""
    cfg = tiny_model.config
    size, f = cfg.vae.image_size, cfg.dit.chunk_frames
    sampler = dataclasses.replace(cfg.sampler, context_t=context_t)
    frames = torch.zeros(3, f, size, size, 3, dtype=torch.uint8)
    poses = np.zeros((3, 4))
    actions = np.random.default_rng(0).normal(size=(8, 3, f, 12)).astype(np.float32)

    def run(at_once: bool) -> list[torch.Tensor]:
        engine = WorldEngine(tiny_model, 3, "camera", memory=True, sampler=sampler)
        engine.seed([1, 2, 3], env_idx=[0, 1, 2])
        engine.start([0, 1, 2], frames, poses=poses)
        out = []

        def step(i: int) -> None:
            latents = engine.step(actions[i], poses=poses)[0]
            out.append(latents.clone())
            if at_once:
                engine._write_pending()
            latents.add_(1.0)  # a caller's change to what it was given writes nothing

        step(0)
        saved = engine.get_state([0, 1, 2])
        step(1)
        engine.set_state(engine.get_state([2]), [1])  # some rows: the others' write is kept
        step(2)
        engine.seed([7], env_idx=[0])
        step(3)
        engine.start([2], frames[:1], poses=poses[:1])
        step(4)
        engine.set_state(saved, [0, 1, 2])  # every row: the write would be overwritten
        step(5)
        step(6)
        return [*out, *engine.get_state([0, 1, 2])["cache"].values()]

    assert all(torch.equal(a, b) for a, b in zip(run(False), run(True), strict=True))


def test_a_planners_futures_reloaded_after_their_last_step_skip_its_cache_write(tiny_model):
    size, f = tiny_model.config.vae.image_size, tiny_model.config.dit.chunk_frames
    engine = WorldEngine(tiny_model, 2, "camera")
    writes = []
    commit = engine.rollout.commit
    engine.rollout.commit = lambda *a, **k: writes.append(1) or commit(*a, **k)  # type: ignore
    engine.start([0, 1], torch.zeros(2, f, size, size, 3, dtype=torch.uint8))
    state = engine.get_state([0, 1])
    actions = np.zeros((2, f, 12), np.float32)
    for _ in range(3):  # a plan of two steps, three times
        engine.set_state(state, [0, 1])
        engine.step(actions)
        engine.step(actions)
    assert len(writes) == 1 + 3  # the start's, then each plan's first step's
    engine.get_state([0])  # reading the cache writes the last step's chunk
    assert len(writes) == 5
    engine.step(actions)
    bad = {**state, "cache": {**state["cache"], "k": state["cache"]["k"][:, :1]}}
    with pytest.raises(ValueError, match="cache state 'k' has shape"):
        engine.set_state(bad, [0, 1])  # refused: the step's chunk is still to be written
    chunks = engine.get_state([0, 1])["cache"]["chunks"]
    assert len(writes) == 6 and chunks.tolist() == [4, 4]  # the start's, then three steps

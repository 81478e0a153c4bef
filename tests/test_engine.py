"""Contracts of the engine: cache equivalence, row independence, determinism, cache row ops."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import kept_anchors, randomize

from gym_worldmodel import hub
from gym_worldmodel.memory import KVCache
from gym_worldmodel.models import WorldModel, WorldModelConfig, precision
from gym_worldmodel.sampling import ChunkRollout, RecomputeRollout, RowGenerators


def make_engine(model: WorldModel, batch: int, **sampler):
    config = dataclasses.replace(model.config.sampler, **sampler)
    cache = KVCache.for_model(model.dit.config, model.dit.rope, batch)
    return cache, ChunkRollout(model.dit, config)


def random_actions(rollout: ChunkRollout, batch: int, steps: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(steps, batch, *rollout.action_shape, generator=gen)


def roll(model, seeds, actions, modality, **sampler):
    """Generate ``len(actions)`` chunks for rows seeded ``seeds``; return (chunks, cache)."""
    cache, rollout = make_engine(model, len(seeds), **sampler)
    gens = RowGenerators(seeds)
    with torch.no_grad():
        chunks = [rollout.generate(cache, a, modality, gens) for a in actions]
    return torch.stack(chunks, 1), cache


# --- cache equivalence ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny_model", "moving_model", "flowing_model"])
@pytest.mark.parametrize("steps", [2, 9])  # 9 chunks with a 2-chunk window wraps the ring 4 times
def test_cached_generation_equals_sequence_recompute(request, name, steps):
    """Denoising with the cache equals a from-scratch forward over the same visible context."""
    tiny_model = request.getfixturevalue(name)
    dit, fr = tiny_model.dit, tiny_model.dit.config.chunk_frames
    modality = torch.tensor([0, 1, 2])
    _, rollout = make_engine(tiny_model, 3)
    actions = random_actions(rollout, 3, steps + 1, seed=1)
    chunks, cache = roll(tiny_model, [0, 1, 2], actions[:-1], modality)

    probe = torch.randn(3, *rollout.latent_shape, generator=torch.Generator().manual_seed(2))
    level = torch.tensor([0.9, 0.5, 0.1])
    with torch.no_grad():
        cached = dit(probe, level, actions[-1], modality, cache)
        seq = torch.cat([chunks.flatten(1, 2), probe], 1)
        t = torch.cat([torch.zeros(3, steps), level[:, None]], 1)
        ref = dit.forward_sequence(seq, t, torch.cat(list(actions), 1), modality)
    assert cached.abs().mean() > 0.1  # the probe is not trivially zero
    assert (ref[:, -fr:] - cached).abs().max() <= 1e-4


def test_cache_write_pass_equals_sequence_at_every_chunk(tiny_model):
    """Each chunk's cache-write output equals its output in one forward over the episode."""
    dit = tiny_model.dit
    cache, rollout = make_engine(tiny_model, 2)
    actions = random_actions(rollout, 2, 7, seed=3)
    modality = torch.tensor([0, 2])
    gens, written, chunks = RowGenerators([5, 6]), [], []
    with torch.no_grad():
        for a in actions:
            x = rollout.generate(cache, a, modality, gens)
            chunks.append(x)
        # Replay the write passes on a fresh cache to capture their outputs.
        replay = KVCache.for_model(dit.config, dit.rope, 2)
        zeros = torch.zeros(2)
        for x, a in zip(chunks, actions, strict=True):
            written.append(dit(x, zeros, a, modality, replay, write=True))
            replay.commit()
        ref = dit.forward_sequence(
            torch.cat(chunks, 1), torch.zeros(2, len(chunks)), torch.cat(list(actions), 1), modality
        )
    assert (torch.cat(written, 1) - ref).abs().max() <= 1e-4
    for name, tensor in cache.state_dict().items():
        assert torch.equal(tensor, replay.state_dict()[name]), name


@pytest.mark.parametrize("steps", [2, 6])
def test_cached_memory_equals_sequence_with_memory(tiny_model, steps):
    """A retrieved chunk in the cache's memory slot acts as the sequence path's memory chunk.

    Row 1's memory is marked invalid: it must generate exactly what it would with no memory,
    while rows 0 and 2 see theirs.
    """
    dit, fr = tiny_model.dit, tiny_model.dit.config.chunk_frames
    modality = torch.tensor([0, 1, 2])
    cache, rollout = make_engine(tiny_model, 3)
    actions = random_actions(rollout, 3, steps + 1, seed=4)
    gen = torch.Generator().manual_seed(5)
    memory = torch.randn(3, *rollout.latent_shape, generator=gen)
    probe = torch.randn(3, *rollout.latent_shape, generator=gen)
    valid = torch.tensor([True, False, True])
    level = torch.tensor([0.9, 0.5, 0.1])
    gens = RowGenerators([0, 1, 2])
    with torch.no_grad():
        chunks = [rollout.generate(cache, actions[0], modality, gens)]  # the sink: no memory yet
        dit.encode_memory(memory, 0.0, modality, cache, 0, torch.arange(3))
        cache.set_memory(valid[:, None])
        chunks += [rollout.generate(cache, a, modality, gens) for a in actions[1:-1]]
        cached = dit(probe, level, actions[-1], modality, cache)
        seq = torch.cat([*chunks, probe], 1)
        t = torch.cat([torch.zeros(3, steps), level[:, None]], 1)
        acts = torch.cat(list(actions), 1)
        ref = dit.forward_sequence(seq, t, acts, modality, memory=memory, memory_valid=valid)
        plain = dit.forward_sequence(seq, t, acts, modality)
    assert (ref[:, -fr:] - cached).abs().max() <= 1e-4
    assert (plain[1] - ref[1]).abs().max() <= 1e-5  # invalid memory is ignored
    assert (plain[[0, 2], -fr:] - ref[[0, 2], -fr:]).abs().mean() > 1e-3  # valid memory is read


def test_sequence_tables_are_made_once_per_layout_and_serve_training_after_inference(
    monkeypatch,
):
    """A training step asks for the same rotary tables every time (on a GPU each one made
    afresh waited for the GPU): they are made once per layout, as tensors training can use
    even when an inference-mode call made them first."""
    dit = randomize(WorldModel(WorldModelConfig.tiny())).dit  # its own: no table made yet
    f, made = dit.config.chunk_frames, []
    cos_sin = type(dit.rope).cos_sin
    monkeypatch.setattr(
        type(dit.rope), "cos_sin", lambda rope, at: made.append(1) or cos_sin(rope, at)
    )
    cfg = dit.config
    seq = torch.randn(2, 4 * f, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    t, acts = torch.rand(2, 4), torch.zeros(2, 4 * f, dit.config.action_dim)
    modality = torch.tensor([0, 2])
    with torch.inference_mode():
        before = dit.forward_sequence(seq, t, acts, modality)
    count = len(made)
    out = dit.forward_sequence(seq, t, acts, modality)  # the same layout: no table made
    out.square().mean().backward()  # with tables an inference-mode call made
    assert count == 3 and len(made) == count and torch.equal(before, out.detach())
    dit.forward_sequence(seq[:, : 3 * f], t[:, :3], acts[:, : 3 * f], modality)
    assert len(made) == 2 * count  # another layout: its own tables


@pytest.mark.parametrize(
    "overrides",
    [
        {"memory_chunks": 2},
        {"window_chunks": 1},
        {"chunk_frames": 1, "window_chunks": 3, "memory_chunks": 3},
    ],
)
def test_cached_generation_equals_sequence_in_other_cache_layouts(overrides):
    """The sequence path reads the sink and every memory slot at the cache's distances in other
    layouts too: several memory slots, a 1-chunk window, 1-frame chunks; one row's memory masked
    out; the window not yet full and full several times over."""
    model = randomize(WorldModel(WorldModelConfig.tiny(**overrides)).eval())
    dit, cfg = model.dit, model.dit.config
    fr, slots = cfg.chunk_frames, cfg.memory_chunks
    modality = torch.tensor([0, 1, 2])
    gen = torch.Generator().manual_seed(7)
    memory = torch.randn(3, slots * fr, *dit_latent_shape(cfg), generator=gen)
    row_valid = torch.tensor([True, False, True])  # row 1's memory is masked out
    for steps in (1, cfg.window_chunks + 1, cfg.window_chunks + 4):
        cache, rollout = make_engine(model, 3)
        actions = random_actions(rollout, 3, steps + 1, seed=steps)
        probe = torch.randn(3, *rollout.latent_shape, generator=gen)
        level = torch.tensor([0.9, 0.5, 0.1])
        gens = RowGenerators([0, 1, 2])
        with torch.no_grad():
            chunks = [rollout.generate(cache, actions[0], modality, gens)]  # the sink
            for slot in range(slots):
                part = memory[:, slot * fr : (slot + 1) * fr]
                dit.encode_memory(part, 0.0, modality, cache, slot, torch.arange(3))
            cache.set_memory(row_valid[:, None].expand(3, slots))
            chunks += [rollout.generate(cache, a, modality, gens) for a in actions[1:-1]]
            cached = dit(probe, level, actions[-1], modality, cache)
            seq = torch.cat([*chunks, probe], 1)
            t = torch.cat([torch.zeros(3, steps), level[:, None]], 1)
            acts = torch.cat(list(actions), 1)
            ref = dit.forward_sequence(
                seq, t, acts, modality, memory=memory, memory_valid=row_valid
            )
        assert (ref[:, -fr:] - cached).abs().max() <= 1e-4, steps


def dit_latent_shape(cfg) -> tuple[int, int, int]:
    return (cfg.latent_channels, cfg.latent_size, cfg.latent_size)


def test_memory_slot_rejects_bad_shapes(tiny_model):
    cache, rollout = make_engine(tiny_model, 2)
    with pytest.raises(ValueError, match=r"memory validity must be \(2, 1\)"):
        cache.set_memory(torch.ones(3, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="slot must be in"):
        latents = torch.zeros(2, *rollout.latent_shape)
        tiny_model.dit.encode_memory(
            latents, 0.0, torch.zeros(2, dtype=torch.long), cache, 1, torch.arange(2)
        )


def test_positions_stay_bounded_in_an_endless_episode(tiny_model):
    """At step 40 the cache acts like a short episode: the sink plus the receptive field.

    Chunk n reads the window's keys at every layer, so its output depends on the last
    ``depth * window`` chunks and the sink only; a sequence of just those, whose absolute
    positions are small, must give the same output.
    """
    dit, cfg = tiny_model.dit, tiny_model.dit.config
    cache, rollout = make_engine(tiny_model, 1)
    modality = torch.zeros(1, dtype=torch.long)
    actions = random_actions(rollout, 1, 41)
    chunks, cache = roll(tiny_model, [0], actions[:-1], modality)
    assert int(cache.chunks) == 40
    mem = cache.layout.memory
    assert not cache.valid[:, mem].any() and cache.valid[:, mem.stop :].all()

    keep = [0, *range(40 - cfg.depth * cfg.window_chunks, 40)]
    probe = torch.randn(1, *rollout.latent_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        cached = dit(probe, torch.full((1,), 0.6), actions[-1], modality, cache)
        seq = torch.cat([chunks[:, keep].flatten(1, 2), probe], 1)
        t = torch.zeros(1, len(keep) + 1)
        t[:, -1] = 0.6
        acts = torch.cat([actions[i] for i in keep] + [actions[-1]], 1)
        anchors = kept_anchors(list(chunks.unbind(1)), keep)
        short = dit.forward_sequence(seq, t, acts, modality, anchors=anchors)
    assert (short[:, -cfg.chunk_frames :] - cached).abs().max() <= 1e-4


# --- frame anchor ------------------------------------------------------------------------------


def test_frame_anchor_feeds_the_previous_frame_in_both_paths(tiny_model):
    """The anchor changes what is generated, and the cache keeps the last written frame."""
    actions = random_actions(ChunkRollout(tiny_model.dit, tiny_model.config.sampler), 1, 3)
    modality = torch.zeros(1, dtype=torch.long)
    anchored, cache = roll(tiny_model, [0], actions, modality)
    assert torch.equal(cache.anchor, anchored[:, -1, -1])  # context_t 0: the clean chunk
    plain = WorldModel(tiny_model.config).eval()
    plain.load_state_dict(tiny_model.state_dict())
    torch.nn.init.zeros_(plain.dit.anchor_embed.weight)
    unanchored, _ = roll(plain, [0], actions, modality)
    assert torch.equal(anchored[:, 0], unanchored[:, 0])  # the first chunk has no anchor
    assert not torch.allclose(anchored[:, 1:], unanchored[:, 1:], atol=1e-3)


def test_with_copies_stay_on_the_models_device():
    model = WorldModel(WorldModelConfig.tiny()).to("meta")  # a device without data: no compute
    camera = np.zeros((model.config.dit.modalities["camera"], 3))
    copies = (
        model.with_sampler(nfe=2),
        WorldModel(WorldModelConfig.tiny(frame_anchor=False)).to("meta").with_frame_anchor(),
        model.with_anchor_sigma(0.5),
        model.with_action_scale({"camera": [2.0] * model.config.dit.modalities["camera"]}),
        model.with_anchor_motion({"camera": camera}),
    )
    assert all(copy.device.type == "meta" for copy in copies)


def test_with_frame_anchor_starts_as_the_same_model():
    old = WorldModelConfig.tiny(frame_anchor=False)
    data = old.to_dict()
    del data["dit"]["frame_anchor"]  # a config.json written before the option
    assert not WorldModelConfig.from_dict(data).dit.frame_anchor
    model = randomize(WorldModel(old).eval())
    upgraded = model.with_frame_anchor()
    assert upgraded.config.dit.frame_anchor and not upgraded.training
    assert not upgraded.dit.anchor_embed.weight.any()
    actions = random_actions(ChunkRollout(model.dit, model.config.sampler), 2, 3)
    modality = torch.tensor([0, 1])
    before, _ = roll(model, [0, 1], actions, modality)
    after, _ = roll(upgraded, [0, 1], actions, modality)
    assert torch.equal(before, after)
    assert upgraded.with_frame_anchor() is upgraded


def test_with_action_scale_starts_as_the_same_model_and_round_trips(tiny_model, tmp_path):
    model = randomize(tiny_model)
    width = model.config.dit.modalities["robot"]
    scaled = model.with_action_scale({"robot": [4.0] * 3 + [1.0] * (width - 3)})
    assert scaled.config.dit.action_scale["robot"][:4] == (4.0, 4.0, 4.0, 1.0)
    actions = random_actions(ChunkRollout(model.dit, model.config.sampler), 2, 3)
    modality = torch.tensor([0, 1])
    before, _ = roll(model, [0, 1], actions, modality)
    after, _ = roll(scaled, [0, 1], actions, modality)
    torch.testing.assert_close(before, after, atol=1e-5, rtol=0)  # the function is kept
    rescaled = scaled.with_action_scale({"robot": [2.0] * width})  # replaces, not compounds
    torch.testing.assert_close(
        rescaled.dit.actions(actions[0], modality),
        model.dit.actions(actions[0], modality),
        atol=1e-5,
        rtol=0,
    )
    hub.save_pretrained(scaled, tmp_path)
    loaded = hub.from_pretrained(tmp_path)
    assert loaded.config == scaled.config
    assert torch.equal(loaded.dit.actions.input_scale, scaled.dit.actions.input_scale)
    # the factor multiplies the input: with the first layer left alone, the output changes
    raw = WorldModel(scaled.config).eval()
    raw.load_state_dict(model.state_dict())
    robot = torch.ones(1, dtype=torch.long)
    assert not torch.allclose(
        raw.dit.actions(actions[0][1:], robot), model.dit.actions(actions[0][1:], robot)
    )


def test_cache_state_from_a_model_without_anchor_is_refused_and_changes_nothing(tiny_model):
    plain = WorldModel(WorldModelConfig.tiny(frame_anchor=False))
    state = {
        k: v + 1
        for k, v in KVCache.for_model(plain.dit.config, plain.dit.rope, 2).state_dict().items()
    }
    cache, *_ = filled_cache(tiny_model, batch=2)
    before = snapshot(cache)
    with pytest.raises(ValueError, match="anchor"):
        cache.load_state_dict(state)
    assert rows_equal(before, cache.state_dict(), [0, 1])  # k, v, valid, chunks not half-loaded


def test_cache_state_of_rows_is_a_copy_that_loads_back(tiny_model):
    cache, *_ = filled_cache(tiny_model, batch=2)
    before = snapshot(cache)
    rows = cache.state_dict([1, 1])  # row 1 twice: a fork's
    assert rows["k"].shape[1] == 2 and rows["chunks"].shape == (2,)
    for t in rows.values():
        t.zero_()  # a copy: the cache keeps its own
    assert rows_equal(before, cache.state_dict(), [0, 1])
    cache.load_state_dict(cache.state_dict([1]), env_idx=[0])
    row0, row1 = (
        cache.state_dict([0]),
        {k: v[:, [1]] if v.dim() == 5 else v[[1]] for k, v in before.items()},
    )
    assert all(torch.equal(row0[k], row1[k]) for k in row0)


# --- moving anchors (anchor_motion) ----------------------------------------------------------


def test_moved_anchors_follow_the_actions_frame_by_frame(tiny_model):
    """Frame k of a chunk sees its anchor moved by the sum of actions 0..k times the rates."""
    cfg = tiny_model.config.dit
    rates = torch.zeros(cfg.modalities["camera"], 3)
    rates[3] = torch.tensor([1.0, 0.0, 0.0])  # one latent pixel right per unit of dimension 3
    rates[4] = torch.tensor([0.0, -0.5, 0.0])  # half a pixel up per unit of dimension 4
    model = tiny_model.with_anchor_motion({"camera": rates})
    gen = torch.Generator().manual_seed(0)
    side = cfg.latent_size
    anchors = torch.randn(1, 2, cfg.latent_channels, side, side, generator=gen)
    anchors[:, 0] = 0.0  # the sink has none
    actions = torch.zeros(1, 2 * cfg.chunk_frames, cfg.action_dim)
    actions[..., 3] = 1.0
    actions[:, cfg.chunk_frames + 1, 4] = 2.0  # chunk 1, frame 1: one pixel up
    camera = torch.tensor([cfg.modality_id("camera")])
    moved = model.dit.moved_anchors(anchors, actions, camera)
    assert moved.shape == (1, 2 * cfg.chunk_frames, *anchors.shape[2:])
    assert not moved[:, : cfg.chunk_frames].any()  # zero stays zero
    a = anchors[0, 1]
    first, second = moved[0, cfg.chunk_frames :]
    torch.testing.assert_close(first[..., :, 1:], a[..., :, :-1])  # 1 px right; border repeats
    torch.testing.assert_close(first[..., :, 0], a[..., :, 0])
    torch.testing.assert_close(second[..., :-1, 2:], a[..., 1:, :-2])  # 2 right, 1 up
    robot = torch.tensor([cfg.modality_id("robot")])  # no rates: every frame sees the anchor
    still = model.dit.moved_anchors(anchors, actions, robot)
    torch.testing.assert_close(still, anchors.repeat_interleave(cfg.chunk_frames, 1))


def test_with_anchor_motion_at_zero_rates_generates_what_the_model_did(tiny_model):
    upgraded = tiny_model.with_anchor_motion({})
    assert upgraded.config.dit.anchor_motion and not upgraded.dit.anchor_motion.any()
    actions = random_actions(ChunkRollout(tiny_model.dit, tiny_model.config.sampler), 2, 3)
    modality = torch.tensor([0, 1])
    before, _ = roll(tiny_model, [0, 1], actions, modality)
    after, _ = roll(upgraded, [0, 1], actions, modality)
    torch.testing.assert_close(before, after, atol=1e-4, rtol=1e-4)  # per-frame sums
    with pytest.raises(ValueError, match=r"anchor motion of 'camera'.*\(12, 3\)"):
        tiny_model.with_anchor_motion({"camera": torch.zeros(12, 2)})
    with pytest.raises(ValueError, match="anchor motion of 'boat'"):
        tiny_model.with_anchor_motion({"boat": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="anchor_motion"):
        WorldModelConfig.tiny(frame_anchor=False, anchor_motion=True)


# --- flow-warped anchors (anchor_flow) --------------------------------------------------------


def test_flow_warp_reads_each_pixel_where_the_flow_points():
    from gym_worldmodel.models.flow import warp

    frames = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    flow = torch.zeros(2, 2, 8, 8)
    flow[0, 0] = 1.0  # row 0 reads one pixel to the right: its content moves left
    flow[1, 1] = -2.0  # row 1 reads two pixels up: its content moves down
    out = warp(frames, flow)
    torch.testing.assert_close(out[0, :, :, :-1], frames[0, :, :, 1:])
    torch.testing.assert_close(out[0, :, :, -1], frames[0, :, :, -1])  # the border repeats
    torch.testing.assert_close(out[1, :, 2:], frames[1, :, :-2])
    torch.testing.assert_close(warp(frames, torch.zeros_like(flow)), frames)


def test_flow_anchors_move_only_real_anchors_of_flowing_worlds(tiny_model):
    """Zero anchors and rows of worlds without a flow keep their anchor exactly; the others
    move, frame after frame, by the latent change the warp makes."""
    model = tiny_model.with_anchor_flow(("driving",)).eval()
    randomize(model.flow, seed=6, std=0.05)
    cfg = model.config.dit
    f, side = cfg.chunk_frames, cfg.latent_size
    gen = torch.Generator().manual_seed(1)
    anchors = torch.randn(3, 2, cfg.latent_channels, side, side, generator=gen)
    anchors[:, 0] = 0.0  # the sink has none
    actions = torch.randn(3, 2 * f, cfg.action_dim, generator=gen)
    modality = torch.tensor([cfg.modality_id(m) for m in ("driving", "camera", "driving")])
    out = model.dit.frame_anchors(anchors, actions, modality)
    assert out.shape == (3, 2 * f, *anchors.shape[2:])
    with pytest.raises(ValueError, match="flow_anchors needs a model with a flow net"):
        tiny_model.flow_anchors(anchors, actions, modality)
    assert not out[:, :f].any()  # zero stays zero
    assert torch.equal(out[1], anchors[1].repeat_interleave(f, 0))  # the camera has no flow
    moved = out[[0, 2], f:] - anchors[[0, 2], 1:]
    assert (moved.flatten(2).abs().mean(-1) > 1e-3).all()  # every frame of a driving chunk moved
    assert (moved[:, 1] - moved[:, 0]).abs().mean() > 1e-3  # and further with each action


def test_with_anchor_flow_starts_as_the_same_model_and_round_trips(tiny_model, tmp_path):
    upgraded = tiny_model.with_anchor_flow(("robot",))
    assert upgraded.config.dit.anchor_flow == ("robot",) and not upgraded.training
    assert not upgraded.flow.net.out.weight.any()  # zero flow: the warp copies
    actions = random_actions(ChunkRollout(tiny_model.dit, tiny_model.config.sampler), 2, 3)
    modality = torch.tensor([1, 1])
    before, _ = roll(tiny_model, [0, 1], actions, modality)
    after, _ = roll(upgraded, [0, 1], actions, modality)
    torch.testing.assert_close(before, after, atol=1e-4, rtol=1e-4)  # resampling rounds
    both = upgraded.with_anchor_flow(("driving", "robot"))
    assert both.config.dit.anchor_flow == ("robot", "driving")
    randomize(both.flow, seed=2, std=0.05)
    hub.save_pretrained(both, tmp_path)
    loaded = hub.from_pretrained(tmp_path)
    assert loaded.config == both.config
    for key, value in both.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert any(key.startswith("flow.") for key in loaded.state_dict())


def test_flow_anchors_are_computed_once_per_step(flowing_model):
    """The step's denoiser calls and its cache-write pass share one warp of the anchor."""
    calls = []
    mover = flowing_model.dit.anchor_mover
    flowing_model.dit.anchor_mover = lambda *args: calls.append(1) or mover(*args)
    roll(
        flowing_model,
        [0],
        random_actions(make_engine(flowing_model, 1)[1], 1, 3),
        torch.zeros(1, dtype=torch.long),
        nfe=2,
    )
    assert len(calls) == 3


def test_anchor_flow_needs_the_frame_anchor_and_known_worlds():
    with pytest.raises(ValueError, match="anchor_flow"):
        WorldModelConfig.tiny(frame_anchor=False, anchor_flow=("robot",))
    with pytest.raises(ValueError, match="anchor_flow"):
        WorldModelConfig.tiny(anchor_flow=("boat",))
    with pytest.raises(ValueError, match="anchor_flow"):
        WorldModelConfig.tiny(anchor_motion=True, anchor_flow=("robot",))
    data = WorldModelConfig.tiny().to_dict()
    del data["dit"]["anchor_flow"]  # a config.json written before the option
    assert WorldModelConfig.from_dict(data).dit.anchor_flow == ()


def test_ego_anchors_move_by_the_shift_the_actions_carry_but_hold_the_car(tiny_model):
    """anchor_ego rows: the picture moves by the shift in the two columns after the modality's
    width, the held car stays and leaves no copy behind; other rows keep the net's flow."""
    model = tiny_model.with_anchor_flow(("robot",)).with_anchor_ego(("driving",), (12, 16, 12, 20))
    randomize(model.flow, seed=6, std=0.05)
    cfg = model.config.dit
    assert cfg.anchor_flow == ("robot", "driving") and cfg.anchor_ego == ("driving",)
    road = torch.linspace(-0.5, 0.5, 32)[None, :, None].expand(3, 32, 32)  # rows of grey
    frames = road[None].repeat(3, 1, 1, 1).clone()
    frames[:, :, 12:16, 12:20] = 0.9  # the car
    actions = torch.zeros(3, cfg.action_dim)
    actions[:, 2:4] = torch.tensor([3.0, -2.0])  # driving's shift columns: (dx, dy) px
    modality = torch.tensor([cfg.modality_id(m) for m in ("driving", "robot", "camera")])
    flow = model.flow.flow(frames, actions, modality)
    assert (flow[0, 0] == 3.0).all() and (flow[0, 1] == -2.0).all()
    net = model.flow.flow(frames[1:2], actions[1:2], modality[1:2])
    torch.testing.assert_close(flow[1], net[0])  # the robot's flow is the net's
    assert flow[1].abs().mean() > 0 and not flow[2].any()  # the camera has none
    moved = model.flow(frames, actions, modality)
    car = torch.zeros(32, 32, dtype=torch.bool)
    car[12:16, 12:20] = True
    assert torch.equal(moved[0][:, car], frames[0][:, car])  # the car stays
    # the road moves: it reads two rows up (rows 2..31 from 0..29), and never the car
    torch.testing.assert_close(moved[0][:, 2:][:, ~car[2:]], road[:, :-2][:, ~car[2:]])
    assert (moved[1] - frames[1]).abs().max() > 1e-3  # the robot moved by the net
    torch.testing.assert_close(moved[2], frames[2])  # the camera did not move


def test_anchor_ego_config_is_checked_and_round_trips(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="anchor_ego"):
        WorldModelConfig.tiny(anchor_ego=("driving",))  # no flow warp for it
    with pytest.raises(ValueError, match="anchor_ego"):
        WorldModelConfig.tiny(anchor_flow=("driving",), anchor_ego=("driving",), ego_hold=(1, 2))
    with pytest.raises(ValueError, match="anchor_ego"):  # no free columns after the robot's 13
        WorldModelConfig.tiny(anchor_flow=("robot",), anchor_ego=("robot",))
    model = tiny_model.with_anchor_ego(("driving",), (1, 2, 3, 4))
    hub.save_pretrained(model, tmp_path)
    assert hub.from_pretrained(tmp_path).config == model.config
    data = WorldModelConfig.tiny().to_dict()
    del data["dit"]["anchor_ego"], data["dit"]["ego_hold"]  # written before the option
    assert WorldModelConfig.from_dict(data).dit.anchor_ego == ()


# --- anchored prediction (anchor_sigma) -------------------------------------------------------


def test_anchored_model_with_zero_output_repeats_the_last_frame(tiny_model):
    """A zero network output predicts the anchor at pure noise: one step copies the last frame."""
    model = tiny_model.with_anchor_sigma(0.5).eval()
    assert not model.dit.out.weight.any() and model.config.dit.anchor_sigma == 0.5
    cache, rollout = make_engine(model, 2, nfe=1)
    gens = RowGenerators([0, 1])
    start = torch.randn(2, *rollout.latent_shape, generator=torch.Generator().manual_seed(3))
    actions = random_actions(rollout, 2, 2, seed=4)
    modality = torch.tensor([0, 2])
    with torch.no_grad():
        rollout.commit(cache, start, actions[0], modality, gens)
        chunk = rollout.generate(cache, actions[1], modality, gens)
    expected = start[:, -1:].expand_as(chunk)
    assert torch.allclose(chunk, expected, atol=1e-5)


def test_anchored_velocity_is_the_posterior_mean_flow():
    """At an inner level it equals (x_t - x0) / t for the stated x0, and is finite at 0 and 1."""
    from gym_worldmodel.models.dit import anchored_velocity

    gen = torch.Generator().manual_seed(0)
    x, raw = torch.randn(2, 2, 2, 3, 4, 4, generator=gen).unbind(0)
    anchors = torch.randn(2, 1, 3, 4, 4, generator=gen)
    anchors[1] = 0.0  # row 1 has no anchor: unit prior around zero
    sigma, t = 0.5, torch.tensor([[0.3, 0.3], [0.7, 0.7]])
    v = anchored_velocity(x, t, anchors, raw, sigma)
    for row, s in ((0, sigma**2), (1, 1.0)):
        tt, a = t[row, 0], anchors[row, 0]
        d = (1 - tt) ** 2 * s + tt**2
        x0 = a + (1 - tt) * s / d * (x[row] - (1 - tt) * a) + tt * (s / d) ** 0.5 * raw[row]
        torch.testing.assert_close(v[row], (x[row] - x0) / tt, rtol=1e-5, atol=1e-5)
    for level in (0.0, 1.0):
        assert anchored_velocity(x, torch.full((2, 2), level), anchors, raw, sigma).isfinite().all()
    noise_only = anchored_velocity(x, torch.ones(2, 2), anchors, raw, sigma)
    torch.testing.assert_close(
        x - noise_only, anchors + sigma * raw * torch.tensor([1.0, 1 / sigma]).view(2, 1, 1, 1, 1)
    )  # t = 1: x0 = anchor + std * raw


def test_anchor_sigma_needs_the_frame_anchor():
    with pytest.raises(ValueError, match="anchor_sigma"):
        WorldModelConfig.tiny(frame_anchor=False, anchor_sigma=0.5)
    with pytest.raises(ValueError, match="anchor_sigma"):
        WorldModelConfig.tiny(anchor_sigma=-1.0)


# --- row independence and determinism --------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny_model", "moving_model", "flowing_model"])
def test_row_is_bitwise_identical_alone_or_in_a_batch_of_8(request, name):
    tiny_model = request.getfixturevalue(name)
    _, rollout = make_engine(tiny_model, 8)
    actions = random_actions(rollout, 8, 4, seed=7)
    modality = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    seeds = [11, 3, 4, 5, 6, 7, 8, 9]
    batch, _ = roll(tiny_model, seeds, actions, modality)
    alone, _ = roll(tiny_model, seeds[:1], actions[:, :1], modality[:1])
    assert torch.equal(batch[:1], alone)
    moved, _ = roll(tiny_model, seeds[::-1], actions.flip(1), modality.flip(0))
    assert torch.equal(moved[-1:], alone)


def test_vae_inference_in_cpu_passes_gives_what_one_pass_gives(tiny_model):
    from gym_worldmodel.models.vae import CPU_FRAMES_PER_PASS, to_unit

    vae = tiny_model.vae
    n = 2 * CPU_FRAMES_PER_PASS + 3  # two full passes and a short one
    frames = torch.randint(0, 256, (n, vae.config.image_size, vae.config.image_size, 3))
    x = to_unit(frames.to(torch.uint8))
    with torch.no_grad():
        mean, logvar = vae.encoder(x)
        passes = vae.encode_posterior(x)
        assert torch.allclose(passes[0], mean, atol=1e-5)
        assert torch.allclose(passes[1], logvar, atol=1e-5)
        assert torch.allclose(vae.decode_float(mean), vae.decoder(mean), atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_vae_frames_have_the_same_bits_whatever_the_batch(tiny_model, dtype):
    """A frame's latents and pixels do not depend on how many frames share the call (an odd
    batch, a single frame, a short last pass): a row's episode must not depend on the env's
    size or on which rows reset with it."""
    vae = tiny_model.vae
    frames = torch.randint(0, 256, (20, vae.config.image_size, vae.config.image_size, 3))
    frames = frames.to(torch.uint8)
    with torch.inference_mode(), torch.autocast("cpu", dtype, enabled=dtype != torch.float32):
        latents, pixels = vae.encode(frames), vae.decode(vae.encode(frames))
        for start, n in [(0, 1), (5, 1), (0, 3), (2, 5), (0, 9), (1, 19)]:
            assert torch.equal(vae.encode(frames[start : start + n]), latents[start : start + n])
            decoded = vae.decode(latents[start : start + n])
            assert torch.equal(decoded, pixels[start : start + n])


def test_same_seed_same_latents_other_seed_differs(tiny_model):
    _, rollout = make_engine(tiny_model, 2)
    actions = random_actions(rollout, 2, 3)
    modality = torch.tensor([0, 1])
    a, _ = roll(tiny_model, [1, 2], actions, modality)
    b, _ = roll(tiny_model, [1, 2], actions, modality)
    c, _ = roll(tiny_model, [1, 3], actions, modality)
    assert torch.equal(a, b)
    assert torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])


def test_generation_ignores_the_global_rng(tiny_model):
    _, rollout = make_engine(tiny_model, 1)
    actions = random_actions(rollout, 1, 2)
    modality = torch.zeros(1, dtype=torch.long)
    torch.manual_seed(0)
    a, _ = roll(tiny_model, [4], actions, modality, context_t=0.1)
    torch.manual_seed(123)
    b, _ = roll(tiny_model, [4], actions, modality, context_t=0.1)
    assert torch.equal(a, b)


def test_bf16_autocast_runs_and_stays_close(tiny_model):
    _, rollout = make_engine(tiny_model, 2)
    actions = random_actions(rollout, 2, 3)
    modality = torch.tensor([0, 1])
    ref, _ = roll(tiny_model, [0, 1], actions, modality)
    with precision("cpu", torch.bfloat16):
        low, _ = roll(tiny_model, [0, 1], actions, modality)
        again, _ = roll(tiny_model, [0, 1], actions, modality)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert torch.equal(low, again)
    assert (low - ref).abs().mean() < 0.1 * ref.abs().mean()


# --- sampler -----------------------------------------------------------------------------------


class CountingDiT(torch.nn.Module):
    """Wraps a DiT and counts forwards, for cost contracts."""

    def __init__(self, dit):
        super().__init__()
        self.dit, self.config, self.calls = dit, dit.config, 0
        self.step_anchors = dit.step_anchors

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.dit(*args, **kwargs)

    def write(self, *args, **kwargs):  # the cache-write pass: a forward too
        self.calls += 1
        return self.dit.write(*args, **kwargs)


@pytest.mark.parametrize(("nfe", "scale", "calls"), [(1, 1.0, 2), (3, 1.0, 4), (3, 2.0, 7)])
def test_forwards_per_chunk(tiny_model, nfe, scale, calls):
    """nfe denoiser calls (doubled with guidance) plus one cache-write pass; no guidance is free."""
    counting = CountingDiT(tiny_model.dit)
    cache = KVCache.for_model(tiny_model.dit.config, tiny_model.dit.rope, 1)
    config = dataclasses.replace(tiny_model.config.sampler, nfe=nfe, guidance_scale=scale)
    rollout = ChunkRollout(counting, config)
    with torch.no_grad():
        rollout.generate(
            cache,
            torch.zeros(1, *rollout.action_shape),
            torch.zeros(1, dtype=torch.long),
            RowGenerators([0]),
        )
    assert counting.calls == calls


def test_guidance_changes_the_chunk(tiny_model):
    _, rollout = make_engine(tiny_model, 1)
    actions = random_actions(rollout, 1, 2)
    modality = torch.zeros(1, dtype=torch.long)
    plain, _ = roll(tiny_model, [0], actions, modality)
    guided, _ = roll(tiny_model, [0], actions, modality, guidance_scale=3.0)
    assert not torch.allclose(plain, guided)


def test_bad_inputs_raise_clear_errors(tiny_model):
    cache, rollout = make_engine(tiny_model, 2)
    gens = RowGenerators([0, 1])
    good = torch.zeros(2, *rollout.action_shape)
    modality = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="actions must be"):
        rollout.generate(cache, good[:1], modality, gens)
    with pytest.raises(ValueError, match="modality must be"):
        rollout.generate(cache, good, modality.float(), gens)
    with pytest.raises(ValueError, match="one generator per row"):
        rollout.generate(cache, good, modality, RowGenerators([0]))
    assert int(cache.chunks.sum()) == 0  # nothing was committed


# --- cache row operations -----------------------------------------------------------------------


def filled_cache(model, batch=4, steps=3):
    cache, rollout = make_engine(model, batch)
    actions = random_actions(rollout, batch, steps)
    gens = RowGenerators(list(range(batch)))
    modality = torch.zeros(batch, dtype=torch.long)
    with torch.no_grad():
        for a in actions:
            rollout.generate(cache, a, modality, gens)
    return cache, rollout, gens, modality


def snapshot(cache: KVCache) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in cache.state_dict().items()}


def rows_equal(state, other, rows) -> bool:
    def pick(name, t):
        return t[:, rows] if name in ("k", "v") else t[rows]

    return all(torch.equal(pick(n, state[n]), pick(n, other[n])) for n in state)


def test_reset_changes_only_those_rows(tiny_model):
    cache, *_ = filled_cache(tiny_model)
    before = snapshot(cache)
    cache.reset([1, 3])
    after = cache.state_dict()
    assert rows_equal(before, after, [0, 2])
    assert cache.chunks.tolist() == [3, 0, 3, 0]
    assert not cache.valid[[1, 3]][:, cache.layout.sink].any()
    fresh = KVCache.for_model(tiny_model.dit.config, tiny_model.dit.rope, 4)
    assert rows_equal(fresh.state_dict(), after, [1, 3])


def test_reset_row_then_generate_matches_a_fresh_row(tiny_model):
    """A reset row behaves exactly like a brand-new episode while the others go on."""
    cache, rollout, gens, modality = filled_cache(tiny_model, batch=2)
    cache.reset([1])
    gens.seed([42], env_idx=[1])
    actions = random_actions(rollout, 2, 3, seed=9)
    with torch.no_grad():
        got = torch.stack([rollout.generate(cache, a, modality, gens) for a in actions], 1)
    fresh, _ = roll(tiny_model, [42], actions[:, 1:], modality[1:])
    assert torch.equal(got[1:], fresh)


def test_clone_and_select_are_independent(tiny_model):
    cache, rollout, gens, modality = filled_cache(tiny_model, batch=2)
    original = snapshot(cache)
    forked = cache.select([0, 0, 0])  # fork row 0 into three futures
    fork_gens = gens.select([0, 0, 0])
    fork_gens.seed([1, 2, 3])
    with torch.no_grad():
        out = rollout.generate(
            forked, torch.randn(3, *rollout.action_shape), modality[:1].expand(3), fork_gens
        )
    assert not torch.equal(out[0], out[1])
    assert rows_equal(original, cache.state_dict(), [0, 1])
    twin = cache.clone()
    twin.reset()
    assert rows_equal(original, cache.state_dict(), [0, 1])


def test_state_dict_round_trip_into_rows(tiny_model):
    cache, *_ = filled_cache(tiny_model, batch=3)
    state = snapshot(cache)
    other = KVCache.for_model(tiny_model.dit.config, tiny_model.dit.rope, 3)
    other.load_state_dict(state)
    assert rows_equal(state, other.state_dict(), [0, 1, 2])
    row = cache.select([2]).state_dict()
    other.reset()
    other.load_state_dict(row, env_idx=[0])
    assert torch.equal(other.k[:, 0], cache.k[:, 2]) and int(other.chunks[0]) == 3
    with pytest.raises(ValueError, match="expected"):
        other.load_state_dict(row, env_idx=[0, 1])


def test_row_independence_holds_in_bf16(tiny_model):
    _, rollout = make_engine(tiny_model, 8)
    actions = random_actions(rollout, 8, 3, seed=8)
    modality = torch.tensor([2, 1, 0, 0, 1, 2, 0, 1])
    with precision("cpu", torch.bfloat16):
        batch, _ = roll(tiny_model, list(range(8)), actions, modality)
        alone, _ = roll(tiny_model, [0], actions[:, :1], modality[:1])
    assert torch.equal(batch[:1], alone)


def test_action_path_rows_have_their_bits_alone_in_bf16():
    """The action projectors and experts map each row alone: CPU bf16 GEMMs round a row whose
    frames share a block of rows with another row's otherwise (a batched matmul did, for some
    batch sizes), so a row's frames depended on the batch it stepped in. The shipped city
    walk's weights showed it 4 times in these 100 draws before the fix."""
    from gym_worldmodel.envs.worlds import get_world, load_model
    from gym_worldmodel.models.actions import expert_residuals

    dit = load_model(get_world("citywalk"), None).dit
    experts = [block.expert for block in dit.blocks]
    gen = torch.Generator().manual_seed(0)
    for _ in range(100):
        for b in (2, 3, 5, 8, 13):
            actions = torch.rand(b, 3, dit.config.action_dim, generator=gen) * 2 - 1
            modality = torch.randint(0, len(dit.config.modalities), (b,), generator=gen)
            with torch.no_grad(), precision("cpu", torch.bfloat16):
                batch = expert_residuals(experts, dit.actions(actions, modality), modality)
                for r in range(b):
                    one = slice(r, r + 1)
                    alone = dit.actions(actions[one], modality[one])
                    alone = expert_residuals(experts, alone, modality[one])
                    assert all(torch.equal(x[one], y) for x, y in zip(batch, alone, strict=True))


@pytest.mark.parametrize("context_t", [0.0, 0.05])
def test_recompute_baseline_gives_the_cached_chunks(tiny_model, context_t):
    """The no-cache baseline samples the same chunks as the cache, past several ring wraps."""
    _, rollout = make_engine(tiny_model, 2)
    actions = random_actions(rollout, 2, 9, seed=4)
    modality = torch.tensor([1, 2])
    cached, _ = roll(tiny_model, [3, 4], actions, modality, context_t=context_t)
    config = dataclasses.replace(tiny_model.config.sampler, context_t=context_t)
    baseline, gens = RecomputeRollout(tiny_model.dit, config), RowGenerators([3, 4])
    with torch.no_grad():
        recomputed = torch.stack([baseline.generate(a, modality, gens) for a in actions], 1)
    assert len(baseline.history) == 1 + tiny_model.dit.config.depth * 2
    assert (recomputed - cached).abs().max() <= 1e-4


def test_unmasked_fast_path_only_when_every_read_slot_is_valid(tiny_model):
    cache, rollout = make_engine(tiny_model, 2)
    window = cache.layout.window_chunks
    gens, modality = RowGenerators([0, 1]), torch.zeros(2, dtype=torch.long)
    actions = torch.zeros(2, *rollout.action_shape)
    with torch.no_grad():
        for _ in range(window + 1):
            assert cache.attn_mask is not None
            rollout.generate(cache, actions, modality, gens)
    assert cache.attn_mask is None
    cache.set_memory(torch.tensor([[True], [False]]))  # row 1 holds no memory: masked
    assert cache.attn_mask is not None and not cache.attn_mask[1].all()
    cache.set_memory(torch.tensor([[True], [True]]))  # every row's memory slot is valid
    assert cache.attn_mask is None
    cache.reset([1])  # row 1 is empty again: its slots must be masked
    assert cache.attn_mask is not None and not cache.attn_mask[1].all()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"nfe": "2"}, r"SamplerConfig\.nfe must be an int >= 1, got '2'"),
        ({"nfe": True}, r"SamplerConfig\.nfe must be an int >= 1, got True"),
        ({"shift": "3"}, r"SamplerConfig\.shift must be a number"),
        ({"memory_t": "0"}, r"SamplerConfig\.memory_t must be a number"),
        ({"nfe": 10**9}, r"SamplerConfig\.nfe must be at most 1000 .*got 1000000000"),
        ({"guidance_scale": -1e308}, r"guidance_scale must be in \[0, 100.0\]"),
        ({"guidance_scale": 101}, r"guidance_scale must be in \[0, 100.0\]"),
        ({"memory_guidance": -0.5}, r"memory_guidance must be in \[0, 100.0\]"),
        ({"memory_guidance": float("nan")}, r"memory_guidance must be"),
        ({"memory_guidance": "2"}, r"SamplerConfig\.memory_guidance must be a number"),
    ],
)
def test_sampler_settings_of_the_wrong_type_are_named(tiny_model, changes, match):
    with pytest.raises(ValueError, match=match):
        tiny_model.with_sampler(**changes)


def test_numpy_numbers_in_a_config_are_stored_as_python_numbers(tiny_model, tmp_path):
    import numpy as np

    from gym_worldmodel import hub

    model = tiny_model.with_sampler(nfe=np.int64(2), shift=np.float32(2.5))
    assert type(model.config.sampler.nfe) is int and type(model.config.sampler.shift) is float
    assert hub.from_pretrained(hub.save_pretrained(model, tmp_path / "m")).config == model.config
    dit = dataclasses.replace(model.config.dit, mlp_ratio=np.float32(4.0), sink_chunks=np.int64(1))
    config = dataclasses.replace(model.config, dit=dit, fps=np.int64(16))
    assert json.dumps(config.to_dict())  # every field a Python number
    assert type(config.fps) is int and type(config.dit.mlp_ratio) is float

"""The remedies for codebook collapse in VectorQuantizer: rotation trick against
vector_quantize_pytorch's ``rotate_to``, k-means init and dead-code restart by behaviour, and
identical codebooks on every DDP rank (2 gloo processes)."""
from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from vqexplore import VQModel
from vqexplore.errors import ConfigError
from vqexplore.quantizers import VectorQuantizer, kmeans, nearest_code, rotate_to


def _clustered_tokens(n: int, centers: int, dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(centers, dim, generator=g) * 3
    return means[torch.randint(centers, (n,), generator=g)] + 0.05 * torch.randn(n, dim, generator=g)


def _as_map(tokens: torch.Tensor, side: int = 8) -> torch.Tensor:
    """(N, D) -> (N / side^2, D, side, side), the quantizer's input layout."""
    d = tokens.shape[1]
    return tokens.reshape(-1, side, side, d).permute(0, 3, 1, 2).contiguous()


# -- rotation trick -------------------------------------------------------------------------

def test_rotate_to_matches_vector_quantize_pytorch_forward_and_gradient():
    from vector_quantize_pytorch.vector_quantize_pytorch import rotate_to as reference

    torch.manual_seed(0)
    src = torch.randn(64, 16, dtype=torch.float64, requires_grad=True)
    tgt = torch.randn(64, 16, dtype=torch.float64)
    ours = rotate_to(src, tgt)
    src_ref = src.detach().clone().requires_grad_(True)
    theirs = reference(src_ref, tgt)
    assert torch.allclose(ours, theirs, atol=1e-12)
    assert torch.allclose(ours, tgt, atol=1e-10)  # forward value is the code itself
    upstream = torch.randn_like(ours)
    (ours * upstream).sum().backward()
    (theirs * upstream).sum().backward()
    assert torch.allclose(src.grad, src_ref.grad, atol=1e-12)
    # ... and it is not the straight-through gradient (which would equal ``upstream``)
    assert not torch.allclose(src.grad, upstream, atol=1e-3)


@pytest.mark.parametrize("l2_norm", [False, True])
def test_rotation_trick_forward_equals_plain_vq(l2_norm):
    torch.manual_seed(1)
    plain = VectorQuantizer(64, 8, l2_norm=l2_norm)
    rotated = VectorQuantizer(64, 8, l2_norm=l2_norm, rotation_trick=True)
    rotated.load_state_dict(plain.state_dict())
    with torch.no_grad():
        plain.embedding.normal_()
        rotated.embedding.copy_(plain.embedding)
    z = torch.randn(2, 8, 4, 4, requires_grad=True)
    a, b = plain(z), rotated(z)
    assert torch.equal(a.indices, b.indices)
    assert torch.allclose(a.quantized, b.quantized, atol=1e-5)
    assert a.losses.keys() == b.losses.keys()
    for key in a.losses:
        assert torch.allclose(a.losses[key], b.losses[key])
    # The gradient reaching the encoder differs from straight-through.
    g1 = torch.autograd.grad(a.quantized.pow(2).sum(), z)[0]
    g2 = torch.autograd.grad(b.quantized.pow(2).sum(), z)[0]
    assert not torch.allclose(g1, g2, atol=1e-4)
    rotated.eval()
    assert torch.equal(rotated(z).quantized, plain.eval()(z).quantized)


# -- k-means init ---------------------------------------------------------------------------

def test_kmeans_finds_well_separated_clusters():
    tokens = _clustered_tokens(2000, 16, 8)
    centroids = kmeans(tokens, 16, 20, generator=torch.Generator().manual_seed(0))
    used = torch.bincount(nearest_code(tokens, centroids), minlength=16)
    assert (used > 0).sum() >= 14  # Lloyd from random starts may merge a pair, rarely more
    spherical = kmeans(tokens, 16, 5, spherical=True, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(spherical.norm(dim=1), torch.ones(16), atol=1e-5)


@pytest.mark.parametrize("ema_update", [False, True])
def test_kmeans_init_runs_once_on_the_first_training_batch(ema_update):
    torch.manual_seed(0)
    vq = VectorQuantizer(32, 8, kmeans_init=True, ema_update=ema_update)
    tokens = _clustered_tokens(1024, 32, 8)
    before = vq.codebook_vectors().detach().clone()
    vq.eval()
    vq(_as_map(tokens))  # evaluation never initialises
    assert torch.equal(vq.codebook_vectors(), before) and not bool(vq.kmeans_done)
    vq.train()
    out = vq(_as_map(tokens))
    assert bool(vq.kmeans_done)
    assert out.indices.unique().numel() >= 28  # the plain init would put all tokens on ~1 code
    after_init = vq.codebook_vectors().detach().clone()
    vq(_as_map(_clustered_tokens(1024, 32, 8, seed=5)))
    if not ema_update:  # a second batch does not re-run k-means
        assert torch.equal(vq.codebook_vectors(), after_init)
    state = vq.state_dict()
    assert "kmeans_done" in state  # saved: a resumed run does not initialise again


# -- dead-code restart ----------------------------------------------------------------------

def test_dead_code_restart_revives_a_collapsed_codebook():
    """A codebook collapsed onto one code (all codes far from the data but one) ends, after
    restarts, with at most a few dead codes; without restarts it stays collapsed."""
    torch.manual_seed(0)
    k, d = 64, 8
    tokens = _clustered_tokens(512, 64, d)

    def collapsed(threshold):
        vq = VectorQuantizer(k, d, dead_code_threshold=threshold)
        with torch.no_grad():
            vq.embedding.fill_(100.0)               # far from every token...
            vq.embedding[0] = tokens.mean(0)        # ...but one, which wins them all
        return vq

    for vq, restarts in ((collapsed(0.0), False), (collapsed(0.05), True)):
        opt = torch.optim.Adam(vq.parameters(), lr=1e-2)
        for step in range(60):
            batch = tokens[torch.randperm(512, generator=torch.Generator().manual_seed(step))]
            out = vq(_as_map(batch))
            loss = sum(out.losses.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
        if restarts:
            # The usage EMA follows the assignments: from 0 it sums to 512 tokens x (1 - 0.99^60)
            # plus the restarts' grace bumps (2 x threshold each); never updated, it would hold
            # the bumps alone and the restarts would collapse into one re-init at the first step.
            assigned = 512 * (1 - 0.99 ** 60)
            assert assigned - 1 < float(vq.usage_ema.sum()) < assigned + 10, float(vq.usage_ema.sum())
        vq.eval()
        used = torch.bincount(vq(_as_map(tokens)).indices.flatten(), minlength=k)
        dead = int((used == 0).sum())
        if restarts:
            assert dead <= 4, dead
        else:
            assert dead >= k - 2, dead


def _restart_scene(k: int = 6, threshold: float = 1.0, decay: float = 0.9):
    """One live code (0) on a tight cluster of 32 tokens, k - 1 codes far away; every code
    starts with the grace a k-means init gives (usage EMA = 2 x threshold)."""
    tokens = 0.01 * torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    vq = VectorQuantizer(k, 2, dead_code_threshold=threshold, ema_decay=decay)
    with torch.no_grad():
        vq.embedding.fill_(50.0)
        vq.embedding[0] = 0.0
        vq.usage_ema.fill_(2 * threshold)
    return vq, _as_map(tokens.repeat(2, 1), side=8)


def test_usage_ema_is_the_decayed_assignment_count():
    """usage <- d * usage + (1 - d) * tokens assigned this step, code by code."""
    vq, batch = _restart_scene()
    d, expected = vq.ema_decay, vq.usage_ema.clone()
    for _ in range(3):
        counts = torch.bincount(vq(batch).indices.flatten(), minlength=vq.codebook_size).float()
        expected = d * expected + (1 - d) * counts
        assert torch.allclose(vq.usage_ema, expected, atol=1e-6), (vq.usage_ema, expected)
    assert float(vq.usage_ema[0]) > 2 * vq.dead_code_threshold  # the live code's usage grew


def test_a_code_that_wins_nothing_is_restarted_after_its_grace_and_only_then():
    """Grace 2T decays below T after ceil(ln 2 / -ln d) steps (7 at d = 0.9): the far codes stay
    put for 7 steps, move onto the data in the 8th; the live code is never touched; a
    restarted code that still wins nothing is restarted again one grace period later."""
    vq, batch = _restart_scene()
    grace = math.ceil(math.log(2) / -math.log(vq.ema_decay))
    assert grace == 7
    history = []
    for _ in range(3 * (grace + 1)):
        vq(batch)
        history.append(vq.embedding.detach().clone())
    live, far = [h[0] for h in history], [h[1:] for h in history]
    assert all(torch.equal(v, live[0]) for v in live), "the code in use was restarted"
    for step in range(grace):
        assert torch.equal(far[step], torch.full_like(far[step], 50.0)), f"restarted at step {step + 1}"
    restarted = ~(far[grace] == 50.0).all(1)
    assert restarted.all(), f"step {grace + 1}: only {int(restarted.sum())} of the far codes restarted"
    assert far[grace].abs().max() < 0.1  # onto tokens of the batch
    # Restarted codes sitting on the cluster share its tokens; those that win none die again.
    counts = torch.bincount(vq(batch).indices.flatten(), minlength=vq.codebook_size)
    changes = [i for i in range(grace + 1, len(history)) if not torch.equal(history[i][1:], history[i - 1][1:])]
    if (counts[1:] == 0).any():
        assert changes, "a restarted code that wins nothing was never restarted again"
        assert changes[0] >= 2 * grace, changes  # not before its new grace has run out
    assert int(vq.restart_steps) == len(history) + 1


def test_restart_moves_at_most_one_code_per_token_and_grants_grace():
    """More dead codes than tokens: as many codes as tokens move, each onto a distinct token, and
    each starts at twice the threshold."""
    torch.manual_seed(0)
    tokens = torch.randn(64, 4)
    vq = VectorQuantizer(256, 4, dead_code_threshold=0.5, ema_decay=0.99)
    before = vq.embedding.detach().clone()
    out = vq(_as_map(tokens, side=8))
    moved = (vq.embedding.detach() != before).any(1)
    assert int(moved.sum()) == 64
    same = (vq.embedding.detach()[moved][:, None, :] == tokens[None]).all(-1)  # (moved codes, tokens)
    assert (same.sum(1) == 1).all() and same.any(0).all()  # each on one token, every token used once
    # the restarted codes got 2T before this step's EMA update; the others stayed at 0
    counts = torch.bincount(out.indices.flatten(), minlength=256).float()
    expected = 0.99 * torch.where(moved, 2 * 0.5, 0.0) + 0.01 * counts
    assert torch.allclose(vq.usage_ema, expected, atol=1e-6)


def test_restart_threshold_is_strict():
    """Dead means usage < threshold: with decay 0.5 a code that wins nothing goes 2T -> T (still
    alive, exactly at the threshold) -> T/2, and is restarted at the third step, not the second."""
    vq, batch = _restart_scene(decay=0.5)
    moved_at = []
    for step in range(1, 4):
        before = vq.embedding.detach().clone()
        vq(batch)
        if not torch.equal(vq.embedding.detach()[1:], before[1:]):
            moved_at.append(step)
    assert moved_at == [3], moved_at


def test_a_single_dead_code_is_restarted():
    """One live code and one that wins nothing: the lone dead code is restarted too."""
    vq, batch = _restart_scene(k=2, decay=0.5)
    for _ in range(3):
        vq(batch)
    assert float(vq.embedding[1].detach().abs().max()) < 0.1  # moved from 50 onto the data


def test_dead_code_restart_is_reproducible_and_saved():
    tokens = _clustered_tokens(256, 16, 8)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        vq = VectorQuantizer(128, 8, dead_code_threshold=0.5)
        for _ in range(3):
            vq(_as_map(tokens))
        runs.append(vq.state_dict())
    assert runs[0].keys() == runs[1].keys() >= {"usage_ema", "restart_steps"}
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key]), key
    assert int(runs[0]["restart_steps"]) == 3


def test_remedy_keys_are_vq_only_and_checked():
    model = VQModel(quantizer="vq", codebook_size=64, code_dim=8, hidden_dim=8, kmeans_init=True,
                    dead_code_threshold=0.01, rotation_trick=True)
    assert model.config["dead_code_threshold"] == 0.01 and model.quantizer.rotation_trick
    with pytest.raises(ConfigError, match="dead_code_threshold"):
        VQModel(quantizer="simvq", codebook_size=64, code_dim=8, hidden_dim=8, dead_code_threshold=0.1)
    with pytest.raises(ConfigError, match="kmeans_init"):
        VQModel(quantizer="fsq", levels=[4, 4], hidden_dim=8, kmeans_init=True)
    with pytest.raises(ConfigError, match="dead_code_threshold"):
        VQModel(quantizer="vq", hidden_dim=8, dead_code_threshold=-1.0)


# -- DDP: the same codebook on every rank -----------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(rank)  # different initial codebooks and data on each rank
        # decay 0.5: the grace period after the init is ~1.4 steps, so restarts start at once
        vq = VectorQuantizer(256, 8, kmeans_init=True, dead_code_threshold=0.2, ema_decay=0.5)
        snapshots, batches = [], []
        for step in range(4):
            tokens = _clustered_tokens(128, 8, 8, seed=100 * rank + step)
            vq(_as_map(tokens))
            snapshots.append(vq.codebook_vectors().detach().clone())
            batches.append(tokens)
        results[rank] = (torch.stack(snapshots), vq.usage_ema.clone(), torch.stack(batches))
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_ranks_hold_the_same_codebook_after_init_and_restarts():
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_ddp_worker, args=(2, _free_port(), results), nprocs=2, join=True)
    (codes0, usage0, batches0), (codes1, usage1, _) = results[0], results[1]
    assert torch.equal(codes0, codes1)
    assert torch.equal(usage0, usage1)
    # Restarts really happened after the init (the codebook changed between steps)...
    assert not torch.equal(codes0[1], codes0[3])
    # ...and every restarted code is a token of rank 0's batch of that step (broadcast from rank 0).
    for step in range(1, 4):
        changed = codes0[step][(codes0[step] != codes0[step - 1]).any(1)]
        assert (changed[:, None, :] == batches0[step][None]).all(-1).any(1).all(), step

"""The remedies for codebook collapse in VectorQuantizer: rotation trick against
vector_quantize_pytorch's ``rotate_to``, k-means init and dead-code restart by behaviour, and
identical codebooks on every DDP rank (2 gloo processes)."""
from __future__ import annotations

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
        vq.eval()
        used = torch.bincount(vq(_as_map(tokens)).indices.flatten(), minlength=k)
        dead = int((used == 0).sum())
        if restarts:
            assert dead <= 4, dead
        else:
            assert dead >= k - 2, dead


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
        snapshots = []
        for step in range(4):
            tokens = _clustered_tokens(128, 8, 8, seed=100 * rank + step)
            vq(_as_map(tokens))
            snapshots.append(vq.codebook_vectors().detach().clone())
        results[rank] = (torch.stack(snapshots), vq.usage_ema.clone())
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_ranks_hold_the_same_codebook_after_init_and_restarts():
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_ddp_worker, args=(2, _free_port(), results), nprocs=2, join=True)
    (codes0, usage0), (codes1, usage1) = results[0], results[1]
    assert torch.equal(codes0, codes1)
    assert torch.equal(usage0, usage1)
    # Restarts really happened after the init (the codebook changed between steps).
    assert not torch.equal(codes0[1], codes0[3])

"""LFQ and BSQ: the oracle is vector_quantize_pytorch's LFQ and LFQ(spherical=True) (values, ids,
each loss term, input gradients); the chunked entropy terms equal the direct N x K formula; the
DDP codebook entropy equals the single-process one (2 gloo processes)."""
from __future__ import annotations

import math
import os

import pytest

from helpers.servers import free_port
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from vector_quantize_pytorch import LFQ as ReferenceLFQ

from vqexplore.quantizers import BSQ, LFQ
from vqexplore.quantizers.lfq import ENTROPY_EPS, bit_entropy, group_codebook_entropy, hypercube_entropy

CASES = [  # (codebook size, batch, dtype)
    (2, 3, torch.float64), (16, 4, torch.float64), (1024, 2, torch.float32), (1024, 5, torch.float64),
    (2 ** 14, 4, torch.float64), (2 ** 14, 2, torch.float32),
]


def _reference(k: int, spherical: bool, dtype, **weights) -> ReferenceLFQ:
    ref = ReferenceLFQ(dim=int(math.log2(k)), codebook_size=k, spherical=spherical,
                       force_quantization_f32=dtype != torch.float64, **weights)
    return ref.to(dtype)


@pytest.mark.parametrize("cls", [LFQ, BSQ])
@pytest.mark.parametrize("k, batch, dtype", CASES, ids=lambda v: str(v).replace("torch.", ""))
def test_values_ids_losses_and_gradients_equal_vector_quantize_pytorch(cls, k, batch, dtype):
    torch.manual_seed(k + batch)
    d = int(math.log2(k))
    # small inputs keep the softmax over codes soft (the entropy terms are not saturated)
    z = (torch.randn(batch, d, 8, 8, dtype=dtype) * 0.05).requires_grad_()
    z_ref = z.detach().clone().requires_grad_()
    weights = dict(entropy_loss_weight=0.1, diversity_gamma=0.7)
    ours = cls(k, commitment_weight=0.25, chunk_size=37, **weights).train()
    ref = _reference(k, cls is BSQ, dtype, commitment_loss_weight=0.25, **weights).train()

    out = ours(z)
    (q_ref, ids_ref, aux_ref), parts = ref(z_ref, return_loss_breakdown=True)
    tight = dtype == torch.float64
    close = dict(rtol=1e-10, atol=1e-12) if tight else dict(rtol=1e-4, atol=1e-6)
    assert torch.equal(out.indices, ids_ref)
    torch.testing.assert_close(out.quantized, q_ref, rtol=0, atol=1e-15 if tight else 1e-6)
    commitment = parts.commitment * 0.25
    entropy = 0.1 * (parts.per_sample_entropy - 0.7 * parts.batch_entropy)
    torch.testing.assert_close(out.losses["commitment"], commitment, **close)
    torch.testing.assert_close(out.losses["entropy"], entropy, **close)
    torch.testing.assert_close(sum(out.losses.values()), aux_ref, **close)

    weight = torch.randn_like(q_ref)
    (grad,) = torch.autograd.grad((out.quantized * weight).sum() + sum(out.losses.values()), z)
    (grad_ref,) = torch.autograd.grad((q_ref * weight).sum() + aux_ref, z_ref)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-9 if tight else 1e-3, atol=1e-12 if tight else 1e-5)

    # evaluation: the exact codes, no entropy term
    ours.eval(), ref.eval()
    with torch.no_grad():
        out, (q_ref, ids_ref, _) = ours(z), ref(z)
    assert torch.equal(out.quantized, q_ref) and torch.equal(out.indices, ids_ref)
    assert set(out.losses) == {"commitment"}


def _direct_entropy(tokens, scale, temperature):
    """vector_quantize_pytorch's formula with the full (N, K) matrix, plain autograd."""
    d = tokens.shape[1]
    ids = torch.arange(2 ** d)
    codes = ((ids[:, None] >> torch.arange(d - 1, -1, -1)) & 1).to(tokens.dtype) * 2 - 1
    p = (2 / temperature * tokens @ (scale * codes).t()).softmax(1)
    avg = p.mean(0)
    sample = -(p * p.clamp_min(ENTROPY_EPS).log()).sum(1).mean()
    return sample, -(avg * avg.clamp_min(ENTROPY_EPS).log()).sum()


@pytest.mark.parametrize("chunk_size", [1, 7, 100, None])
@pytest.mark.parametrize("d, scale, temperature", [(4, 1.0, 0.01), (10, 1.0, 0.05), (12, 12 ** -0.5, 0.01)])
def test_chunked_entropy_equals_the_direct_form(chunk_size, d, scale, temperature):
    torch.manual_seed(d)
    tokens = (torch.randn(150, d, dtype=torch.float64) * 0.05).requires_grad_()
    sample, codebook = hypercube_entropy(tokens, scale, temperature, chunk_size)
    ref_sample, ref_codebook = _direct_entropy(tokens, scale, temperature)
    torch.testing.assert_close(sample, ref_sample, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(codebook, ref_codebook, rtol=1e-12, atol=1e-12)
    for a, b in ((0.3, -1.7), (1.0, 0.0), (0.0, 1.0)):  # each term's gradient, and a mix
        (grad,) = torch.autograd.grad(a * sample + b * codebook, tokens, retain_graph=True)
        (grad_ref,) = torch.autograd.grad(a * ref_sample + b * ref_codebook, tokens, retain_graph=True)
        torch.testing.assert_close(grad, grad_ref, rtol=1e-9, atol=1e-12)


def test_chunked_entropy_gradcheck_tiny():
    torch.manual_seed(0)
    tokens = (torch.randn(6, 3, dtype=torch.float64) * 0.3).requires_grad_()
    # temperature 1: no probability near the 1e-5 floor, where the clamp makes a kink
    assert torch.autograd.gradcheck(lambda t: hypercube_entropy(t, 1.0, 1.0, chunk_size=4), (tokens,))


@pytest.mark.parametrize("cls", [LFQ, BSQ])
def test_bit_order_codebook_and_lookup(cls):
    q = cls(64).eval()
    d = q.code_dim
    assert (q.codebook_size, d) == (64, 6)
    z = torch.full((1, d, 1, 2), -1.0)
    z[0, 0, 0, 0] = 1.0   # only channel 0 positive: the most significant bit
    z[0, d - 1, 0, 1] = 1.0  # only the last channel positive: id 1
    out = q(z)
    assert out.indices.tolist() == [[[2 ** (d - 1), 1]]]
    book = q.codebook_vectors()
    assert book.shape == (64, d) and len(torch.unique(book, dim=0)) == 64
    assert torch.equal(q.lookup(out.indices), out.quantized)
    assert torch.equal(book[out.indices.flatten()], out.quantized.permute(0, 2, 3, 1).reshape(-1, d))
    norms = book.norm(dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, 1.0 if cls is BSQ else math.sqrt(d)))
    # the codes live where the (normalised, for BSQ) tokens are quantized
    tokens = torch.randn(5, d) * 3
    assert torch.equal(q.to_code_space(tokens), F.normalize(tokens, dim=1) if cls is BSQ else tokens)


@pytest.mark.parametrize("cls", [LFQ, BSQ])
@pytest.mark.parametrize("size", [0, 1, 12, 1000, -4])
def test_codebook_size_must_be_a_power_of_two(cls, size):
    with pytest.raises(ValueError, match="codebook_size must be a power of two"):
        cls(size)


def test_entropy_weight_zero_drops_the_term_and_straight_through_gradient():
    q = LFQ(256, entropy_loss_weight=0.0, commitment_weight=0.0).train()
    z = torch.randn(2, 8, 4, 4, requires_grad=True)
    out = q(z)
    assert "entropy" not in out.losses
    (grad,) = torch.autograd.grad(out.quantized.sum(), z)
    assert torch.equal(grad, torch.ones_like(z))


# -- DDP: the codebook entropy is over every rank's tokens ------------------------------------

def _entropy_loss(layer, tokens):
    sample, codebook = hypercube_entropy(layer(tokens), 1.0, 0.05, chunk_size=5)
    return sample - 0.7 * codebook, codebook


def _ddp_worker(rank: int, world: int, port: int, tokens: torch.Tensor, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        layer = torch.nn.Linear(6, 6, dtype=torch.float64)
        shard = tokens.chunk(world)[rank]
        loss, codebook = _entropy_loss(layer, shard)
        loss.backward()
        grad = layer.weight.grad.clone()
        torch.distributed.all_reduce(grad)  # what DDP does: the mean of the ranks' gradients
        results[rank] = (codebook.detach(), grad / world)
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_codebook_entropy_and_gradient_equal_one_process_on_the_whole_batch():
    tokens = torch.randn(40, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.1
    results = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(2, free_port(), tokens, results), nprocs=2, join=True)
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 6, dtype=torch.float64)
    loss, codebook = _entropy_loss(layer, tokens)
    loss.backward()
    for rank in (0, 1):
        torch.testing.assert_close(results[rank][0], codebook.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(results[rank][1], layer.weight.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cls", [LFQ, BSQ])
def test_bfloat16_autocast_changes_nothing(cls):
    # the trainer's bf16 precision runs the model under autocast; logits of 2 t.c / 0.01 in
    # bfloat16 would be off by whole units, so the quantizer turns autocast off inside
    torch.manual_seed(0)
    q, z = cls(1024).train(), torch.randn(2, 10, 4, 4)
    ref = q(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z)
    assert torch.equal(out.indices, ref.indices) and torch.equal(out.quantized, ref.quantized)
    for name, value in ref.losses.items():
        assert torch.equal(out.losses[name], value), name


# -- the factorised form (entropy_group_bits): exact where it is exact, bounded where it is not ---

def _direct_unclamped(tokens, scale, temperature):
    """The entropies of the full (N, 2^d) softmax without vector_quantize_pytorch's clamp, and
    the full softmax itself (to marginalise)."""
    d = tokens.shape[1]
    ids = torch.arange(2 ** d)
    codes = ((ids[:, None] >> torch.arange(d - 1, -1, -1)) & 1).to(tokens.dtype) * 2 - 1
    logp = (2 / temperature * tokens @ (scale * codes).t()).log_softmax(1)
    p = logp.exp()
    return -(p * logp).sum(1).mean(), p


def test_factorised_sample_entropy_by_hand():
    # 2 bits, scale 1, T = 0.01: bit i is 1 with probability sigmoid(400 t_i). t = 0 gives two fair
    # bits (2 log 2); t_1 = ln(3) / 400 gives p = 3/4 on bit 1.
    t = torch.tensor([[0.0, 0.0], [0.0, math.log(3) / 400]], dtype=torch.float64)
    h34 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    expected = (2 * math.log(2) + math.log(2) + h34) / 2
    sample, _ = hypercube_entropy(t, 1.0, 0.01, group_bits=2)
    assert abs(float(sample) - expected) < 1e-14
    # no code below the 1e-5 clamp here, so it equals vector_quantize_pytorch's (clamped) form too
    exact_sample, _ = hypercube_entropy(t, 1.0, 0.01)
    assert abs(float(exact_sample) - expected) < 1e-14


@pytest.mark.parametrize("d, scale, temperature, spread", [(4, 1.0, 0.01, 0.05), (10, 1.0, 0.05, 0.05),
                                                           (12, 12 ** -0.5, 0.01, 0.05), (9, 1.0, 0.01, 3.0)])
def test_factorised_terms_equal_the_direct_form_values_and_gradients(d, scale, temperature, spread):
    # spread 3.0: saturated bits (|x| up to ~1e4), where a naive softplus(x) - x sigmoid(x) cancels
    torch.manual_seed(d)
    tokens = (torch.randn(150, d, dtype=torch.float64) * spread).requires_grad_()
    ref_sample, p = _direct_unclamped(tokens, scale, temperature)
    sample, codebook_joint = hypercube_entropy(tokens, scale, temperature, chunk_size=37, group_bits=d)
    _, exact_codebook = hypercube_entropy(tokens, scale, temperature, chunk_size=37)
    torch.testing.assert_close(sample, ref_sample, rtol=1e-10, atol=1e-12)
    # g = d: one group, the joint (exact) codebook entropy
    torch.testing.assert_close(codebook_joint, exact_codebook, rtol=1e-12, atol=1e-12)
    # g < d: each group's term is the entropy of the batch average of the full softmax marginalised
    # onto that group's channels (channel 0 is the most significant bit, as the code ids)
    for g in (1, 3, d - 1):
        expected = 0.0
        for start in range(0, d, g):
            width = min(g, d - start)
            marginal = p.reshape(-1, 2 ** start, 2 ** width, 2 ** (d - start - width)).sum((1, 3))
            avg = marginal.mean(0)
            expected = expected - (avg * avg.clamp_min(ENTROPY_EPS).log()).sum()
        grouped = group_codebook_entropy(tokens, scale, temperature, g, chunk_size=23)
        torch.testing.assert_close(grouped, expected, rtol=1e-10, atol=1e-12)
        (grad,) = torch.autograd.grad(grouped - 0.3 * sample, tokens, retain_graph=True)
        (grad_ref,) = torch.autograd.grad(expected - 0.3 * ref_sample, tokens, retain_graph=True)
        torch.testing.assert_close(grad, grad_ref, rtol=1e-8, atol=1e-11)


def test_factorised_codebook_entropy_bounded_on_a_trained_encoders_tokens():
    # Realistic tokens: the shipped BSQ demo's encoder on a training batch of the photo corpus (its
    # batch of 32 crops at 64 px, 8,192 tokens of 12 bits). The grouped entropy is an upper bound
    # of the joint one (subadditivity; for nested groupings, the finer is the larger). The demo was
    # trained with the two-groups-of-6-bits form, which drives each group's marginal towards uniform
    # and is blind to dependence between the groups: here it reads 23% above the joint entropy (21%
    # on the same model trained without any entropy term, 34% at entropy weight 0.1); the bound
    # below is 30%.
    from vqexplore.data.corpus import PhotoCorpus
    from vqexplore.models import VQModel

    model = VQModel.from_pretrained("checkpoints/bsq-4096").eval()
    data = PhotoCorpus("train", 64, seed=0)
    with torch.no_grad():
        z = model.encode_latents(torch.stack([data[i] for i in range(32)]))
    q = model.quantizer
    tokens = q.to_code_space(z.permute(0, 2, 3, 1).reshape(-1, q.code_dim)).double()
    scale, temperature = q.code_scale, q.entropy_temperature
    sample, exact = hypercube_entropy(tokens, scale, temperature)
    grouped = {g: float(group_codebook_entropy(tokens, scale, temperature, g)) for g in (1, 2, 3, 4, 6, 12)}
    assert abs(grouped[12] - float(exact)) < 1e-9
    for fine, coarse in ((1, 2), (2, 4), (4, 12), (1, 3), (3, 6), (2, 6), (6, 12)):
        assert grouped[fine] >= grouped[coarse] - 1e-9, (fine, coarse, grouped)
    assert float(exact) <= grouped[6] <= 1.30 * float(exact), (float(exact), grouped)
    # the per-sample term differs from the clamped exact one only by the clamp: within 1% here
    factorised = bit_entropy(tokens, scale, temperature)
    assert abs(float(factorised) - float(sample)) <= 0.01 * float(sample)


@pytest.mark.parametrize("cls", [LFQ, BSQ])
def test_factorised_entropy_trains_the_encoder(cls):
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(3, 10, 1)
    q = cls(1024, entropy_group_bits=5, diversity_gamma=0.7).train()
    out = q(layer(torch.randn(2, 3, 8, 8)))
    assert set(out.losses) == {"entropy", "commitment"}
    out.losses["entropy"].backward()
    assert layer.weight.grad is not None and bool(layer.weight.grad.abs().sum() > 0)
    assert torch.isfinite(layer.weight.grad).all()
    with pytest.raises(ValueError, match="entropy_group_bits must be in"):
        cls(1024, entropy_group_bits=11)


def test_entropy_forms_script_reports_on_the_shipped_bsq_demo():
    """scripts/entropy_forms.py (the README's numbers) runs on the BSQ demo, and refuses a VQ checkpoint
    in one line."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    run = [sys.executable, str(root / "scripts" / "entropy_forms.py"), "--crops", "4"]
    out = subprocess.run(run + ["--groups", "6"], capture_output=True, text=True, timeout=300, cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "1,024 tokens of 12 bits" in out.stdout and "groups of 6 bits" in out.stdout, out.stdout
    bad = subprocess.run(run + ["--ckpt", "checkpoints/vq-4096"], capture_output=True, text=True, timeout=300, cwd=root)
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error:") and "Traceback" not in bad.stderr, bad.stderr

"""IBQ: the chunked soft one-hot equals the direct (N, K) formulation of the official code in value,
ids, losses and gradients (float64), its gradient path equals the straightforward formula, every
code receives a gradient, and evaluation takes the argmax without the soft path."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vqexplore.quantizers import IBQ
from vqexplore.quantizers.search import max_inner_product, soft_one_hot_gradient


def _direct_ibq(z, codebook, beta):
    """The official formulation (SEED-Voken's IndexPropagationQuantize) with the full (N, K)
    softmax and plain autograd; beta on the commitment term, as vqexplore's IBQ documents."""
    tokens = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    soft = (tokens @ codebook.t()).softmax(1)
    idx = soft.argmax(1)
    hard = F.one_hot(idx, codebook.shape[0]).to(z.dtype)
    z_q = (hard - soft.detach() + soft) @ codebook
    chosen = hard @ codebook
    losses = {"quantization": F.mse_loss(z_q, tokens), "commitment": beta * F.mse_loss(tokens, chosen.detach()),
              "codebook": F.mse_loss(chosen, tokens.detach())}
    return z_q, idx, losses


@pytest.mark.parametrize("k, d, chunk_size", [(5, 3, 1), (64, 4, 7), (1000, 16, None), (4096, 8, 333)])
def test_chunked_ibq_equals_the_direct_formulation_float64(k, d, chunk_size):
    torch.manual_seed(k)
    ibq = IBQ(k, d, commitment_weight=0.3, chunk_size=chunk_size).double().train()
    z = torch.randn(3, d, 5, 6, dtype=torch.float64, requires_grad=True)
    out = ibq(z)
    codebook = ibq.embedding.detach().clone().requires_grad_()
    z_ref = z.detach().clone().requires_grad_()
    z_q, idx, losses = _direct_ibq(z_ref, codebook, 0.3)

    q = out.quantized.permute(0, 2, 3, 1).reshape(-1, d)
    assert torch.equal(out.indices.flatten(), idx)
    torch.testing.assert_close(q, z_q, rtol=0, atol=1e-14)
    assert set(out.losses) == set(losses)
    for name in losses:
        torch.testing.assert_close(out.losses[name], losses[name], rtol=1e-12, atol=1e-14)
    weight = torch.randn_like(z_q)
    grads = torch.autograd.grad((q * weight).sum() + sum(out.losses.values()), [z, ibq.embedding])
    grads_ref = torch.autograd.grad((z_q * weight).sum() + sum(losses.values()), [z_ref, codebook])
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-12)


def _straightforward_grads(tokens, codebook, weight):
    """Gradients of IBQ's soft - sg[soft], soft = softmax(t E^T) sg[E], written out with the full
    (N, K) softmax and plain autograd, in float64."""
    t = tokens.detach().double().requires_grad_()
    e = codebook.detach().double().requires_grad_()
    soft = (t @ e.t()).softmax(1) @ e.detach()
    delta = soft - soft.detach()
    assert torch.equal(delta, torch.zeros_like(delta))
    return torch.autograd.grad((delta * weight.double()).sum(), [t, e])


@pytest.mark.parametrize("dtype, n, k, d, chunk_size", [
    (torch.float64, 37, 5, 3, 1), (torch.float64, 200, 1000, 16, 33), (torch.float64, 64, 4096, 8, None),
    (torch.float32, 300, 2048, 64, 70), (torch.float32, 100, 512, 8, None)])
def test_soft_one_hot_gradient_equals_the_straightforward_formula(dtype, n, k, d, chunk_size):
    # the path that never computes soft in the forward, against the straightforward formula
    torch.manual_seed(n + k)
    tokens = (torch.randn(n, d, dtype=dtype) * 2).requires_grad_()
    codebook = torch.randn(k, d, dtype=dtype, requires_grad=True)
    weight = torch.randn(n, d, dtype=dtype)
    delta, idx = soft_one_hot_gradient(tokens, codebook, chunk_size)
    assert torch.equal(delta, torch.zeros_like(delta))
    assert torch.equal(idx, (tokens @ codebook.t()).argmax(1))
    grads = torch.autograd.grad((delta * weight).sum(), [tokens, codebook])
    grads_ref = _straightforward_grads(tokens, codebook, weight)
    # float32: within 1e-5 of the largest entry (the float32 straightforward formula itself is
    # 4.6e-6 and 3.2e-6 off the float64 one at K = 2048, D = 64)
    for g, g_ref in zip(grads, grads_ref):
        tol = 1e-10 * float(g_ref.abs().max()) if dtype == torch.float64 else 1e-5 * float(g_ref.abs().max())
        assert float((g.double() - g_ref).abs().max()) <= tol
    # tokens alone (a frozen codebook) and the codebook alone
    (g_t,) = torch.autograd.grad((soft_one_hot_gradient(tokens, codebook.detach(), chunk_size)[0] * weight).sum(),
                                 tokens)
    (g_e,) = torch.autograd.grad((soft_one_hot_gradient(tokens.detach(), codebook, chunk_size)[0] * weight).sum(),
                                 codebook)
    assert torch.equal(g_t, grads[0]) and torch.equal(g_e, grads[1])


def test_every_code_gets_a_gradient_unlike_plain_vq():
    torch.manual_seed(0)
    ibq = IBQ(512, 8).train()
    z = torch.randn(2, 8, 4, 4)
    out = ibq(z)
    (out.quantized.square().mean() + sum(out.losses.values())).backward()
    assert int(out.indices.unique().numel()) < 512
    assert bool((ibq.embedding.grad.abs().sum(1) > 0).all())  # also the codes nobody chose


def test_eval_takes_the_argmax_and_returns_the_codes():
    torch.manual_seed(1)
    ibq = IBQ(300, 6, chunk_size=50)
    z = torch.randn(2, 6, 3, 5)
    with torch.no_grad():
        out = ibq.eval()(z)
    tokens = z.permute(0, 2, 3, 1).reshape(-1, 6)
    assert torch.equal(out.indices.flatten(), (tokens @ ibq.embedding.t()).argmax(1))
    assert torch.equal(out.quantized, ibq.lookup(out.indices))
    assert torch.equal(max_inner_product(tokens, ibq.embedding, chunk_size=7), out.indices.flatten())
    # with gradients on, the training path returns the same codes
    assert torch.equal(ibq.train()(z).quantized, out.quantized)


def test_bfloat16_autocast_changes_nothing():
    torch.manual_seed(0)
    ibq, z = IBQ(2048, 16).train(), torch.randn(2, 16, 4, 4)
    ref = ibq(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ibq(z)
    assert torch.equal(out.indices, ref.indices) and torch.equal(out.quantized, ref.quantized)
    for name, value in ref.losses.items():
        assert torch.equal(out.losses[name], value), name


def test_chunk_rows_default_per_device():
    from vqexplore.quantizers.search import chunk_rows

    assert chunk_rows(16384, None) == chunk_rows(16384, None, "cpu") == 256      # 4M elements
    assert chunk_rows(16384, None, torch.device("cuda")) == 1024               # 16M elements
    assert chunk_rows(16, None, "cuda") == 1 << 20 and chunk_rows(1 << 20, None) == 256  # at least 256 rows
    assert chunk_rows(16384, 7, "cuda") == 7

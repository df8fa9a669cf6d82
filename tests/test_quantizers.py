"""Quantizers against their definitions: brute-force search, autograd, formulas, the
reference FSQ implementation."""
import pytest
import torch
import torch.nn.functional as F

from vqexplore.quantizers import FSQ, SimVQ, VectorQuantizer, entropy_loss, nearest_code


def _tokens(z):
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


@pytest.mark.parametrize("l2_norm", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000, None])
def test_vq_indices_match_brute_force(l2_norm, chunk_size):
    torch.manual_seed(0)
    vq = VectorQuantizer(97, 16, l2_norm=l2_norm, chunk_size=chunk_size)
    with torch.no_grad():
        vq.embedding.normal_()
    z = torch.randn(3, 16, 5, 7)
    out = vq(z)
    tokens = _tokens(z)
    codebook = vq.embedding
    if l2_norm:
        tokens, codebook = F.normalize(tokens, dim=1), F.normalize(codebook, dim=1)
    expected = torch.cdist(tokens, codebook).argmin(1).view(3, 5, 7)
    assert out.indices.dtype == torch.int64
    assert torch.equal(out.indices, expected)
    assert out.quantized.shape == z.shape
    # the quantized value is the chosen code (forward value of the straight-through output)
    assert torch.allclose(_tokens(out.quantized), codebook[expected.flatten()], atol=1e-6)


def test_nearest_code_chunk_boundaries_large():
    torch.manual_seed(1)
    tokens, codebook = torch.randn(1000, 8), torch.randn(300, 8)
    expected = torch.cdist(tokens, codebook).argmin(1)
    for chunk in (1, 999, 1000, 1001, 333):
        assert torch.equal(nearest_code(tokens, codebook, chunk), expected)


def test_nearest_code_takes_any_float_dtype_and_searches_in_float32():
    """bf16 / float64 tokens or codes are searched in float32, the answer of the float32 search."""
    torch.manual_seed(2)
    tokens, codebook = torch.randn(200, 8), torch.randn(50, 8)
    for dtype in (torch.bfloat16, torch.float64):
        t, c = tokens.to(dtype), codebook.to(dtype)
        assert torch.equal(nearest_code(t, codebook), nearest_code(t.float(), codebook))
        assert torch.equal(nearest_code(tokens, c), nearest_code(tokens, c.float()))


def test_chunk_rows_bounds_the_distance_chunk():
    """Tokens per chunk: the caller's chunk_size (at least 1); else ~4M distances on the CPU (16 MB),
    ~16M on CUDA, never fewer than 256 rows, so memory is chunk x K whatever the token count."""
    from vqexplore.quantizers.search import chunk_rows

    assert chunk_rows(16384, 7) == 7 and chunk_rows(16384, 0) == 1
    assert chunk_rows(16384, None) == 256 and chunk_rows(512, None) == 8192 and chunk_rows(1 << 20, None) == 256
    assert chunk_rows(16384, None, "cpu") == 256 and chunk_rows(16384, None, torch.device("cpu")) == 256
    assert chunk_rows(16384, None, "cuda") == 1024 and chunk_rows(1000, None, "cuda") == (1 << 24) // 1000
    assert chunk_rows(0, None) == 1 << 22


def test_vq_losses_and_straight_through_gradient_reaches_encoder():
    torch.manual_seed(0)
    encoder = torch.nn.Conv2d(3, 8, 1)
    vq = VectorQuantizer(32, 8)
    x = torch.randn(2, 3, 4, 4)
    z = encoder(x)
    out = vq(z)
    q = vq.embedding[out.indices.flatten()]
    assert torch.allclose(out.losses["codebook"], F.mse_loss(q, _tokens(z).detach()))
    assert torch.allclose(out.losses["commitment"], 0.25 * F.mse_loss(_tokens(z), q.detach()))
    (out.quantized.square().sum() + sum(out.losses.values())).backward()
    assert encoder.weight.grad is not None and encoder.weight.grad.abs().sum() > 0
    assert vq.embedding.grad is not None and vq.embedding.grad.abs().sum() > 0


def test_straight_through_is_identity_gradient():
    vq = VectorQuantizer(16, 4)
    z = torch.randn(1, 4, 2, 2, requires_grad=True)
    out = vq(z)
    out.quantized.sum().backward()
    assert torch.allclose(z.grad, torch.ones_like(z))


def test_ema_update_matches_formula():
    torch.manual_seed(0)
    k, d, decay, eps = 8, 4, 0.9, 1e-5
    vq = VectorQuantizer(k, d, ema_update=True, ema_decay=decay, ema_eps=eps)
    assert "embedding" not in dict(vq.named_parameters())
    size0, sum0 = vq.ema_cluster_size.clone(), vq.ema_embed_sum.clone()
    z = torch.randn(2, d, 3, 3)
    vq.train()
    out = vq(z)
    assert set(out.losses) == {"commitment"}
    tokens, idx = _tokens(z), out.indices.flatten()
    onehot = F.one_hot(idx, k).float()
    size = decay * size0 + (1 - decay) * onehot.sum(0)
    total = decay * sum0 + (1 - decay) * onehot.t() @ tokens
    n = size.sum()
    smoothed = (size + eps) / (n + k * eps) * n
    assert torch.allclose(vq.ema_cluster_size, size)
    assert torch.allclose(vq.ema_embed_sum, total, atol=1e-6)
    assert torch.allclose(vq.embedding, total / smoothed[:, None], atol=1e-6)
    # eval mode never moves the codebook
    before = vq.embedding.clone()
    vq.eval()
    vq(z)
    assert torch.equal(before, vq.embedding)


def _naive_entropy(tokens, codebook, temperature):
    logits = -torch.cdist(tokens, codebook).square() / temperature
    p = logits.softmax(1)
    sample = -(p * logits.log_softmax(1)).sum(1).mean()
    avg = p.mean(0)
    return sample + (avg * avg.clamp_min(1e-12).log()).sum()


@pytest.mark.parametrize("chunk_size", [3, 50, None])
def test_chunked_entropy_value_and_gradients_match_autograd(chunk_size):
    torch.manual_seed(0)
    tokens = torch.randn(37, 6, dtype=torch.float64).mul(0.3).requires_grad_()
    codebook = torch.randn(11, 6, dtype=torch.float64).mul(0.3).requires_grad_()
    ref = _naive_entropy(tokens, codebook, 0.5)
    g_tok, g_code = torch.autograd.grad(ref, (tokens, codebook))
    from vqexplore.quantizers.search import _ChunkedEntropy, chunk_rows as _chunk_rows
    ours, idx = _ChunkedEntropy.apply(tokens, codebook, 0.5, _chunk_rows(11, chunk_size))
    assert torch.equal(idx, torch.cdist(tokens, codebook).argmin(1))
    o_tok, o_code = torch.autograd.grad(ours, (tokens, codebook))
    assert torch.allclose(ours, ref, atol=1e-10)
    assert torch.allclose(o_tok, g_tok, atol=1e-9)
    assert torch.allclose(o_code, g_code, atol=1e-9)


def test_entropy_loss_float32_entry_point_and_gradcheck():
    torch.manual_seed(0)
    tokens = torch.randn(20, 4, requires_grad=True)
    codebook = torch.randn(9, 4, requires_grad=True)
    loss = entropy_loss(tokens, codebook, temperature=1.0, chunk_size=6)
    assert torch.allclose(loss, _naive_entropy(tokens, codebook, 1.0), atol=1e-5)
    from vqexplore.quantizers.search import _ChunkedEntropy
    t64, c64 = tokens.detach().double().requires_grad_(), codebook.detach().double().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: _ChunkedEntropy.apply(a, b, 0.7, 5)[0], (t64, c64))


def test_vq_entropy_loss_is_weighted_and_only_in_training():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 4, entropy_reg=0.5, entropy_temperature=0.1)
    z = torch.randn(2, 4, 3, 3)
    out = vq.train()(z)
    expected = 0.5 * _naive_entropy(_tokens(z), vq.embedding, 0.1)
    assert torch.allclose(out.losses["entropy"], expected, atol=1e-5)
    assert torch.equal(out.indices.flatten(), torch.cdist(_tokens(z), vq.embedding).argmin(1))
    assert "entropy" not in vq.eval()(z).losses


def test_simvq_codebook_frozen_projection_trains():
    torch.manual_seed(0)
    sim = SimVQ(64, 8)
    assert [n for n, _ in sim.named_parameters()] == ["projection.weight"]
    assert "frozen_codebook" in sim.state_dict()
    assert abs(sim.frozen_codebook.std().item() - 8 ** -0.5) < 0.05
    frozen = sim.frozen_codebook.clone()
    opt = torch.optim.Adam(sim.parameters(), lr=1e-2)
    w0 = sim.projection.weight.detach().clone()
    for _ in range(3):
        out = sim(torch.randn(2, 8, 4, 4))
        loss = sum(out.losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(frozen, sim.frozen_codebook)
    assert not torch.equal(w0, sim.projection.weight)
    cb = sim.codebook_vectors()
    assert torch.allclose(cb, sim.frozen_codebook @ sim.projection.weight.t())
    z = torch.randn(1, 8, 2, 2)
    out = sim(z)
    expected = torch.cdist(_tokens(z), cb).argmin(1)
    assert torch.equal(out.indices.flatten(), expected)


@pytest.mark.parametrize("levels", [[8, 8, 8], [8, 5, 5, 5], [8, 8, 8, 6, 5], [3, 4]])
def test_fsq_matches_vector_quantize_pytorch(levels):
    from vector_quantize_pytorch import FSQ as RefFSQ

    torch.manual_seed(0)
    ours = FSQ(levels)
    ref = RefFSQ(levels=levels)
    z = torch.randn(2, len(levels), 6, 5) * 2
    out = ours(z)
    ref_q, ref_idx = ref(z)
    assert torch.allclose(out.quantized, ref_q, atol=1e-6)
    assert torch.equal(out.indices, ref_idx.long())
    # implicit codebook: id <-> code bijection, same order as the reference
    ids = torch.arange(ours.codebook_size)
    codes = ours.codebook_vectors()
    assert codes.shape == (ours.codebook_size, len(levels))
    assert torch.allclose(codes, ref.implicit_codebook, atol=1e-6)
    assert torch.equal(ours.codes_to_indices(codes), ids)
    assert torch.unique(codes, dim=0).shape[0] == ours.codebook_size


def test_fsq_gradient_is_straight_through():
    fsq = FSQ([5, 5])
    z = torch.randn(1, 2, 3, 3, requires_grad=True)
    fsq(z).quantized.sum().backward()
    assert z.grad is not None and (z.grad > 0).all()


def test_fsq_rejects_bad_levels():
    with pytest.raises(ValueError):
        FSQ([8, 1])


def test_search_and_entropy_stay_float32_under_bf16_autocast():
    """The trainer's precision: bf16 runs the model under autocast; the nearest-code search and the
    entropy term must not drop to bf16 (codes closer than bf16 resolves would be confused)."""
    from vqexplore.quantizers import entropy_and_nearest

    torch.manual_seed(0)
    tokens, codebook = torch.randn(512, 16), torch.randn(300, 16)
    codebook[1] = codebook[0] + 1e-3  # a near tie that bf16 cannot resolve
    tokens[:8] = codebook[0] + 1e-4
    exact = nearest_code(tokens, codebook)
    ent = entropy_and_nearest(tokens, codebook)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(nearest_code(tokens, codebook), exact)
        ent_bf16 = entropy_and_nearest(tokens, codebook)
    assert torch.equal(ent_bf16[1], ent[1]) and ent_bf16[0].dtype == torch.float32
    assert torch.equal(ent_bf16[0], ent[0])

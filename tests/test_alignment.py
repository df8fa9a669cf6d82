"""Aligned codes (vqexplore.alignment): Hungarian matching recovers a permuted, moved codebook;
token agreement after alignment; following codes through a run's checkpoints."""
import numpy as np
import pytest
import torch

from vqexplore import VQModel
from vqexplore.alignment import (MAX_EXACT, align_codebooks, align_models, aligned_usage_over_steps,
                                 token_agreement)
from vqexplore.data import validation_batch


def _codebook(k=64, d=8, seed=0):
    return np.random.default_rng(seed).normal(size=(k, d)).astype(np.float32)


def test_permuted_codebook_is_recovered():
    a = _codebook()
    perm = np.random.default_rng(1).permutation(64)
    b = np.empty_like(a)
    b[perm] = a + 0.01 * np.random.default_rng(2).normal(size=a.shape)  # code i of A is code perm[i] of B
    al = align_codebooks(a, b)
    assert al.mapping.tolist() == perm.tolist() and al.exact.all()
    assert al.num_persisting == 64 and al.same_id == int((perm == np.arange(64)).sum())
    assert (al.distance < 0.1).all() and al.threshold > 0.5
    # Codes that moved further than the codebook's spacing do not persist.
    far = b.copy()
    far[perm[:5]] += 10.0
    al = align_codebooks(a, far)
    assert al.num_persisting == 59 and not al.persists[:5].any()


def test_live_codes_only_and_cap():
    a, b = _codebook(), _codebook()
    b[:] = a
    counts_a = np.zeros(64, np.int64)
    counts_a[[1, 2, 3]] = [5, 1, 9]
    counts_b = np.zeros(64, np.int64)
    counts_b[[1, 2, 50]] = [2, 2, 2]
    al = align_codebooks(a, b, counts_a=counts_a, counts_b=counts_b)
    assert al.exact.sum() == 3 and al.live_a.sum() == 3 and al.live_b.sum() == 3
    assert al.mapping[1] == 1 and al.mapping[2] == 2  # identical vectors
    assert al.persists[[1, 2]].all() and not al.persists[3]  # code 3's match is code 50, far away
    assert al.mapping[10] == 10  # dead code: mapped to its nearest code (itself)
    assert "Hungarian assignment on 3 x 3 codes (live codes)" in al.method
    # Above max_exact live codes, only the most used ones enter the assignment.
    al = align_codebooks(a, b, counts_a=np.arange(64), counts_b=np.arange(64), max_exact=10)
    assert al.exact.sum() == 10 and al.exact[54:].all() and "most used" in al.method
    assert (al.mapping == np.arange(64)).all()
    pairs = al.pairs(np.arange(64), np.arange(64))
    assert pairs["count A"].iloc[0] == 63 and list(pairs.columns)[:2] == ["code A", "code B"]
    with pytest.raises(ValueError, match="code dimensions"):
        align_codebooks(a, a[:, :4])


def test_token_agreement():
    a = np.array([[0, 1], [2, 2]])
    assert token_agreement(a, a) == 1.0
    assert token_agreement(a, a + 1) == 0.0
    assert token_agreement(a, a + 1, np.array([1, 2, 3])) == 1.0
    with pytest.raises(ValueError, match="shape"):
        token_agreement(a, a[:1])


def _permuted_copy(model, perm):
    """The same model with its codebook rows permuted: code i becomes code perm[i]."""
    other = VQModel(**model.config)
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        other.quantizer.embedding[torch.from_numpy(perm)] = model.quantizer.embedding
    return other.eval()


def test_align_models_on_real_tokens():
    torch.manual_seed(0)
    model = VQModel(quantizer="vq", codebook_size=32, code_dim=4, hidden_dim=8, n_resblocks=1).eval()
    with torch.no_grad():
        model.quantizer.embedding.normal_(0, 0.3)
    perm = np.random.default_rng(0).permutation(32)
    images = validation_batch(n=8, size=32)
    al, info = align_models(model, _permuted_copy(model, perm), images)
    assert info["agreement_aligned"] == 1.0
    assert info["agreement_raw"] < 0.5
    live = info["counts_a"] > 0
    assert (al.mapping[live] == perm[live]).all() and al.persists[live].all()
    assert al.num_persisting == int(live.sum())


def test_aligned_usage_follows_codes_through_a_run(tmp_path):
    torch.manual_seed(0)
    model = VQModel(quantizer="vq", codebook_size=32, code_dim=4, hidden_dim=8, n_resblocks=1).eval()
    with torch.no_grad():
        model.quantizer.embedding.normal_(0, 0.3)
    rng = np.random.default_rng(3)
    current, perms = model, []
    for step in (10, 20, 30):
        current.save_pretrained(tmp_path / "checkpoints" / f"step-{step:08d}")
        perm = rng.permutation(32)
        perms.append(perm)
        current = _permuted_copy(current, perm)
    images = validation_batch(n=8, size=32)
    aligned = aligned_usage_over_steps(tmp_path, images)
    assert aligned.steps.tolist() == [10, 20, 30]
    # Every followed code keeps its count although its id changes at every step.
    assert (aligned.counts == aligned.counts[:, :1]).all()
    assert (aligned.agreement == 1.0).all()
    used = aligned.counts[:, 0] > 0
    assert aligned.persisting.tolist() == [int(used.sum())] * 2
    assert aligned.moved >= int(used.sum()) - 2
    # Each column of ids is a permutation: every code is drawn exactly once.
    for s in range(3):
        assert sorted(aligned.ids[:, s].tolist()) == list(range(32))
    with pytest.raises(ValueError, match="at least 2"):
        aligned_usage_over_steps(tmp_path / "checkpoints" / "step-00000010", images)


def test_max_exact_default_is_what_the_docs_say():
    assert MAX_EXACT == 4096

"""The exact and the factorised LFQ/BSQ entropy terms side by side on a real checkpoint's tokens: the
numbers README "LFQ and BSQ: the exact or the factorised entropy" quotes.

    python scripts/entropy_forms.py                           # checkpoints/bsq-4096, 32 training crops
    python scripts/entropy_forms.py --ckpt DIR --crops 64 --groups 7 2 1

For the tokens of ``--crops`` training crops of the photo corpus (64 px) encoded by the checkpoint:
the codebook entropy H(mean_n p_n) exact (over all 2^d codes) and by groups of g bits, with the
cosine similarity of each one's gradient w.r.t. the tokens to the exact term's; and the per-sample
entropy mean_n H(p_n) with vector_quantize_pytorch's clamp and in closed form.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import vqexplore
from vqexplore.data.corpus import PhotoCorpus
from vqexplore.quantizers.lfq import bit_entropy, group_codebook_entropy, hypercube_entropy
from vqexplore.runlayout import DEMO_CHECKPOINTS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=str(DEMO_CHECKPOINTS / "bsq-4096"),
                   help="an LFQ or BSQ checkpoint (folder or Hub id; default: the BSQ demo)")
    p.add_argument("--crops", type=int, default=32)
    p.add_argument("--groups", type=int, nargs="+", default=[6, 1], help="group sizes g (bits) to compare")
    a = p.parse_args()
    model = vqexplore.load(a.ckpt).eval()
    q = model.quantizer
    if model.quantizer_type not in ("lfq", "bsq"):
        raise SystemExit(f"error: {a.ckpt} is a {model.quantizer_type} tokenizer; this compares LFQ/BSQ entropy forms")
    data = PhotoCorpus("train", 64, seed=0)
    with torch.no_grad():
        z = model.encode_latents(torch.stack([data[i] for i in range(a.crops)]))
    tokens = q.to_code_space(z.permute(0, 2, 3, 1).reshape(-1, q.code_dim)).double()
    scale, temperature = q.code_scale, q.entropy_temperature

    def entropy_and_grad(fn):
        t = tokens.clone().requires_grad_(True)
        value = fn(t)
        return float(value.detach()), torch.autograd.grad(value, t)[0].flatten()

    exact, g_exact = entropy_and_grad(lambda t: hypercube_entropy(t, scale, temperature)[1])
    print(f"{a.ckpt}: {tokens.shape[0]:,} tokens of {q.code_dim} bits ({a.crops} training crops at 64 px)")
    print(f"codebook entropy, exact: {exact:.3f} nats")
    for g in a.groups:
        value, grad = entropy_and_grad(lambda t, g=g: group_codebook_entropy(t, scale, temperature, g))
        cos = float(F.cosine_similarity(grad, g_exact, dim=0))
        print(f"codebook entropy, groups of {g} bits: {value:.3f} nats ({100 * (value / exact - 1):+.0f}%), "
              f"gradient cosine similarity to the exact one {cos:.2f}")
    with torch.no_grad():
        clamped = float(hypercube_entropy(tokens, scale, temperature)[0])
        closed = float(bit_entropy(tokens, scale, temperature))
    print(f"per-sample entropy: {clamped:.4f} nats clamped (vector_quantize_pytorch), {closed:.4f} in closed form "
          f"({abs(closed - clamped) / clamped:.2%} apart)")


if __name__ == "__main__":
    main()

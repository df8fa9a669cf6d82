"""Tests of vqexplore.metrics: PSNR/SSIM against scikit-image, LPIPS and rFID code paths with
random backbones (no pretrained weights exist offline), the offline error path, FID math against
a scipy reference, codebook statistics and evaluate()."""
from __future__ import annotations

import json
import math
import socket

import numpy as np
import pytest
import scipy.linalg
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn

import vqexplore
from vqexplore import metrics as M
from vqexplore.errors import MissingWeightsError

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to download fails at once (and loudly) instead of hanging offline."""
    def refuse(*args, **kwargs):
        raise AssertionError("metrics code tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    import torch_fidelity.feature_extractor_inceptionv3 as inception_module

    monkeypatch.setattr(inception_module, "load_state_dict_from_url", refuse)


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch, no_network):
    """TORCH_HOME pointing at an empty folder: no cached weights at all."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home"


def _structured_images(batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Gradients, stripes, flat patches and a disc: SSIM's edge cases (flat windows, edges)."""
    g = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, height).view(-1, 1).expand(height, width)
    xs = torch.linspace(0, 1, width).view(1, -1).expand(height, width)
    images = []
    for _ in range(batch):
        f = float(torch.randint(2, 9, (1,), generator=g))
        gradient = (xs * 0.7 + ys * 0.3)
        stripes = ((torch.sin(2 * math.pi * f * xs) > 0).float())
        disc = (((xs - 0.5) ** 2 + (ys - 0.5) ** 2) < 0.1).float()
        flat = torch.full_like(xs, float(torch.rand(1, generator=g)))
        image = torch.stack([gradient, 0.5 * stripes + 0.5 * disc, flat])
        images.append(image)
    return torch.stack(images)


def _distort(x: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    blurred = nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    return (0.8 * blurred + 0.2 * x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(1, 2, 0).numpy()


# -- PSNR / SSIM ----------------------------------------------------------------------------------

def test_to_unit_maps_and_clamps():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 1.2])
    assert torch.equal(M.to_unit(x), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))


@pytest.mark.parametrize("shape", [(3, 3, 16, 16), (2, 3, 31, 20), (2, 3, 64, 64)])
def test_psnr_matches_skimage(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g)
    y = (x + 0.1 * torch.randn(shape, generator=g)).clamp(0, 1)
    ours = M.psnr(x, y)
    assert ours.shape == (shape[0],)
    for i in range(shape[0]):
        ref = peak_signal_noise_ratio(_hwc(x[i]), _hwc(y[i]), data_range=1)
        assert abs(float(ours[i]) - ref) < 1e-4


def test_psnr_of_identical_images_is_capped_at_100db():
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(M.psnr(x, x), torch.full((2,), 100.0, dtype=torch.float64))
    assert torch.allclose(M.psnr(x * 255, x * 255, data_range=255.0), torch.full((2,), 100.0, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["random", "structured"])
@pytest.mark.parametrize("shape", [(2, 3, 7, 7), (2, 3, 16, 16), (2, 3, 31, 20), (2, 3, 20, 45), (2, 3, 64, 64)])
def test_ssim_matches_skimage(kind, shape):
    b, c, h, w = shape
    x = torch.rand(shape, generator=torch.Generator().manual_seed(h * w)) if kind == "random" \
        else _structured_images(b, h, w, seed=h)
    y = _distort(x, seed=w)
    x, y = x.float(), y.float()  # float32 inputs, as a model produces them
    ours = M.ssim(x, y)
    assert ours.shape == (b,)
    for i in range(b):
        # skimage computes in float32 for float32 inputs: the contract is 1e-4 against that...
        ref32 = structural_similarity(_hwc(x[i]), _hwc(y[i]), channel_axis=-1, data_range=1, win_size=7)
        assert abs(float(ours[i]) - ref32) <= 1e-4
        # ...and against skimage's exact float64 computation we agree to rounding error.
        ref64 = structural_similarity(_hwc(x[i]).astype(np.float64), _hwc(y[i]).astype(np.float64),
                                      channel_axis=-1, data_range=1, win_size=7)
        assert abs(float(ours[i]) - ref64) <= 1e-10


def test_ssim_other_window_and_range_match_skimage():
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 255
    y = (x + 20 * torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)).clamp(0, 255)
    ours = M.ssim(x, y, data_range=255.0, win_size=11)
    for i in range(2):
        ref = structural_similarity(_hwc(x[i]), _hwc(y[i]), channel_axis=-1, data_range=255, win_size=11)
        assert abs(float(ours[i]) - ref) <= 1e-10


def test_ssim_of_identical_images_is_one_and_bad_inputs_are_refused():
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(M.ssim(x, x), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 7x7"):
        M.ssim(torch.rand(1, 3, 6, 16), torch.rand(1, 3, 6, 16))
    with pytest.raises(ValueError, match="odd"):
        M.ssim(x, x, win_size=8)
    with pytest.raises(ValueError, match="same shape"):
        M.ssim(x, x[:1])


# -- weights: offline error path -------------------------------------------------------------------

def test_lpips_without_weights_raises_missing_weights_offline(empty_torch_home):
    with pytest.raises(MissingWeightsError) as info:
        M.LPIPS()
    message = str(info.value)
    assert ALEXNET_FILE in message and str(empty_torch_home) in message and "weights_path" in message
    with pytest.raises(MissingWeightsError, match="does not exist"):
        M.LPIPS(weights_path=empty_torch_home / "nowhere.pth")


def test_rfid_without_weights_raises_missing_weights_offline(empty_torch_home):
    with pytest.raises(MissingWeightsError) as info:
        M.RFID()
    message = str(info.value)
    assert INCEPTION_FILE in message and str(empty_torch_home) in message and "weights_path" in message
    with pytest.raises(MissingWeightsError, match="does not exist"):
        M.RFID(weights_path=empty_torch_home / "nowhere.pth")


def test_weights_status_reports_missing_files(empty_torch_home):
    status = M.weights_status()
    assert set(status) == {"lpips", "rfid"}
    assert ALEXNET_FILE in status["lpips"] and INCEPTION_FILE in status["rfid"]


def test_corrupt_weights_file_is_a_clear_error(tmp_path, no_network):
    bad = tmp_path / ALEXNET_FILE
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(MissingWeightsError, match="download it again"):
        M.LPIPS(weights_path=bad)


# -- LPIPS -----------------------------------------------------------------------------------------

def test_lpips_random_backbone_distances():
    torch.manual_seed(0)
    metric = M.LPIPS(pretrained_backbone=False)
    x, y = torch.rand(3, 3, 64, 64), torch.rand(3, 3, 64, 64)
    same, different = metric(x, x), metric(x, y)
    assert same.shape == different.shape == (3,)
    assert torch.allclose(same, torch.zeros(3), atol=1e-7)
    assert (different > 0).all()
    with pytest.raises(ValueError, match="at least 31x31"):
        metric(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    metric.train()
    assert not metric.training and not metric.net.training  # a metric never enters train mode
    assert not any(p.requires_grad for p in metric.parameters())


def test_lpips_loads_backbone_from_hub_cache_and_weights_path(empty_torch_home):
    import torchvision

    # A stand-in for alexnet-owt-7be5be79.pth (the real one cannot be downloaded here): random
    # tensors under torchvision's AlexNet key names (read off a meta-device model, which costs
    # nothing), saved in the legacy (non-zip) format like the 2017 original. The 220 MB of
    # classifier weights are left out: LPIPS uses only `features`.
    with torch.device("meta"):
        names_and_shapes = {k: v.shape for k, v in torchvision.models.alexnet().state_dict().items()}
    torch.manual_seed(0)
    state = {k: torch.randn(shape) for k, shape in names_and_shapes.items() if k.startswith("features.")}
    checkpoints = empty_torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(state, checkpoints / ALEXNET_FILE, _use_new_zipfile_serialization=False)
    assert M.weights_status()["lpips"] is None
    for metric in (M.LPIPS(), M.LPIPS(weights_path=checkpoints / ALEXNET_FILE)):
        trunk = dict(metric.net.net.named_parameters())
        assert len(trunk) == len(state) == 10  # 5 convs, weight and bias each, all loaded
        # lpips' slices keep torchvision's feature indices: slice1.0 = features.0, slice5.10 = features.10
        assert torch.equal(trunk["slice1.0.weight"], state["features.0.weight"])
        assert torch.equal(trunk["slice5.10.bias"], state["features.10.bias"])
        x = torch.rand(2, 3, 32, 32)
        assert torch.allclose(metric(x, x), torch.zeros(2), atol=1e-7)

    del state["features.3.weight"]
    torch.save(state, checkpoints / ALEXNET_FILE)
    with pytest.raises(MissingWeightsError, match="features.3.weight"):
        M.LPIPS()


# -- rFID ------------------------------------------------------------------------------------------

class TinyFeatures(nn.Module):
    """A small random conv net: (B, 3, H, W) in [0, 1] -> (B, 12) features."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 12, 3, stride=2), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.net(x)


def _frechet_reference(real: np.ndarray, fake: np.ndarray) -> float:
    """FID as in the original TTUR / pytorch-fid code: ||mu1-mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2))."""
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_rfid_custom_extractor_matches_scipy_reference():
    torch.manual_seed(0)
    extractor = TinyFeatures()
    real = torch.rand(120, 3, 16, 16)
    fake = (real * 0.7 + 0.3 * torch.rand(120, 3, 16, 16)) ** 2
    metric = M.RFID(feature_extractor=extractor)
    for start in range(0, 120, 50):  # streaming, with a ragged last batch
        metric.update(real[start:start + 50], fake[start:start + 50])
    ours = metric.compute()
    with torch.no_grad():
        ref = _frechet_reference(extractor(real).double().numpy(), extractor(fake).double().numpy())
    assert ref > 1e-3
    assert ours == pytest.approx(ref, rel=1e-4)

    metric.reset()
    assert metric.num_real == 0
    metric.update(real, real)
    assert metric.compute() == pytest.approx(0.0, abs=1e-6)


def test_rfid_needs_two_images_and_uses_num_features():
    extractor = TinyFeatures()
    extractor.num_features = 12  # used as is, no probing
    metric = M.RFID(feature_extractor=extractor)
    metric.update(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="at least 2"):
        metric.compute()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        metric.update(torch.rand(3, 16, 16), torch.rand(3, 16, 16))


def test_rfid_inception_path_with_local_weights_file(tmp_path, no_network, monkeypatch):
    """The default InceptionV3 path, end to end, on a random stand-in for the weights file."""
    import torch_fidelity.feature_extractor_inceptionv3 as inception_module

    cls = inception_module.FeatureExtractorInceptionV3
    with monkeypatch.context() as patch:  # build a randomly initialised InceptionV3 without any file
        patch.setattr(inception_module, "load_state_dict_from_url", lambda *a, **k: {})
        patch.setattr(cls, "load_state_dict", lambda self, *a, **k: None)
        network = cls("inception-v3-compat", ["2048"])
    torch.manual_seed(0)
    for module in network.modules():  # variance-preserving init, so the 2048-d features are not ~0
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    weights = tmp_path / INCEPTION_FILE
    torch.save(network.state_dict(), weights)

    metric = M.RFID(weights_path=weights)
    real = torch.rand(2, 3, 32, 32)
    metric.update(real, (real + 0.5 * torch.rand(2, 3, 32, 32)).clamp(0, 1))
    assert metric.num_real == metric.num_fake == 2
    # Only the feature path is checked here: compute() on 2048-d features costs seconds on CPU
    # (a 2048x2048 eigendecomposition), and the FID math is the one tested against scipy above.
    real_sum, fake_sum = metric._fid.real_features_sum, metric._fid.fake_features_sum
    assert real_sum.shape == (2048,) and torch.isfinite(real_sum).all() and real_sum.abs().sum() > 0
    assert not torch.allclose(real_sum, fake_sum)


# -- codebook statistics ---------------------------------------------------------------------------

def test_code_counts_and_stats():
    indices = torch.tensor([[0, 0, 1], [1, 3, 0]])  # code 2 and 4 never used
    counts = M.code_counts(indices, 5)
    assert counts.dtype == torch.int64 and counts.tolist() == [3, 2, 0, 1, 0]
    assert M.codebook_usage(counts) == pytest.approx(3 / 5)
    assert M.dead_codes(counts).tolist() == [2, 4]
    probs = np.array([3, 2, 1]) / 6
    entropy = -(probs * np.log(probs)).sum()
    assert M.perplexity(counts) == pytest.approx(math.exp(entropy))
    assert M.normalized_entropy(counts) == pytest.approx(entropy / math.log(5))
    stats = M.codebook_stats(counts)
    assert stats.as_dict() == {"codebook_size": 5, "usage": pytest.approx(0.6),
                               "perplexity": pytest.approx(math.exp(entropy)), "dead_codes": 2,
                               "normalized_entropy": pytest.approx(entropy / math.log(5))}


def test_perplexity_extremes_and_errors():
    uniform = torch.full((16,), 7)
    assert M.perplexity(uniform) == pytest.approx(16) and M.normalized_entropy(uniform) == pytest.approx(1)
    one_code = torch.zeros(16, dtype=torch.long)
    one_code[3] = 100
    assert M.perplexity(one_code) == pytest.approx(1) and M.normalized_entropy(one_code) == 0
    assert M.codebook_usage(torch.zeros(4, dtype=torch.long)) == 0
    with pytest.raises(ValueError, match="all zero"):
        M.perplexity(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        M.code_counts(torch.tensor([0, 4]), 4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        M.code_counts(torch.tensor([-1, 2]), 4)
    with pytest.raises(TypeError):
        M.code_counts(torch.tensor([0.0, 1.0]), 4)


def test_code_counter_streams_like_one_count():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 50, (4, 8, 8), generator=g) for _ in range(5)]
    counter = M.CodeCounter(64)
    for batch in batches:
        counter.update(batch)
    assert torch.equal(counter.counts, M.code_counts(torch.cat(batches), 64))
    assert counter.total == 5 * 4 * 64
    assert counter.stats().dead_codes >= 14
    counter.reset()
    assert counter.total == 0


# -- evaluate --------------------------------------------------------------------------------------

def _tiny_model() -> vqexplore.VQModel:
    torch.manual_seed(0)
    return vqexplore.VQModel(quantizer="vq", codebook_size=32, code_dim=4, hidden_dim=16, n_resblocks=1)


def test_evaluate_reports_all_metrics():
    model = _tiny_model().train()
    g = torch.Generator().manual_seed(1)
    # 32x32: LPIPS' AlexNet trunk needs at least 31x31.
    images = [torch.rand(4, 3, 32, 32, generator=g) * 2 - 1 for _ in range(3)]
    labelled = [(batch, torch.zeros(4)) for batch in images]
    lpips = M.LPIPS(pretrained_backbone=False)
    rfid = M.RFID(feature_extractor=TinyFeatures())

    results, counts = M.evaluate(model, labelled, lpips=lpips, rfid=rfid, return_counts=True)
    assert model.training  # mode restored
    assert set(results) == {"usage", "perplexity", "dead_codes", "normalized_entropy", "codebook_size",
                            "psnr", "ssim", "lpips", "rfid", "num_images"}
    json.dumps(results)
    assert results["num_images"] == 12 and results["codebook_size"] == 32
    assert counts.shape == (32,) and int(counts.sum()) == 12 * 8 * 8  # 8x8 code grid per image

    # The same numbers, computed by hand.
    model.eval()
    with torch.no_grad():
        x = torch.cat(images)
        out = model(x)
        original, recon = M.to_unit(x), M.to_unit(out.reconstruction)
    assert torch.equal(counts, M.code_counts(out.indices, 32))
    assert results["psnr"] == pytest.approx(float(M.psnr(original, recon).mean()))
    assert results["ssim"] == pytest.approx(float(M.ssim(original, recon).mean()))
    assert results["lpips"] == pytest.approx(float(lpips(original, recon).mean()), rel=1e-5)
    assert results["usage"] == pytest.approx(M.codebook_usage(counts))
    assert results["rfid"] >= 0

    # Plain tensors, max_batches, no optional metrics; rfid was reset, so a rerun agrees.
    short = M.evaluate(model, images, max_batches=1)
    assert short["num_images"] == 4 and "lpips" not in short and "rfid" not in short
    assert not model.training
    again = M.evaluate(model, labelled, rfid=rfid)
    assert again["rfid"] == pytest.approx(results["rfid"])


def test_evaluate_refuses_empty_and_malformed_batches():
    model = _tiny_model()
    with pytest.raises(ValueError, match="no images"):
        M.evaluate(model, [])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        M.evaluate(model, [torch.rand(3, 16, 16)])


def test_missing_weights_are_downloaded_when_the_host_answers(tmp_path, monkeypatch):
    # A local HTTP server stands in for the weights' download host (no network here).
    import functools
    import http.server
    import threading

    from vqexplore.metrics import _resolve_weights

    served = tmp_path / "served"
    served.mkdir()
    torch.save({"w": torch.arange(3.0)}, served / "weights.pth")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/weights.pth"
        path = _resolve_weights(None, "weights.pth", url, "LPIPS")
        assert path == tmp_path / "torch" / "hub" / "checkpoints" / "weights.pth"
        assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(3.0))
        # An unreachable host is the offline error, at once.
        with pytest.raises(MissingWeightsError, match="other.pth"):
            _resolve_weights(None, "other.pth", "http://127.0.0.1:9/other.pth", "LPIPS")
    finally:
        server.shutdown()

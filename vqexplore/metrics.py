"""Reconstruction and codebook metrics of the reference study.

Image metrics compare originals and reconstructions given as (B, 3, H, W) tensors in [0, 1]
(use :func:`to_unit` on model-space images in [-1, 1]):

- :func:`psnr` and :func:`ssim`: per image, batched in torch (CPU or GPU), equal to
  scikit-image's ``peak_signal_noise_ratio`` / ``structural_similarity`` (7x7 uniform window).
- :class:`LPIPS`: the ``lpips`` package with an AlexNet backbone.
- :class:`RFID`: streaming Frechet Inception Distance of reconstructions to originals
  (torchmetrics' FID on torch-fidelity's InceptionV3 features).

LPIPS and rFID need pretrained weights: they are read from an explicit ``weights_path`` or from
torch's hub cache (``torch.hub.get_dir()/checkpoints/``), downloaded there as usual when missing
and the download host answers within a few seconds; offline,
:class:`vqexplore.errors.MissingWeightsError` says which file to put where. The weights are read
with ``torch.load(weights_only=True)``: tensors only, no code. :func:`weights_status` reports that up front,
so callers can skip a metric with a note.

Codebook metrics work on a (K,) int64 count of how often each code was chosen:
:func:`code_counts`, :func:`codebook_usage`, :func:`perplexity`, :func:`dead_codes`,
:func:`normalized_entropy`, :func:`codebook_stats` and the streaming :class:`CodeCounter`.

:func:`evaluate` runs a :class:`vqexplore.VQModel` over image batches and returns all of them.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .codebook_metrics import (CodebookStats, CodeCounter, code_counts, codebook_stats, codebook_usage,
                               dead_codes, normalized_entropy, perplexity)
from .errors import MissingWeightsError
from .hub import url_reachable
from .utils import eval_mode

__all__ = [
    "to_unit", "psnr", "ssim", "LPIPS", "RFID", "weights_status",
    "code_counts", "codebook_usage", "perplexity", "dead_codes", "normalized_entropy",
    "CodebookStats", "codebook_stats", "CodeCounter", "evaluate",
]

# PSNR of identical images would be +inf, which poisons means and is not JSON; the MSE is
# floored at this fraction of data_range**2, which caps PSNR at 100 dB.
MIN_MSE_FRACTION = 1e-10

# SSIM constants of Wang et al. 2004, as scikit-image uses them.
SSIM_K1 = 0.01
SSIM_K2 = 0.03

# torch-fidelity's InceptionV3 (the network behind torchmetrics' FID, and behind most published rFID).
# Smallest image side each LPIPS trunk accepts (its pooling stages shrink smaller maps to nothing).
LPIPS_MIN_SIZE = {"alex": 31, "vgg": 16, "squeeze": 17}

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                         + INCEPTION_WEIGHTS_FILE)


# ---------------------------------------------------------------------------------------------
# Pixel metrics
# ---------------------------------------------------------------------------------------------

def to_unit(x: Tensor) -> Tensor:
    """Images in [-1, 1] -> [0, 1], clamped (decoder outputs may overshoot slightly)."""
    return ((x + 1) / 2).clamp(0, 1)


def _exact_dtype(device: torch.device) -> torch.dtype:
    # float64 makes SSIM's variance terms (E[x^2] - E[x]^2) immune to cancellation, which is
    # what lets us agree with scikit-image to ~1e-12; MPS has no float64, so it gets float32.
    return torch.float32 if device.type == "mps" else torch.float64


def _check_pair(x: Tensor, y: Tensor, name: str) -> None:
    if x.dim() != 4 or x.shape != y.shape:
        raise ValueError(f"{name} expects two image batches of the same shape (B, C, H, W), "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio per image, in dB.

    x, y: (B, C, H, W) floats in [0, data_range] -> (B,) float64 (float32 on MPS).
    ``10 * log10(data_range**2 / mse)`` with the MSE over all of an image's pixels and channels,
    as ``skimage.metrics.peak_signal_noise_ratio``; identical images give 100 dB instead of inf
    (the MSE is floored at ``1e-10 * data_range**2``).
    """
    _check_pair(x, y, "psnr")
    dtype = _exact_dtype(x.device)
    mse = (x.to(dtype) - y.to(dtype)).pow(2).flatten(1).mean(1)
    mse = mse.clamp_min(MIN_MSE_FRACTION * data_range ** 2)
    return 10 * torch.log10(data_range ** 2 / mse)


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0, win_size: int = 7) -> Tensor:
    """Structural similarity per image, as scikit-image computes it.

    x, y: (B, C, H, W) floats in [0, data_range], H and W >= win_size -> (B,) float64
    (float32 on MPS), in [-1, 1].

    Matches ``structural_similarity(a, b, channel_axis=-1, data_range=data_range,
    win_size=win_size)``: uniform win_size x win_size window, sample covariance (N / (N - 1)),
    K1 = 0.01, K2 = 0.03, SSIM map averaged over the valid region (``(win_size - 1) // 2`` pixels
    cropped at each border) and over channels. Because that crop removes exactly the pixels whose
    window leaves the image, an unpadded ``avg_pool2d`` gives the same local statistics as
    scikit-image's reflect-padded filter.
    """
    _check_pair(x, y, "ssim")
    if win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"win_size must be an odd integer >= 3, got {win_size}")
    if min(x.shape[-2:]) < win_size:
        raise ValueError(f"ssim needs images at least {win_size}x{win_size} (win_size), "
                         f"got {tuple(x.shape[-2:])}")
    dtype = _exact_dtype(x.device)
    x, y = x.to(dtype), y.to(dtype)
    channels = x.shape[1]
    # One pooling call for the five local moments; avg_pool2d works per channel.
    moments = F.avg_pool2d(torch.cat([x, y, x * x, y * y, x * y], dim=1), win_size, stride=1)
    mean_x, mean_y, mean_xx, mean_yy, mean_xy = moments.split(channels, dim=1)
    num_pixels = win_size ** 2
    cov_norm = num_pixels / (num_pixels - 1)  # unbiased (sample) covariance, skimage's default
    var_x = cov_norm * (mean_xx - mean_x * mean_x)
    var_y = cov_norm * (mean_yy - mean_y * mean_y)
    cov_xy = cov_norm * (mean_xy - mean_x * mean_y)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mean_x * mean_y + c1) * (2 * cov_xy + c2)) / \
               ((mean_x ** 2 + mean_y ** 2 + c1) * (var_x + var_y + c2))
    # Every channel's valid region has the same size, so the flat mean is the channel average.
    return ssim_map.flatten(1).mean(1)


# ---------------------------------------------------------------------------------------------
# Pretrained weights: where they live, and whether they are there
# ---------------------------------------------------------------------------------------------

def _hub_checkpoints_dir() -> Path:
    """Where torch.hub / torchvision cache downloaded weights (follows TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints"  # torch.hub cache, not a run folder


def _lpips_backbone_urls() -> dict[str, str]:
    """net name -> URL of the torchvision ImageNet weights the lpips package's trunk uses."""
    from torchvision import models

    return {
        "alex": models.AlexNet_Weights.IMAGENET1K_V1.url,
        "vgg": models.VGG16_Weights.IMAGENET1K_V1.url,
        "squeeze": models.SqueezeNet1_1_Weights.IMAGENET1K_V1.url,
    }


def _resolve_weights(weights_path: str | Path | None, filename: str, url: str, who: str,
                     download: bool = True) -> Path:
    """The weights file to read. Missing from torch's hub cache, it is downloaded there as usual
    when ``url`` can be reached (checked with a short timeout first, so offline never hangs);
    otherwise MissingWeightsError in one sentence. With ``download=False`` a reachable URL only
    counts as available."""
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"{who} weights_path {path} does not exist: point it at a copy of "
                                      f"{filename} (from {url}).")
        return path
    folder = _hub_checkpoints_dir()
    path = folder / filename
    if not path.is_file() and url_reachable(url):
        if not download:
            return path
        try:
            folder.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), progress=False)  # writes a temp file, then renames
        except Exception as e:  # network dropped mid-way, disk full, ...
            raise MissingWeightsError(f"{who} could not download {url} ({type(e).__name__}); download it into "
                                      f"{folder} by hand, or pass weights_path=... pointing at a copy.") from None
    if not path.is_file():
        raise MissingWeightsError(f"{who} needs {filename} in {folder} (torch's hub cache, set by TORCH_HOME): "
                                  f"download {url} into that folder, or pass weights_path=... "
                                  f"pointing at a copy of it.")
    return path


def _load_state_dict(path: Path, who: str) -> dict:
    """Read a plain tensor state dict without unpickling arbitrary objects (no code runs)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated download, wrong format, or a pickle holding more than tensors
        raise MissingWeightsError(f"{who} weights file {path} cannot be read as a plain PyTorch state "
                                  f"dict ({type(e).__name__}); download it again.") from None
    if not isinstance(state, dict):
        raise MissingWeightsError(f"{who} weights file {path} does not hold a state dict; download it again.")
    return state


def _lpips_weights_file(net: str) -> tuple[str, str]:
    urls = _lpips_backbone_urls()
    if net not in urls:
        raise ValueError(f"LPIPS net must be one of {', '.join(urls)}, got {net!r}")
    url = urls[net]
    return url.rsplit("/", 1)[-1], url


def weights_status(lpips_weights_path: str | Path | None = None,
                   rfid_weights_path: str | Path | None = None) -> dict[str, str | None]:
    """Whether LPIPS (AlexNet) and rFID (InceptionV3) can run offline, without trying to run them.

    Returns ``{"lpips": None | reason, "rfid": None | reason}``: None means the weights (and the
    package) are available; otherwise a one-sentence reason fit for a "LPIPS skipped: ..." note.
    """
    from importlib.util import find_spec

    # Only look for the packages (find_spec) and the files: importing lpips, torchmetrics and
    # torch-fidelity just to answer this costs seconds at every app start.
    status: dict[str, str | None] = {}
    if find_spec("lpips") is None:
        status["lpips"] = "LPIPS needs the lpips package: pip install lpips."
    else:
        try:
            filename, url = _lpips_weights_file("alex")
            _resolve_weights(lpips_weights_path, filename, url, "LPIPS", download=False)
            status["lpips"] = None
        except MissingWeightsError as e:
            status["lpips"] = str(e)
    if find_spec("torch_fidelity") is None or find_spec("torchmetrics") is None:
        status["rfid"] = "rFID needs torchmetrics and torch-fidelity: pip install torchmetrics torch-fidelity."
    else:
        try:
            _resolve_weights(rfid_weights_path, INCEPTION_WEIGHTS_FILE, INCEPTION_WEIGHTS_URL, "rFID", download=False)
            status["rfid"] = None
        except MissingWeightsError as e:
            status["rfid"] = str(e)
    return status


# ---------------------------------------------------------------------------------------------
# LPIPS
# ---------------------------------------------------------------------------------------------

class LPIPS(nn.Module):
    """Learned perceptual distance (Zhang et al. 2018), lower is more similar.

    ``forward(x, y)``: x, y (B, 3, H, W) in [0, 1] -> (B,) distances (differentiable in x and y,
    so it can serve as a loss; all parameters are frozen and the module stays in eval mode).

    The calibrated linear layers ship inside the ``lpips`` package. The backbone's ImageNet
    weights (for net="alex": ``alexnet-owt-7be5be79.pth``) are read from ``weights_path`` or from
    torchvision's cache ``torch.hub.get_dir()/checkpoints/`` (downloaded there when missing and
    reachable); offline, a missing file raises :class:`MissingWeightsError`. ``pretrained_backbone=False`` keeps a
    randomly initialised backbone (a meaningless metric, for tests of the code path only).
    """

    def __init__(self, net: str = "alex", weights_path: str | Path | None = None,
                 pretrained_backbone: bool = True):
        super().__init__()
        filename, url = _lpips_weights_file(net)
        self.net_name = net
        # Resolve the file before building anything, so a missing file fails fast and offline.
        backbone_state = (_load_state_dict(_resolve_weights(weights_path, filename, url, "LPIPS"), "LPIPS")
                          if pretrained_backbone else None)
        import lpips

        # Always ask lpips for a *random* trunk (pnet_rand=True): with pnet_rand=False it calls
        # torchvision's alexnet(pretrained=True), which downloads. lpips 0.1.4 still passes the
        # `pretrained=` argument that torchvision deprecated in 0.13 (0.29 still maps it to
        # weights=None, with a warning we silence); we load the trunk weights ourselves below.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*", category=UserWarning)
            self.net = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        if backbone_state is not None:
            self._load_backbone(backbone_state, weights_path or filename)
        self.net.eval()
        self.net.requires_grad_(False)

    def _load_backbone(self, state: dict, source) -> None:
        """Copy torchvision ImageNet weights into lpips' trunk.

        lpips' slices hold the modules of torchvision's ``features`` under their original
        indices, so trunk parameter ``sliceN.<i>.<name>`` is ``features.<i>.<name>`` in the file
        (the file's classifier weights are not needed).
        """
        with torch.no_grad():
            for slice_module in self.net.net.children():
                for index, layer in slice_module.named_children():
                    for name, param in layer.named_parameters():
                        key = f"features.{index}.{name}"
                        value = state.get(key)
                        if not isinstance(value, Tensor) or value.shape != param.shape:
                            raise MissingWeightsError(f"LPIPS weights file {source} does not hold torchvision "
                                                      f"{self.net_name} weights ({key} missing or misshapen); "
                                                      f"download it again.")
                        param.copy_(value)

    def train(self, mode: bool = True) -> "LPIPS":
        # Dropout in the linear heads must stay off: LPIPS is a fixed metric.
        return super().train(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """x, y: (B, 3, H, W) in [0, 1], H and W >= 31 for alex -> (B,) distances (0 for identical images)."""
        _check_pair(x, y, "LPIPS")
        min_size = LPIPS_MIN_SIZE[self.net_name]
        if min(x.shape[-2:]) < min_size:
            raise ValueError(f"LPIPS ({self.net_name}) needs images at least {min_size}x{min_size}, "
                             f"got {tuple(x.shape[-2:])}")
        # The lpips package expects images in [-1, 1].
        return self.net(x * 2 - 1, y * 2 - 1).reshape(x.shape[0])


# ---------------------------------------------------------------------------------------------
# rFID
# ---------------------------------------------------------------------------------------------

class _FlatFeatures(nn.Module):
    """Wraps a user feature extractor: output flattened to (B, F), ``num_features`` known, so
    torchmetrics does not probe it with a 299x299 image."""

    def __init__(self, extractor: nn.Module, num_features: int):
        super().__init__()
        self.extractor = extractor
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return self.extractor(x).reshape(x.shape[0], -1)


class RFID:
    """Streaming reconstruction FID: Frechet distance between feature statistics of originals
    ("real") and reconstructions ("fake"); lower is better, 0 for identical sets.

    ``update(real, fake)`` with (B, 3, H, W) images in [0, 1] of any size, ``compute() -> float``,
    ``reset()``. The default extractor is torch-fidelity's InceptionV3 (2048-d pool features) via
    ``torchmetrics.image.fid.FrechetInceptionDistance``: images are rounded to uint8 and resized
    to 299x299 inside it (bilinear, antialiased, torchmetrics' default). Its weights
    (``weights-inception-2015-12-05-6726825d.pth``) come from ``weights_path`` or
    ``torch.hub.get_dir()/checkpoints/`` (downloaded there when missing and reachable); offline, a
    missing file raises :class:`MissingWeightsError`.

    ``feature_extractor``: any module mapping (B, 3, H, W) floats in [0, 1] to (B, F) features
    (e.g. a small random conv net in tests); it goes through the same FID statistics. Its
    ``num_features`` attribute is used if present, otherwise it is probed once with a 2x3x64x64 image.

    Under torch.distributed each process measures only the images it was given: torchmetrics'
    cross-process sync is switched off, because it would hang unless every rank called compute().
    """

    def __init__(self, weights_path: str | Path | None = None,
                 feature_extractor: nn.Module | None = None, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        try:
            from torchmetrics.image.fid import FrechetInceptionDistance
        except ImportError:
            raise MissingWeightsError("rFID needs torchmetrics: pip install torchmetrics torch-fidelity.") from None
        self.uses_inception = feature_extractor is None
        if self.uses_inception:
            path = _resolve_weights(weights_path, INCEPTION_WEIGHTS_FILE, INCEPTION_WEIGHTS_URL, "rFID")
            # torch-fidelity unpickles the file with weights_only=False; check first that it holds
            # nothing but tensors, so a tampered file cannot run code.
            _load_state_dict(path, "rFID")
            try:
                self._fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(path),
                                                     sync_on_compute=False)
            except ModuleNotFoundError:
                raise MissingWeightsError("rFID needs torch-fidelity for its InceptionV3: "
                                          "pip install torch-fidelity.") from None
        else:
            feature_extractor.eval()
            num_features = getattr(feature_extractor, "num_features", None)
            if isinstance(num_features, Tensor):
                num_features = int(num_features.item())
            if not isinstance(num_features, int):
                with torch.no_grad():
                    probe = torch.rand(2, 3, 64, 64, device=next(feature_extractor.parameters(), torch.empty(0)).device)
                    num_features = feature_extractor(probe).reshape(2, -1).shape[1]
            self._fid = FrechetInceptionDistance(feature=_FlatFeatures(feature_extractor, num_features),
                                                 sync_on_compute=False)
        self._fid = self._fid.to(self.device)

    @property
    def num_real(self) -> int:
        return int(self._fid.real_features_num_samples)

    @property
    def num_fake(self) -> int:
        return int(self._fid.fake_features_num_samples)

    def _prepare(self, images: Tensor, name: str) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"RFID.update expects {name} images (B, 3, H, W), got {tuple(images.shape)}")
        images = images.to(self.device).clamp(0, 1)
        if self.uses_inception:
            # torch-fidelity's InceptionV3 takes uint8; round (torchmetrics' normalize=True truncates).
            return (images * 255).round().to(torch.uint8)
        return images.float()

    def update(self, real: Tensor, fake: Tensor) -> None:
        """Add originals ``real`` and reconstructions ``fake``: (B, 3, H, W) in [0, 1]."""
        self._fid.update(self._prepare(real, "real"), real=True)
        self._fid.update(self._prepare(fake, "fake"), real=False)

    def compute(self) -> float:
        """The Frechet distance (>= 0) of everything added since the last reset."""
        if self.num_real < 2 or self.num_fake < 2:
            raise ValueError(f"rFID needs at least 2 real and 2 reconstructed images, got "
                             f"{self.num_real} and {self.num_fake}; add more with update().")
        # Rounding can push the distance of (nearly) identical sets a hair below 0; it is >= 0.
        return max(0.0, float(self._fid.compute()))

    def reset(self) -> None:
        """Forget all images added so far."""
        self._fid.reset()


# ---------------------------------------------------------------------------------------------
# Evaluation of a model
# ---------------------------------------------------------------------------------------------

def _images_of(batch) -> Tensor:
    # DataLoaders over labelled datasets yield (images, labels).
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ValueError("evaluate got an empty batch (an empty tuple or list)")
        batch = batch[0]
    if not isinstance(batch, Tensor) or batch.dim() != 4:
        raise ValueError("evaluate expects batches of images (B, 3, H, W) in [-1, 1] "
                         f"(or (images, labels) pairs), got {type(batch).__name__} "
                         f"{tuple(batch.shape) if isinstance(batch, Tensor) else ''}".rstrip())
    return batch


def evaluate(model: nn.Module, batches: Iterable, *, device: str | torch.device = "cpu",
             lpips: LPIPS | None = None, rfid: RFID | None = None, max_batches: int | None = None,
             return_counts: bool = False) -> dict | tuple[dict, Tensor]:
    """Reconstruction and codebook metrics of a VQModel over image batches.

    model: a :class:`vqexplore.VQModel` (moved to ``device``; its train/eval mode is restored).
    batches: an iterable of (B, 3, H, W) images in [-1, 1], or of (images, labels) pairs.
    lpips / rfid: optional metric objects; ``rfid`` is reset first, so it measures these batches.
    max_batches: stop after this many batches.

    Returns a flat JSON-able dict: ``usage, perplexity, dead_codes, normalized_entropy,
    codebook_size, psnr, ssim`` (PSNR/SSIM/LPIPS are means over images), ``lpips`` and ``rfid``
    when given, ``num_images``; with ``return_counts=True``, ``(dict, counts)`` where counts is
    the (K,) int64 code count on the CPU.
    """
    device = torch.device(device)
    model.to(device)
    counter = CodeCounter(model.codebook_size)
    sums = {"psnr": 0.0, "ssim": 0.0, "lpips": 0.0}
    num_images = 0
    if rfid is not None:
        rfid.reset()
    lpips_device = next(lpips.parameters()).device if lpips is not None else None
    # Feed images in the model's own precision (float32 unless it was cast, e.g. to bfloat16).
    model_dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    with eval_mode(model), torch.no_grad():
        for batch_index, batch in enumerate(batches):
            if max_batches is not None and batch_index >= max_batches:
                break
            images = _images_of(batch).to(device=device, dtype=model_dtype)
            out = model(images)
            counter.update(out.indices)
            original, recon = to_unit(images.float()), to_unit(out.reconstruction.float())
            sums["psnr"] += float(psnr(original, recon).sum())
            sums["ssim"] += float(ssim(original, recon).sum())
            if lpips is not None:
                sums["lpips"] += float(lpips(original.to(lpips_device), recon.to(lpips_device)).sum())
            if rfid is not None:
                rfid.update(original, recon)
            num_images += images.shape[0]
    if num_images == 0:
        raise ValueError("evaluate got no images: the batches iterable is empty (or max_batches=0)")
    results = {**codebook_stats(counter.counts).as_dict(),
               "psnr": sums["psnr"] / num_images, "ssim": sums["ssim"] / num_images}
    if lpips is not None:
        results["lpips"] = sums["lpips"] / num_images
    if rfid is not None:
        results["rfid"] = rfid.compute()
    results["num_images"] = num_images
    return (results, counter.counts.cpu()) if return_counts else results

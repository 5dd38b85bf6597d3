"""Turn a loaded network into its fastest inference form without changing what it computes.

BatchNorm in eval mode is an affine map, so it folds into the convolution before it (one pass over
the activations instead of two), and channels-last lets oneDNN pick its direct kernels on CPU.
The result is a separate module: the original keeps its official state_dict for saving.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .network import MattingNetwork
from .resnet import Bottleneck


def _fold_sequential(seq: nn.Sequential) -> None:
    names = list(seq._modules)
    for first, second in zip(names, names[1:], strict=False):
        conv, bn = seq._modules[first], seq._modules[second]
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            seq._modules[first] = fuse_conv_bn_eval(conv, bn)
            seq._modules[second] = nn.Identity()


def _fold_bottleneck(block: Bottleneck) -> None:
    for i in (1, 2, 3):
        conv, bn = getattr(block, f"conv{i}"), getattr(block, f"bn{i}")
        setattr(block, f"conv{i}", fuse_conv_bn_eval(conv, bn))
        setattr(block, f"bn{i}", nn.Identity())


def optimize_for_inference(model: MattingNetwork, channels_last: bool = True) -> MattingNetwork:
    """A BatchNorm-folded, channels-last copy of ``model`` for inference (eval mode only)."""
    fast = copy.deepcopy(model).eval()
    for module in fast.modules():
        if isinstance(module, nn.Sequential):
            _fold_sequential(module)
        elif isinstance(module, Bottleneck):
            _fold_bottleneck(module)
    encoder = fast.backbone
    if hasattr(encoder, "bn1") and isinstance(encoder.bn1, nn.BatchNorm2d):
        encoder.conv1 = fuse_conv_bn_eval(encoder.conv1, encoder.bn1)
        encoder.bn1 = nn.Identity()
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
        fast.channels_last_inputs = True
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast

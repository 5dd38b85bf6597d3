"""The network's parts compile with TorchScript, so an export keeps sizes, devices and dtypes dynamic.

A traced graph would bake the example's dtype (the encoder's normalisation) and device (the fast guided
filter's box kernels) into the file: a Nuke Inference node in half precision, or a CUDA caller, would then
fail. Scripting keeps them the caller's.
"""

from __future__ import annotations

import pytest
import torch

from rvm_vfx.model import MattingNetwork


@pytest.mark.parametrize(
    ("variant", "refiner"), [("mobilenetv3", "fast_guided_filter"), ("resnet50", "deep_guided_filter")]
)
@pytest.mark.parametrize("part", ["backbone", "aspp", "decoder", "project_mat", "refiner"])
def test_every_part_of_the_network_scripts(variant: str, refiner: str, part: str) -> None:
    torch.jit.script(getattr(MattingNetwork(variant, refiner).eval(), part))  # type: ignore[arg-type]

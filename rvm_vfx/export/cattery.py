"""The network for Nuke's Inference node (a Cattery ``.cat``): one image in, RGBA out, memory inside.

Foundry's rules for a ``.cat`` (the ".cat File Creation Reference" of Nuke 13 to 17): a TorchScript module
whose ``forward`` takes one tensor [1, C, H, W] and returns one tensor [1, C', H, W]; extra controls are
model attributes that CatFileCreator turns into knobs (Int_Knob for an ``int`` attribute, Float_Knob for a
``float``), set by the Inference node before each call. So the recurrent state cannot travel as inputs and
outputs: it stays in the module between calls, and the ``frame`` attribute (an Int_Knob whose value is the
expression ``frame``) tells the module which frame it is given.

The state carries on when a call is for the frame after the last one; the same frame again (a viewer
refresh) is computed again from the state it was first given, so it comes out the same; anything else
(a jump, playing backwards, another plate size or ratio) starts from a fresh state, as a shot's first
frame does. The output is straight (unpremultiplied) RGB and alpha in the network's sRGB-encoded [0, 1]:
colour can then go back to linear light before a Premult node, which is where premultiplying belongs.
"""

import torch
from torch import nn

from ..model import auto_downsample_ratio
from .frame import RecurrentFrame


class CatteryMatting(nn.Module):
    """``forward(image [1, 3, H, W]) -> rgba [1, 4, H, W]``, the recurrent state kept between frames."""

    # The state the last frame was given (so that it can be computed again) and the one it left.
    given: list[torch.Tensor]
    left: list[torch.Tensor]

    def __init__(self, frame: RecurrentFrame, downsample_ratio: float) -> None:
        super().__init__()
        self.step = frame
        #: Knob-mapped: the frame number this call is for (Int_Knob, expression ``frame``).
        self.frame = 0
        #: Knob-mapped (Float_Knob): the encoder's scale of the plate; 0 or less: the long side to 512 px.
        self.downsample_ratio = float(downsample_ratio)
        self.has_state = False
        self.last_frame = 0
        self.last_size = [0, 0]
        self.last_ratio = 0.0
        self.given = []
        self.left = []

    def ratio_for(self, height: int, width: int) -> float:
        if self.downsample_ratio > 0.0:
            return min(self.downsample_ratio, 1.0)
        return auto_downsample_ratio(height, width)

    def reset(self) -> None:
        """Forget earlier frames: the next call starts a shot, whatever its frame number."""
        self.has_state = False

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        src = image[:, :3]
        size = [int(src.shape[2]), int(src.shape[3])]
        ratio = self.ratio_for(size[0], size[1])
        same_shot = self.has_state and size == self.last_size and ratio == self.last_ratio
        if same_shot and self.frame == self.last_frame + 1:
            given = self.left
        elif same_shot and self.frame == self.last_frame:
            given = self.given
        else:
            given: list[torch.Tensor] = []
        if len(given) == 4:
            # Nuke may have moved the module (and the image) to the GPU or to half precision since.
            s1, s2, s3, s4 = [state.to(device=src.device, dtype=src.dtype) for state in given]
            fgr, pha, r1, r2, r3, r4 = self.step(src, s1, s2, s3, s4, ratio)
            self.given = [s1, s2, s3, s4]
        else:
            fgr, pha, r1, r2, r3, r4 = self.step(src, None, None, None, None, ratio)
            self.given = [torch.zeros_like(r1), torch.zeros_like(r2), torch.zeros_like(r3), torch.zeros_like(r4)]
        self.left = [r1, r2, r3, r4]
        self.has_state = True
        self.last_frame = self.frame
        self.last_size = size
        self.last_ratio = ratio
        return torch.cat([fgr, pha], dim=1)

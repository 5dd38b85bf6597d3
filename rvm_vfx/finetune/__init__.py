"""Shot fine-tuning from roto keyframes (``rvm-vfx finetune``): CopyCat for RVM.

``finetune(FinetuneRequest(plate, out, settings))`` trains the base network on the shot's keyframes and
writes ``OUT.pth`` (official layout) and ``OUT.json`` (what was done, with the leave-one-out figures).
"""

from __future__ import annotations

from ..spec.finetune import FinetuneSettings
from .run import FinetuneReport, FinetuneRequest, finetune

__all__ = ["FinetuneReport", "FinetuneRequest", "FinetuneSettings", "finetune"]

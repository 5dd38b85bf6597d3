"""The RVM network, written without torchvision and key-compatible with the official checkpoints."""

from .network import STATE_CHANNELS, MattingNetwork, auto_downsample_ratio

__all__ = ["MattingNetwork", "STATE_CHANNELS", "auto_downsample_ratio"]

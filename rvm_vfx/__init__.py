"""rvm-vfx: Robust Video Matting for visual-effects pipelines."""

__version__ = "0.1.0"

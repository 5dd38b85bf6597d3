"""Helpers that run the Blender add-on: in real Blender (``drive_rvm_matte.py``) or without it (``addon_package``)."""

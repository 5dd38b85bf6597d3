"""Exports of the network that keep its recurrent state: ONNX, TorchScript, and a Nuke Cattery module.

``rvm-vfx export`` (``cli.py``) writes them; ``frame.py`` holds the one recurrent step every export is
made of and the state shapes a caller starts a shot with; ``cattery.py`` the module that keeps the state
inside for Nuke's Inference node; ``exporters.py`` the writing. Nothing is imported here, so that the
command line registers ``export`` without loading torch.
"""

"""RVM Matte for Nuke: ``jobs`` and ``engine`` decide and run without Nuke; ``node`` is the Nuke glue.

Importable by Nuke's own Python (3.9+); never imports torch, numpy or the rvm_vfx engine.
"""

__version__ = "0.1.0"

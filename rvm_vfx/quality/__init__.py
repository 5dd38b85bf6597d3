"""Matte quality: the RVM paper's metrics, clips with exact ground truth, and scoring renders against them.

Kept apart from the engine because a render never needs it: it is how the engine is judged (the
``make-testclip`` and ``evaluate`` commands, ``bench/evaluate_quality.py`` and the quality tests).
"""

"""Editorial: timelines in and out (OpenTimelineIO), each clip of an edit matted as a shot of its own.

Kept apart from the engine: it builds Jobs and calls ``rvm_vfx.render.render`` like any other caller,
and nothing in the engine imports it (``opentimelineio`` is loaded only by the ``timeline`` command).
"""

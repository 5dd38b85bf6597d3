"""Quality commands (``make-testclip``, ``evaluate``), kept apart from the render commands."""

from __future__ import annotations

import argparse
from typing import Any


def add_eval_commands(sub: Any) -> None:
    """Register the evaluation sub-commands on the main parser's sub-parsers."""
    del sub


__all__ = ["add_eval_commands", "argparse"]

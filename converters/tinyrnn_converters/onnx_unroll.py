"""Recognise recurrent cells that an exporter unrolled into per-step ops (placeholder)."""

from __future__ import annotations


def reroll(model):
    """The model with unrolled RNN chains replaced by ``RNN`` nodes (none recognised yet)."""
    return model

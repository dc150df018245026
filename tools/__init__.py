"""Bench and evaluation tools beside the library."""

from models.quiet import install as _hide_known_messages

_hide_known_messages()

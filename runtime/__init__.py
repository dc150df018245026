"""Run a build's graphs through the runner protocol; check parity; generate."""

from models.quiet import install as _hide_known_messages

_hide_known_messages()

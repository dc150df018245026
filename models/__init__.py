"""The VLM in PyTorch: vision tower, projector, decoder, vision plan, runner protocol."""

from .quiet import install as _hide_known_messages

_hide_known_messages()

"""Build phone-ready graphs of a VLM (export/build.py) and check them against PyTorch."""

from models.quiet import install as _hide_known_messages

_hide_known_messages()

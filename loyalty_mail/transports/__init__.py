"""Transports: where a rendered email goes. One small protocol, chosen in config.

    base.py        the protocol: send(batch) -> results
    directory.py   writes each message as an .eml file (demo, previews, tests)
"""

from .base import DeliveryResult, Transport
from .directory import DirectoryTransport

__all__ = ["DeliveryResult", "DirectoryTransport", "Transport"]

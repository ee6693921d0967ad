"""loyalty-mail: email lifecycle marketing for loyalty programs.

The data flows config -> segments -> flows -> render -> outbox -> transport -> tracking ->
reports; each stage is a module or package of its own and lower stages never import higher ones.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("loyalty-mail")
except PackageNotFoundError:  # running from a checkout without installing
    __version__ = "0.0.0"

__all__ = ["__version__"]

"""areaser: speech emotion recognition with multiscale area attention and VTLP.

The data path, one module per stage::

    audio -> corpora / manifest -> segments -> features (+ vtlp) -> models (attention)
          -> training -> metrics / reports -> inference / export

``cli.py`` is a thin layer over these modules.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``areaser.Recognizer`` without importing torch when the package is imported (fast ``--help``)."""
    if name == "Recognizer":
        from .inference import Recognizer

        return Recognizer
    raise AttributeError(f"module 'areaser' has no attribute {name!r}")

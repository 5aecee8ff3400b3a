"""areaser: speech emotion recognition with multiscale area attention and VTLP.

The data path, one module per stage::

    audio -> corpora / manifest -> segments -> features (+ vtlp) -> models (attention)
          -> training -> metrics / reports -> inference / export

``cli.py`` is a thin layer over these modules.
"""

__version__ = "0.1.0"

"""areaser: speech emotion recognition with multiscale area attention and VTLP.

The package is laid out along the path data takes; each folder imports only from those below it
(an import-linter layers contract in ``pyproject.toml``, checked by ``make test``)::

    cli                    the command line, a thin layer over the rest
    builtin | studies      the synthetic corpus and demo | the paper's ablation studies
    serve | train          inference, ONNX export, HTTP service | runs: lifecycle, cv, evaluation
    runs                   configs, checkpoints, reports, metrics, calibration, provenance
    models                 area attention (functional core, fast path, fused kernels), CNNs, baselines
    dsp                    log-Mel features, VTLP, SpecAugment masks, voice activity
    data                   labels, manifests, corpora, splits, segments, windows
    io                     audio files, atomic writes, worker processes
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``areaser.Recognizer`` without importing torch when the package is imported (fast ``--help``)."""
    if name == "Recognizer":
        from areaser.serve.recognizer import Recognizer

        return Recognizer
    raise AttributeError(f"module 'areaser' has no attribute {name!r}")

"""Live emotion on a stream of samples: the core of ``areaser listen`` (and of a WebSocket endpoint).

A :class:`Listener` is fed chunks of samples of any size (a microphone's buffers, a pipe's reads, a
socket's messages); every ``every_s`` seconds of audio it scores the last ``window_s`` seconds and
returns an :class:`Update`: the time, whether the window holds speech, and the label and
probabilities smoothed over updates. Pure and synchronous: no I/O, no clock, no threads; the same
samples give the same updates however they are cut into chunks.

>>> from areaser.serve.live import Listener                       # doctest: +SKIP
>>> live = Listener(recognizer, every_s=0.5)                 # doctest: +SKIP
>>> for update in live.feed(chunk):                          # doctest: +SKIP
...     print(update.to_dict())
{'time_s': 0.5, 'voiced': True, 'label': 'happy', 'probabilities': {...}, 'speech_s': 0.39}

How an update is made, at each multiple ``t`` of ``every_s`` (in samples: ``k * round(every_s * sr)``):

1. the window is the last ``window_s`` seconds before ``t`` (fewer at the start of the stream), held in a
   ring buffer of that length: memory does not grow with the stream;
2. with ``vad`` on, the window is **voiced** when at least :data:`areaser.dsp.vad.MIN_VOICED_FRACTION` of its
   30 ms frames are voiced speech (:func:`areaser.dsp.vad.speech_frames`, the rule ``predict --vad`` applies
   to each window); an unvoiced window is not scored: its update has ``label=None`` and leaves the
   smoothing untouched;
3. a voiced window is scored as ``predict`` scores a recording (:meth:`areaser.serve.recognizer.Recognizer.predict`:
   the model's windows, padding, decision and calibration), giving probabilities ``p``;
4. the smoothed probabilities are an exponential moving average over voiced updates,
   ``s <- smoothing * s + (1 - smoothing) * p`` (the first one is ``p``), and the label is their argmax.
   With the default ``smoothing=0.5`` an update's weight halves at each later update (a half-life of
   0.5 s at the default ``every_s``); ``smoothing=0`` shows each window alone.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from areaser.dsp.vad import MIN_VOICED_FRACTION, speech_frames
from areaser.io.audio import AudioError

__all__ = ["Update", "Listener"]


@dataclass(frozen=True)
class Update:
    """One update of a :class:`Listener`.

    ``time_s``: seconds of audio received when it was made (the end of its window); ``voiced``: whether
    the window held enough speech to be scored; ``label`` and ``probabilities`` (class -> 0..1): the
    smoothed decision, ``None`` when not voiced; ``speech_s``: seconds of voiced speech in the window
    (``None`` with voice activity detection off).
    """

    time_s: float
    voiced: bool
    label: str | None
    probabilities: dict[str, float] | None
    speech_s: float | None = None

    def to_dict(self) -> dict:
        """JSON-ready dict (what ``listen --json`` prints, one per line)."""
        return {
            "time_s": round(self.time_s, 4),
            "voiced": self.voiced,
            "label": self.label,
            "probabilities": None
            if self.probabilities is None
            else {c: round(float(p), 6) for c, p in self.probabilities.items()},
            "speech_s": None if self.speech_s is None else round(self.speech_s, 3),
        }


class Listener:
    """Rolling emotion over a stream: :meth:`feed` chunks, get :class:`Update` objects.

    Parameters
    ----------
    recognizer : a :class:`areaser.serve.recognizer.Recognizer`; samples are fed at its rate ``recognizer.sr``.
    every_s : seconds of audio between updates (default 0.5).
    window_s : seconds scored at each update (default: the model's window, ``recognizer.config.win_s``).
    smoothing : weight of the past in the moving average of the probabilities, in [0, 1) (default 0.5).
    vad : gate updates by voice activity (default True).
    """

    def __init__(
        self,
        recognizer,  # noqa: ANN001 (areaser.serve.recognizer.Recognizer; not imported: keeps this module light)
        every_s: float = 0.5,
        window_s: float | None = None,
        smoothing: float = 0.5,
        vad: bool = True,
    ):
        window_s = recognizer.config.win_s if window_s is None else window_s
        if not every_s > 0 or not window_s > 0:
            raise ValueError(f"every_s and window_s must be > 0 seconds, got {every_s!r}, {window_s!r}")
        if not 0 <= smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
        self.sr = int(recognizer.sr)
        self.classes = tuple(recognizer.classes)
        self.every = max(1, int(round(every_s * self.sr)))
        self.win = max(1, int(round(window_s * self.sr)))
        if self.win < int(0.03 * self.sr):
            raise ValueError(f"window_s must be at least 0.03 s (one voice activity frame), got {window_s!r}")
        self.smoothing = float(smoothing)
        self.vad = bool(vad)
        # every check that refuses a recording is off: the listener decides what is speech (vad) itself
        self._rec = recognizer.with_config(vad=False, speech_check="off", min_duration_s=0.0, silence_db=None)
        self._ring = np.zeros(self.win, dtype=np.float32)
        self._pos = 0  # where the next sample goes in the ring
        self.n = 0  # samples received
        self._next = self.every  # the sample count of the next update
        self._smoothed: np.ndarray | None = None
        self._sum = np.zeros(len(self.classes), dtype=np.float64)  # of the voiced windows' probabilities
        self._labels: Counter[str] = Counter()
        self.updates = 0
        self.voiced_updates = 0

    @property
    def time_s(self) -> float:
        """Seconds of audio received."""
        return self.n / self.sr

    def feed(self, samples: np.ndarray) -> list[Update]:
        """Add samples ``[M]`` (float in [-1, 1], or integer PCM, at ``sr``); the updates they complete, in order.

        Any chunk size works, 0 included: an update is made each time the count of samples received
        reaches a multiple of ``every_s`` seconds, from exactly the samples before it.
        """
        x = np.asarray(samples)
        if x.ndim != 1:
            raise ValueError(f"feed takes mono samples [M], got shape {x.shape}")
        if np.issubdtype(x.dtype, np.integer):
            x = x.astype(np.float32) / float(-np.iinfo(x.dtype).min)
        x = np.nan_to_num(x.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=-1.0)
        out: list[Update] = []
        i = 0
        while i < len(x):
            take = min(self._next - self.n, len(x) - i)
            self._push(x[i : i + take])
            i += take
            self.n += take
            if self.n == self._next:
                out.append(self._update())
                self._next += self.every
        return out

    def summary(self) -> dict:
        """What the stream said so far: duration, update counts, the most frequent labels, the mean probabilities.

        ``label`` is the argmax of ``probabilities``, the mean of the voiced windows' (unsmoothed)
        probabilities; both ``None`` when no update was voiced.
        """
        mean = self._sum / self.voiced_updates if self.voiced_updates else None
        return {
            "duration_s": round(self.time_s, 3),
            "updates": self.updates,
            "voiced_updates": self.voiced_updates,
            "label": None if mean is None else self.classes[int(np.argmax(mean))],
            "probabilities": None if mean is None else {c: round(float(p), 6) for c, p in zip(self.classes, mean)},
            "labels": dict(self._labels.most_common()),
        }

    # ------------------------------------------------------------------ internals

    def _push(self, x: np.ndarray) -> None:
        if len(x) >= self.win:
            self._ring[:] = x[-self.win :]
            self._pos = 0
            return
        end = self._pos + len(x)
        if end <= self.win:
            self._ring[self._pos : end] = x
        else:
            cut = self.win - self._pos
            self._ring[self._pos :] = x[:cut]
            self._ring[: end - self.win] = x[cut:]
        self._pos = end % self.win

    def _window(self) -> np.ndarray:
        """The last ``min(n, win)`` samples, in time order (a copy)."""
        if self.n < self.win:
            return self._ring[: self.n].copy()
        return np.concatenate([self._ring[self._pos :], self._ring[: self._pos]])

    def _update(self) -> Update:

        w = self._window()
        self.updates += 1
        speech_s = None
        voiced = True
        if self.vad:
            flags = speech_frames(w, self.sr)
            speech_s = float(flags.sum()) * 30 / 1000  # speech_frames' default 30 ms frames
            voiced = bool(len(flags)) and float(flags.mean()) >= MIN_VOICED_FRACTION
        p = None
        if voiced:
            try:
                p = self._rec.predict(w, sample_rate=self.sr).probabilities.astype(np.float64)
            except AudioError:  # all zeros: nothing to score
                voiced = False
        if not voiced:
            return Update(self.time_s, False, None, None, speech_s)
        self.voiced_updates += 1
        self._sum += p
        s = p if self._smoothed is None else self.smoothing * self._smoothed + (1.0 - self.smoothing) * p
        self._smoothed = s
        label = self.classes[int(np.argmax(s))]
        self._labels[label] += 1
        return Update(self.time_s, True, label, dict(zip(self.classes, s.tolist())), speech_s)

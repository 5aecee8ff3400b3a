"""Voice activity: which 30 ms frames of a recording hold voiced speech.

Functional core on plain arrays: :func:`speech_frames` gives one flag per frame, :func:`speech_seconds`
their total, :func:`window_voiced` whether a window has enough of them to be scored;
:class:`VoiceActivity` is the same detector fed a stream block by block (the result does not
depend on how the stream is cut into blocks).

A frame is speech when four tests agree:

1. the WebRTC voice activity detector (``webrtcvad``, a Gaussian mixture model of six sub-band
   energies, on 16 kHz 16-bit PCM; ``aggressiveness`` 0-3) says so;
2. it is **voiced**: the autocorrelation of the frame band-limited to 60-1000 Hz has a peak of at
   least :data:`MIN_PERIODICITY` at a pitch lag of 2.5-14 ms (400-70 Hz);
3. the sound **changes**: the median change of the normalised power spectrum between neighbouring
   speech-like frames (total variation, 0..1) over the last :data:`CHANGE_FRAMES` frames is at least
   :data:`MIN_CHANGE` (a steady tone, beep, hum, square or pulse wave: about 0; speech: about 0.5);
4. its level is **modulated** as syllables are: the frame levels (dBFS) of the last
   :data:`LEVEL_FRAMES` frames spread by at least :data:`MIN_MODULATION_DB` (standard deviation;
   steady white noise 0.3 dB, pink noise at most 3 dB, speech 3.4 dB or more in 95 % of its frames).

The WebRTC detector alone takes any loud sound for speech at the start of a stream (a 440 Hz tone,
white and pink noise and a square wave are 100 % "speech" at aggressiveness 2): tests 2-4 are what
refuse tones, beeps and noise. Measured (2-6 s signals; :func:`speech_seconds`): tones, beeps, square
and pulse waves, hum, white and pink noise 0-0.06 s; brown noise up to 0.33 s in 6 s, scattered (no
2 s window reaches :data:`MIN_VOICED_FRACTION`); EmoDB, all 535 files, 0.69-4.3 s (median 1.7 s);
RAVDESS 1,438 of 1,440 at 0.5 s or more (two soft, breathy ones 0.33 and 0.36 s); the built-in
synthetic corpus 59 of 60 (a soft sad utterance 2 dB above its noise: 0 s). What passes is voiced
sound that changes as speech does: singing and many musical instruments pass too. Unvoiced sounds
of speech (/s/, /f/, pauses) are not counted: the seconds are seconds of *voiced* speech, about half
to three quarters of the time a speaker talks.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import soxr
import webrtcvad

__all__ = [
    "VAD_SR",
    "MIN_PERIODICITY",
    "MIN_CHANGE",
    "CHANGE_FRAMES",
    "MIN_MODULATION_DB",
    "LEVEL_FRAMES",
    "MIN_VOICED_FRACTION",
    "VoiceActivity",
    "speech_frames",
    "speech_seconds",
    "window_voiced",
]

VAD_SR = 16_000  # webrtcvad takes 8, 16, 32 or 48 kHz; everything is brought to 16 kHz
MIN_PERIODICITY = 0.5
MIN_CHANGE = 0.1
CHANGE_FRAMES = 10  # 300 ms of 30 ms frames
_MIN_PAIRS = 3  # speech-like neighbour pairs needed among the last CHANGE_FRAMES frames
MIN_MODULATION_DB = 3.0
LEVEL_FRAMES = 15  # 450 ms
# a window is scored when at least this fraction of its frames is voiced speech (0.3 s of a 2 s window)
MIN_VOICED_FRACTION = 0.15
_LAGS = (40, 229)  # pitch lags in samples at 16 kHz: 400 Hz .. 70 Hz
_BAND_HZ = (60.0, 1000.0)
_FLOOR = 1e-10  # frame energy (sum of squares) below which a frame is silent: no spectrum, no pitch


class VoiceActivity:
    """Streaming voice activity detector: feed blocks of samples, get one flag per completed frame.

    Parameters
    ----------
    sr : sample rate of the blocks in Hz (resampled to 16 kHz inside).
    aggressiveness : WebRTC VAD mode 0 (least) .. 3 (most eager to call a frame non-speech).
    frame_ms : frame length, 10, 20 or 30 ms (what webrtcvad takes).

    Memory is one frame of samples and :data:`CHANGE_FRAMES` numbers, whatever the stream's length.
    ``frames`` and ``voiced`` count the frames seen and those flagged; :attr:`speech_s` is the
    voiced time in seconds.
    """

    def __init__(self, sr: int, aggressiveness: int = 2, frame_ms: int = 30):
        if frame_ms not in (10, 20, 30):
            raise ValueError(f"frame_ms must be 10, 20 or 30 (what webrtcvad takes), got {frame_ms!r}")
        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness must be 0, 1, 2 or 3, got {aggressiveness!r}")
        self.sr = int(sr)
        self.frame_ms = int(frame_ms)
        self.n = VAD_SR * self.frame_ms // 1000
        self._vad = webrtcvad.Vad(int(aggressiveness))
        self._resampler = (
            None if self.sr == VAD_SR else soxr.ResampleStream(self.sr, VAD_SR, 1, dtype="float32", quality="HQ")
        )
        self._rest = np.zeros(0, dtype=np.float32)
        self._prev: np.ndarray | None = None  # the last frame's normalised spectrum (None: not speech-like)
        self._changes: deque[float] = deque(maxlen=CHANGE_FRAMES)
        self._levels: deque[float] = deque(maxlen=LEVEL_FRAMES)
        self._window = np.hanning(self.n)
        self.frames = 0
        self.voiced = 0

    @property
    def speech_s(self) -> float:
        """Seconds of voiced speech seen so far."""
        return self.voiced * self.frame_ms / 1000.0

    def feed(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """Add samples ``[M]`` (float in [-1, 1] at ``sr``); flags ``[F]`` (bool) of the frames completed.

        ``last=True`` flushes the resampler at the end of a stream (a trailing part frame is dropped).
        """
        y = np.asarray(block, dtype=np.float32).reshape(-1)
        if self._resampler is not None:
            y = self._resampler.resample_chunk(y, last=last)
        y = np.concatenate([self._rest, y])
        k = len(y) // self.n
        self._rest = y[k * self.n :]
        if k == 0:
            return np.zeros(0, dtype=bool)
        frames = y[: k * self.n].reshape(k, self.n).astype(np.float64)
        pcm = (np.clip(frames, -1.0, 1.0) * 32767.0).round().astype("<i2")
        webrtc = np.array([self._vad.is_speech(f.tobytes(), VAD_SR) for f in pcm], dtype=bool)
        periodic = _periodic(frames)
        level = 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)  # dBFS (digital silence: -120)
        x = frames - frames.mean(axis=1, keepdims=True)
        power = np.abs(np.fft.rfft(x * self._window, axis=1)) ** 2
        spectra = power / np.maximum(power.sum(axis=1, keepdims=True), 1e-300)
        # spectral change from the previous frame, counted only when both are speech-like to webrtcvad:
        # the change between frames of a quiet noise floor is estimation noise, not a changing sound
        before = np.concatenate([spectra[:1] if self._prev is None else self._prev[None], spectra[:-1]])
        paired = webrtc & np.concatenate([[self._prev is not None], webrtc[:-1]])
        change = np.where(paired, 0.5 * np.abs(spectra - before).sum(axis=1), np.nan).tolist()
        self._prev = spectra[-1] if webrtc[-1] else None
        out = np.zeros(k, dtype=bool)
        for i, (c, lv) in enumerate(zip(change, level.tolist())):
            self._changes.append(c)
            self._levels.append(lv)
            if not (webrtc[i] and periodic[i]):
                continue
            valid = sorted(x for x in self._changes if x == x)  # NaN != NaN: the pairs that say something
            m = len(valid)
            changing = m >= _MIN_PAIRS and (valid[m // 2] + valid[(m - 1) // 2]) / 2 >= MIN_CHANGE  # the median
            mean = sum(self._levels) / len(self._levels)
            spread = (sum((v - mean) ** 2 for v in self._levels) / len(self._levels)) ** 0.5  # std, dB
            out[i] = changing and spread >= MIN_MODULATION_DB
        self.frames += k
        self.voiced += int(out.sum())
        return out


def _periodic(frames: np.ndarray) -> np.ndarray:
    """``[F, n]`` frames at 16 kHz -> ``[F]`` bool: a pitch peak of at least :data:`MIN_PERIODICITY` at 70-400 Hz.

    The autocorrelation of the frame band-limited to 60-1000 Hz (where the fundamental and the first
    harmonics are), unbiased (divided by the overlap), normalised by its value at lag 0; the peak must be
    a local maximum, not the edge of a decaying autocorrelation.
    """
    n = frames.shape[1]
    x = frames - frames.mean(axis=1, keepdims=True)
    power = np.abs(np.fft.rfft(x, 2 * n, axis=1)) ** 2
    freq = np.fft.rfftfreq(2 * n, 1.0 / VAD_SR)
    power[:, (freq < _BAND_HZ[0]) | (freq > _BAND_HZ[1])] = 0.0
    r = np.fft.irfft(power, axis=1)[:, :n] * (n / (n - np.arange(n)))
    r0 = r[:, :1]
    lo, hi = _LAGS
    seg = r[:, lo - 1 : hi + 2] / np.maximum(r0, 1e-300)
    mid = seg[:, 1:-1]
    peak = (mid >= seg[:, :-2]) & (mid >= seg[:, 2:])
    best = np.where(peak, mid, -np.inf).max(axis=1)
    return (best >= MIN_PERIODICITY) & (r0[:, 0] > _FLOOR)


def speech_frames(wave: np.ndarray, sr: int, aggressiveness: int = 2, frame_ms: int = 30) -> np.ndarray:
    """Which frames of a recording are voiced speech.

    Parameters
    ----------
    wave : ``[N]`` mono samples, float in [-1, 1], at ``sr`` Hz.
    sr : sample rate in Hz; the signal is resampled to 16 kHz and quantised to 16-bit PCM, what
        webrtcvad takes.
    aggressiveness : WebRTC VAD mode, 0 (keeps most) .. 3 (drops most).
    frame_ms : frame length in ms: 10, 20 or 30.

    Returns
    -------
    np.ndarray, bool, shape ``[F]``: ``F = floor(N * 16000 / sr / (16 * frame_ms))`` frames, frame ``f``
    covering ``[f * frame_ms, (f + 1) * frame_ms)`` ms; True where the frame is voiced speech (see the
    module docstring for the three tests).
    """
    det = VoiceActivity(sr, aggressiveness, frame_ms)
    return det.feed(np.asarray(wave, dtype=np.float32), last=True)


def speech_seconds(wave: np.ndarray, sr: int, aggressiveness: int = 2, frame_ms: int = 30) -> float:
    """Seconds of voiced speech in ``wave`` (``[N]`` at ``sr`` Hz): frames flagged times ``frame_ms``."""
    return float(speech_frames(wave, sr, aggressiveness, frame_ms).sum()) * frame_ms / 1000.0


def window_voiced(window: np.ndarray, sr: int, aggressiveness: int = 2) -> bool:
    """Whether a window ``[N]`` is scored with voice activity on.

    True when at least :data:`MIN_VOICED_FRACTION` of its 30 ms frames are voiced speech (the window
    judged on its own, with a fresh detector: the same window gives the same answer wherever it is cut
    from).
    """
    flags = speech_frames(window, sr, aggressiveness)
    return bool(len(flags)) and float(flags.mean()) >= MIN_VOICED_FRACTION

"""espeak-ng through ctypes: text in, 16-bit samples out (no apt, no subprocess).

The ``espeakng-loader`` wheel ships ``libespeak-ng`` and its data folder; this
module binds the few functions of espeak-ng's C API (``speak_lib.h``) that the
synthetic corpus needs. espeak-ng keeps one global engine per process, so
:class:`Espeak` is a per-process singleton: use one process per parallel worker,
never threads.

The engine also keeps state from one call to the next (pitch-flutter phase,
wave phase, filter memories): the same text spoken twice in one process differs
by a few samples. :func:`in_fresh_engine` runs a function in a fork of a process
whose engine is initialised but unused, so every call starts from the same state
and output is byte-identical whatever ran before (POSIX only).

>>> tts = Espeak.get()
>>> y = tts.say("Hello there.", voice="en-us+f3", prosody=Prosody(rate=175, pitch=50))  # float32 [N], tts.sr Hz
"""

from __future__ import annotations

import ctypes
import os
import pickle
import threading
import traceback
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import numpy as np

from areaser.core.errors import AreaserError
from areaser.core.extras import require

__all__ = ["Espeak", "EspeakError", "Prosody", "in_fresh_engine"]

T = TypeVar("T")

# enum values from speak_lib.h (espeak-ng API revision 12)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_SSML = 0x10
_ENDPAUSE = 0x1000  # finish the last sentence with its pause, so nothing is left in the engine
_POS_CHARACTER = 1
_RATE, _VOLUME, _PITCH, _RANGE, _WORDGAP = 1, 2, 3, 4, 7
_EE_OK = 0


class EspeakError(AreaserError, RuntimeError):
    """espeak-ng could not be loaded, initialised or asked to speak."""


class _Event(ctypes.Structure):
    # espeak_EVENT; only its size matters to us (we ignore events), but keep it exact.
    class _Id(ctypes.Union):
        _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _Id),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Prosody:
    """espeak-ng speech parameters (``espeak_SetParameter``), in the engine's own units.

    rate : words per minute, 80..450 (espeak default 175).
    pitch : base pitch, 0..100 (50 = the voice's normal pitch).
    range : pitch range, 0..100 (0 = monotone, 50 = normal).
    volume : amplitude, 0..200 (100 = normal; higher values compress / distort).
    wordgap : extra pause between words, units of 10 ms.
    """

    rate: int = 175
    pitch: int = 50
    range: int = 50
    volume: int = 100
    wordgap: int = 0


class Espeak:
    """The process-wide espeak-ng engine. Build it with :meth:`get`, not directly."""

    _instance: "Espeak | None" = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        espeakng_loader = require("espeakng_loader", "synth", "the built-in corpus (espeak-ng)")  # an extra
        try:
            self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data = espeakng_loader.get_data_path()
        except (OSError, RuntimeError) as e:
            raise EspeakError(f"cannot load libespeak-ng from espeakng-loader ({e})") from e
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        # 1 s chunks (default 60 ms: many more Python callbacks); path = the wheel's espeak-ng-data
        sr = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 1000, data.encode(), 0)
        if sr <= 0:
            raise EspeakError(f"espeak_Initialize failed (data folder {data})")
        self.sr: int = int(sr)  # 22050 for the bundled voices
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # keep a reference: C holds only the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None
        self.used = False  # True once this process has synthesised anything

    @classmethod
    def get(cls) -> "Espeak":
        """The engine of this process, initialised on first use."""
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _collect(self, wav, n, events) -> int:  # noqa: ANN001 - ctypes callback
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = continue

    def set_voice(self, voice: str) -> None:
        """Select a voice by name, with an optional variant: ``"en-us"``, ``"en-us+f3"``, ``"en+m3"``."""
        if voice == self._voice:
            return
        if self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise EspeakError(f"unknown espeak-ng voice {voice!r} (try 'en-us', 'en-us+f3', 'en+m3')")
        self._voice = voice

    def set_rand_seed(self, seed: int) -> None:
        """Seed espeak-ng's own noise generator (breath and aspiration noise)."""
        fn = getattr(self._lib, "espeak_ng_SetRandSeed", None)  # espeak-ng >= 1.52
        if fn is not None:
            fn(ctypes.c_long(int(seed)))

    def say(self, text: str, voice: str = "en-us", prosody: Prosody = Prosody(), ssml: bool = False) -> np.ndarray:
        """Synthesise ``text``; return float32 samples in [-1, 1], shape ``[N]``, at :attr:`sr` Hz.

        ``ssml=True`` lets ``<break time="300ms"/>``, ``<prosody>`` and friends through.
        """
        with self._lock:
            self.set_voice(voice)
            for param, value in (
                (_RATE, prosody.rate),
                (_PITCH, prosody.pitch),
                (_RANGE, prosody.range),
                (_VOLUME, prosody.volume),
                (_WORDGAP, prosody.wordgap),
            ):
                self._lib.espeak_SetParameter(param, int(value), 0)
            data = text.encode("utf-8")
            flags = _CHARS_UTF8 | _ENDPAUSE | (_SSML if ssml else 0)
            self.used = True
            self._chunks = []
            err = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, flags, None, None)
            chunks, self._chunks = self._chunks, []
        if err != _EE_OK:
            raise EspeakError(f"espeak_Synth failed with code {err} for text {text[:40]!r}")
        if not chunks:
            return np.zeros(0, np.float32)
        return np.concatenate(chunks).astype(np.float32) / 32768.0


def in_fresh_engine(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in a fork of this process and return its (picklable) result.

    The fork starts from this process' engine state, so this process must have
    initialised espeak-ng (``Espeak.get()``) but never spoken: then every call
    starts from one and the same state. An exception in ``fn`` is raised here as
    :class:`EspeakError` carrying the child's traceback.
    """
    engine = Espeak.get()
    if engine.used:
        raise EspeakError("in_fresh_engine needs a process whose espeak-ng engine has not spoken yet")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into the caller's stack
        status = 0
        try:
            os.close(read_fd)
            try:
                payload = pickle.dumps((True, fn(*args)))
            except BaseException:
                payload, status = pickle.dumps((False, traceback.format_exc())), 1
            with os.fdopen(write_fd, "wb") as f:
                f.write(payload)
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        payload = f.read()
    _, wait_status = os.waitpid(pid, 0)
    if not payload:
        raise EspeakError(f"synthesis process died ({_describe(wait_status)})")
    ok, result = pickle.loads(payload)
    if not ok:
        raise EspeakError(f"synthesis failed in a child process:\n{result}")
    return result


def _describe(wait_status: int) -> str:
    if os.WIFSIGNALED(wait_status):
        return f"killed by signal {os.WTERMSIG(wait_status)}"
    return f"exit status {os.WEXITSTATUS(wait_status)}"

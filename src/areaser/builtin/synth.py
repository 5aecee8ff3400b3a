"""The built-in corpus: acted-emotion speech synthesised with espeak-ng, in IEMOCAP's layout.

**Synthetic, for demos and tests only.** Scores on it show that the code runs end
to end; they say nothing about accuracy on human speech.

``synthesize(out_dir, SynthConfig())`` writes ``n_utterances`` utterances over
``n_sessions`` sessions (one female and one male speaker each) exactly as
IEMOCAP_full_release lies on disk (``docs/corpora.md``), so the IEMOCAP loader,
the paper's protocol and leave-one-session-out run on it unchanged::

    Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav   16 kHz mono 16-bit
    Session1/dialog/EmoEvaluation/Ses01F_impro01.txt                 label lines + annotator lines
    Session1/dialog/transcriptions/Ses01F_impro01.txt
    manifest.csv  README.txt  synth_config.json

How an emotion is rendered follows what acted emotional speech does acoustically
(Murray & Arnott 1993; Banse & Scherer 1996; Scherer 2003): F0 level and range,
speaking rate, intensity, voice quality (spectral tilt, breathiness, vocal
effort), pauses and F0 perturbation. Each speaker has a voice, an F0 and a
vocal-tract length of their own (formants scaled by resampling, F0 and rate
compensated), and each utterance draws an emotion strength and random variation,
so classes overlap: weak anger sounds like neutral speech. Background noise of a
random colour sits a random number of dB below the speaker's neutral level.

Every utterance is rendered from its own seed in a fresh fork of an espeak-ng
engine (:func:`areaser.builtin.espeak.in_fresh_engine`), so the corpus is byte-identical
for a seed whatever the number of worker processes.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from scipy.signal import lfilter  # imported here, not in the forks: each fork would pay 0.5 s

from areaser import __version__
from areaser.builtin.espeak import Espeak, Prosody, in_fresh_engine
from areaser.builtin.sentences import SENTENCES, SHORT
from areaser.core.errors import AreaserError
from areaser.data.manifest import make_manifest, write_manifest
from areaser.io.audio import resample, write_audio
from areaser.io.files import atomic_write_json, atomic_write_text
from areaser.io.workers import process_pool

__all__ = ["SynthConfig", "SynthError", "EmotionProfile", "PROFILES", "SYNTH_CLASSES", "synthesize", "same_corpus"]

GENERATOR = "areaser.synth"  # marks a folder as ours in synth_config.json
_BATCH = 10  # utterances per fresh espeak-ng engine (part of the output's definition: keep it fixed)
# Bump when the rendering changes: a corpus written by another version is rebuilt, not reused.
RENDER_VERSION = 5


class SynthError(AreaserError, ValueError):
    """The corpus cannot be written where or how it was asked (one line, says what to do)."""


# ----------------------------------------------------------------------------- emotions


@dataclass(frozen=True)
class EmotionProfile:
    """Acoustic change from a speaker's neutral speech at full strength (strength 1).

    f0_st : mean F0 shift, semitones.        range_x : F0 range factor (espeak ``range``).
    rate_x : speaking-rate factor.           level_db : intensity change, dB.
    tilt : spectral tilt, + tense (more high-frequency energy), - lax; about 6 dB at 4 kHz per unit.
    breath : aspiration noise, relative to the speech envelope.
    pause_x : factor on pauses between phrases.   wordgap : extra gap between words, 10 ms units.
    jitter : depth of F0 / amplitude perturbation (relative).  drive : vocal-effort saturation, 0..1.
    """

    f0_st: float = 0.0
    range_x: float = 1.0
    rate_x: float = 1.0
    level_db: float = 0.0
    tilt: float = 0.0
    breath: float = 0.0
    pause_x: float = 1.0
    wordgap: float = 0.0
    jitter: float = 0.0
    drive: float = 0.0


# Directions from the literature above: anger loud, tense, fast, high and wide F0, short pauses;
# happiness high and very wide F0, a little faster and louder; sadness low, narrow, slow, soft,
# lax and breathy, long pauses; fear high F0, fast, breathy, tremor; ...
_PROFILES: dict[str, EmotionProfile] = {
    "neutral": EmotionProfile(),
    "happy": EmotionProfile(
        f0_st=3.0, range_x=2.2, rate_x=1.07, level_db=3.0, tilt=0.3, breath=0.04, pause_x=0.85, jitter=0.004
    ),
    "angry": EmotionProfile(
        f0_st=2.5, range_x=1.4, rate_x=1.12, level_db=6.0, tilt=1.0, pause_x=0.6, jitter=0.006, drive=0.5
    ),
    "sad": EmotionProfile(
        f0_st=-2.5,
        range_x=0.45,
        rate_x=0.78,
        level_db=-6.0,
        tilt=-1.2,
        breath=0.35,
        pause_x=2.0,
        wordgap=2.0,
        jitter=0.003,
    ),
    "fear": EmotionProfile(
        f0_st=4.5, range_x=1.2, rate_x=1.18, level_db=0.0, tilt=-0.2, breath=0.25, pause_x=1.2, jitter=0.015
    ),
    "surprise": EmotionProfile(f0_st=4.0, range_x=2.5, rate_x=1.0, level_db=3.0, tilt=0.3, pause_x=1.0, jitter=0.004),
    "disgust": EmotionProfile(
        f0_st=-1.5, range_x=1.1, rate_x=0.82, level_db=1.0, tilt=0.4, breath=0.12, pause_x=1.4, wordgap=1.0, drive=0.2
    ),
    "frustration": EmotionProfile(
        f0_st=1.0, range_x=1.0, rate_x=1.03, level_db=3.5, tilt=0.6, breath=0.08, pause_x=0.9, drive=0.3
    ),
}
# Read-only: every synthesis reads it, so a caller's change would silently alter corpora said to be the same.
PROFILES: Mapping[str, EmotionProfile] = MappingProxyType(_PROFILES)
SYNTH_CLASSES: tuple[str, ...] = tuple(PROFILES)

# canonical label -> (IEMOCAP raw label, annotator category word, nominal valence/activation/dominance 1..5)
_IEMOCAP = {
    "neutral": ("neu", "Neutral", (3.0, 2.5, 2.6)),
    "happy": ("hap", "Happiness", (4.0, 3.0, 3.0)),
    "excited": ("exc", "Excited", (3.9, 3.6, 3.3)),
    "sad": ("sad", "Sadness", (2.2, 2.3, 2.2)),
    "angry": ("ang", "Anger", (1.9, 3.7, 3.6)),
    "fear": ("fea", "Fear", (2.1, 3.3, 2.3)),
    "surprise": ("sur", "Surprise", (3.3, 3.6, 2.9)),
    "disgust": ("dis", "Disgust", (1.9, 3.0, 3.1)),
    "frustration": ("fru", "Frustration", (2.1, 3.2, 3.2)),
    "other": ("oth", "Other", (2.8, 3.0, 3.0)),
    "undecided": ("xxx", "Neutral", (2.8, 2.9, 2.9)),
}


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class SynthConfig:
    """How the built-in corpus is made; written to ``synth_config.json`` next to it.

    seed : everything random (speakers, texts, emotions, variation, noise) follows from it.
    n_utterances : utterances over all sessions (1000 is about 1.1 h of audio).
    classes : emotions rendered, canonical names from :data:`SYNTH_CLASSES`; ``happy`` is labelled
        ``hap`` or ``exc`` (``excited_share``).
    sr : output sample rate, Hz.
    n_sessions : sessions, each with one female (F) and one male (M) speaker (IEMOCAP: 5).
    duration_s : (min, max) seconds of regular utterances.
    short_share, short_duration_s : share of utterances of 1-2 s, which the paper's protocol drops.
    improvised_share : share of dialogs that are improvised (``impro``); the rest are scripted.
    excited_share : share of happy utterances labelled ``exc`` (IEMOCAP: 1041 / (1041 + 595) = 0.64).
    undecided_share : share rendered as a blend of two classes and labelled ``xxx`` (80 %) or
        ``oth``; the 4-class tasks drop them.
    snr_db : (min, max) dB between the speaker's neutral speech level and the background noise
        (white, pink or brown, sometimes with mains hum): loud speech sits further above it.
    expressiveness : scales every emotion's effect (1 = the :data:`PROFILES`; lower is harder).
    variation : scales per-utterance random variation (higher is harder: classes overlap more).
    utterances_per_dialog : about this many utterances per dialog.
    """

    seed: int = 0
    n_utterances: int = 1000
    classes: tuple[str, ...] = ("neutral", "happy", "sad", "angry")
    sr: int = 16000
    n_sessions: int = 5
    duration_s: tuple[float, float] = (2.0, 6.0)
    short_share: float = 0.07
    short_duration_s: tuple[float, float] = (1.0, 2.0)
    improvised_share: float = 0.5
    excited_share: float = 0.64
    undecided_share: float = 0.04
    snr_db: tuple[float, float] = (8.0, 30.0)
    expressiveness: float = 1.0
    variation: float = 1.0
    utterances_per_dialog: int = 25

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        for name in ("duration_s", "short_duration_s", "snr_db"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        problems = []
        unknown = [c for c in self.classes if c not in PROFILES]
        if unknown or not self.classes or len(set(self.classes)) != len(self.classes):
            problems.append(f"classes must be distinct names from {', '.join(SYNTH_CLASSES)} (got {self.classes})")
        if not 1 <= self.n_sessions <= 99:
            problems.append(f"n_sessions must be 1..99 (got {self.n_sessions})")
        if self.n_utterances < 2 * self.n_sessions:
            problems.append(f"n_utterances must be at least 2 per session (got {self.n_utterances})")
        if self.sr < 8000:
            problems.append(f"sr must be at least 8000 Hz (got {self.sr})")
        for name in ("duration_s", "short_duration_s", "snr_db"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi if name != "snr_db" else not lo <= hi:
                problems.append(f"{name} must be (min, max) with 0 < min <= max (got {(lo, hi)})")
        if self.short_duration_s[1] > self.duration_s[0]:
            problems.append("short_duration_s must end where duration_s starts or before")
        for name in ("short_share", "improvised_share", "excited_share", "undecided_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1] (got {getattr(self, name)})")
        if self.expressiveness < 0 or self.variation < 0 or self.utterances_per_dialog < 1:
            problems.append("expressiveness and variation must be >= 0, utterances_per_dialog >= 1")
        if problems:
            raise SynthError("; ".join(problems))

    def to_json(self) -> dict:
        """The config as written to ``synth_config.json`` (with the generator's name and versions)."""
        return {
            "generator": GENERATOR,
            "version": __version__,
            "render_version": RENDER_VERSION,
            **json.loads(json.dumps(asdict(self))),
        }


# ----------------------------------------------------------------------------- plan (main process)


@dataclass(frozen=True)
class Speaker:
    """One voice: espeak voice+variant, vocal-tract factor ``alpha`` (formants x alpha) and habits."""

    id: str  # Ses01F
    gender: str
    voice: str  # espeak voice name, e.g. "en-us+f3"
    alpha: float  # vocal-tract length factor: > 1 shorter tract, higher formants
    pitch_st: float  # F0 offset from the voice's own, semitones
    range: float  # espeak pitch range 0..100
    rate_wpm: float
    level_db: float  # neutral speech level, dBFS (RMS of voiced parts)
    expressiveness: float  # how strongly this actor acts
    tilt: float
    breath: float


@dataclass(frozen=True)
class Utterance:
    """Everything needed to render one utterance (the render itself is seeded by ``seed``)."""

    utt_id: str
    session: int
    dialog: str
    speaker: Speaker
    emotion: str  # rendered emotion (a class name)
    blend: str  # second emotion for xxx/oth blends, else ""
    label: str  # canonical label
    raw_label: str
    strength: float
    short: bool
    seed: int
    path: str  # relative to the corpus root


_F_VARIANTS = ("f1", "f2", "f3", "f4", "f5")
_M_VARIANTS = ("m1", "m2", "m3", "m4", "m6", "m7")


def _speakers(cfg: SynthConfig, rng: np.random.Generator) -> dict[str, Speaker]:
    out = {}
    f_var = rng.permutation(_F_VARIANTS)
    m_var = rng.permutation(_M_VARIANTS)
    for s in range(1, cfg.n_sessions + 1):
        for g, variants, alpha in (("F", f_var, (1.0, 1.12)), ("M", m_var, (0.9, 1.02))):
            sid = f"Ses{s:02d}{g}"
            out[sid] = Speaker(
                id=sid,
                gender=g,
                voice=f"{rng.choice(['en-us', 'en'])}+{variants[(s - 1) % len(variants)]}",
                alpha=float(rng.uniform(*alpha)),
                pitch_st=float(rng.normal(0.0, 1.5)),
                range=float(rng.uniform(40, 60)),
                rate_wpm=float(rng.uniform(150, 185)),
                level_db=float(rng.uniform(-30, -24)),
                expressiveness=float(rng.uniform(0.7, 1.3)),
                tilt=float(rng.normal(0.0, 0.3)),
                breath=float(rng.uniform(0.0, 0.08)),
            )
    return out


def _dialog_names(session: int, n_impro: int, n_script: int) -> list[str]:
    """``Ses01F_impro01, Ses01M_impro01, Ses01F_impro02, ...`` then ``Ses01F_script01_1, Ses01M_script01_1, ...``."""
    names = [f"Ses{session:02d}{'FM'[k % 2]}_impro{k // 2 + 1:02d}" for k in range(n_impro)]
    for k in range(n_script):
        part = k // 2  # script 01 part 1, 01 part 2, 02 part 1, ...
        names.append(f"Ses{session:02d}{'FM'[k % 2]}_script{part // 2 + 1:02d}_{part % 2 + 1}")
    return names


def plan(cfg: SynthConfig) -> list[Utterance]:
    """Every utterance of the corpus, in file order; pure function of ``cfg``."""
    rng = np.random.default_rng([cfg.seed, 0])
    speakers = _speakers(cfg, rng)
    per_session = np.full(cfg.n_sessions, cfg.n_utterances // cfg.n_sessions)
    per_session[: cfg.n_utterances % cfg.n_sessions] += 1
    utts: list[Utterance] = []
    for s, n_s in enumerate(per_session, start=1):
        # rendered emotions: balanced per session, a few blends for xxx/oth, shuffled
        n_blend = int(round(n_s * cfg.undecided_share))
        full, rest = divmod(n_s - n_blend, len(cfg.classes))
        extra = [cfg.classes[(s + k) % len(cfg.classes)] for k in range(rest)]  # rotates: no class always short
        emotions = list(cfg.classes) * full + extra + ["<blend>"] * n_blend
        emotions = [emotions[i] for i in rng.permutation(n_s)]
        n_dialogs = max(1 if n_s < 4 else 2, int(round(n_s / cfg.utterances_per_dialog)))
        n_impro = int(round(n_dialogs * cfg.improvised_share))
        if n_dialogs >= 2 and 0 < cfg.improvised_share < 1:
            n_impro = min(max(n_impro, 1), n_dialogs - 1)  # both kinds whenever the share asks for both
        names = _dialog_names(s, n_impro, n_dialogs - n_impro)
        for dialog, chunk in zip(names, np.array_split(np.arange(n_s), n_dialogs)):
            turn = dialog[5]  # the letter after SesNN leads the dialog
            counters = {"F": 0, "M": 0}
            for i in chunk:
                utt_id = f"{dialog}_{turn}{counters[turn]:03d}"
                counters[turn] += 1
                spk = speakers[f"Ses{s:02d}{turn}"]
                emotion, blend = emotions[i], ""
                if emotion == "<blend>":
                    emotion, blend = (str(c) for c in rng.choice(cfg.classes, 2, replace=len(cfg.classes) < 2))
                    label = "undecided" if rng.random() < 0.8 else "other"
                elif emotion == "happy":
                    label = "excited" if rng.random() < cfg.excited_share else "happy"
                else:
                    label = emotion
                strength = spk.expressiveness * rng.uniform(0.45, 1.3) * cfg.expressiveness
                strength *= {"excited": 1.15, "happy": 0.85}.get(label, 1.0)
                utts.append(
                    Utterance(
                        utt_id=utt_id,
                        session=s,
                        dialog=dialog,
                        speaker=spk,
                        emotion=emotion,
                        blend=blend,
                        label=label,
                        raw_label=_IEMOCAP[label][0],
                        strength=float(strength),
                        short=bool(rng.random() < cfg.short_share),
                        seed=int(rng.integers(2**31)),
                        path=f"Session{s}/sentences/wav/{dialog}/{utt_id}.wav",
                    )
                )
                if rng.random() < 0.75:  # turns mostly alternate
                    turn = "M" if turn == "F" else "F"
            _both_speakers(utts, len(chunk), speakers)
    return utts


def _both_speakers(utts: list[Utterance], n: int, speakers: dict[str, Speaker]) -> None:
    """Give a dialog's last turn to the other speaker if one speaker had every turn (IEMOCAP has both)."""
    turns = utts[len(utts) - n :]
    if n < 2 or len({u.speaker.gender for u in turns}) == 2:
        return
    last = turns[-1]
    other = "M" if last.speaker.gender == "F" else "F"
    utt_id = f"{last.dialog}_{other}000"
    utts[-1] = replace(
        last,
        utt_id=utt_id,
        speaker=speakers[f"Ses{last.session:02d}{other}"],
        path=f"Session{last.session}/sentences/wav/{last.dialog}/{utt_id}.wav",
    )


# ----------------------------------------------------------------------------- render (worker)


def _profile(u: Utterance) -> EmotionProfile:
    """The utterance's emotion at its strength (blends average two profiles at reduced strength)."""
    if u.blend:
        a, b = PROFILES[u.emotion], PROFILES[u.blend]
        base = EmotionProfile(**{k: (getattr(a, k) + getattr(b, k)) / 2 for k in asdict(a)})
        s = 0.7 * u.strength
    else:
        base, s = PROFILES[u.emotion], u.strength
    mult = {"range_x", "rate_x", "pause_x"}  # multiplicative: scale in the log domain
    return EmotionProfile(**{k: (v**s if k in mult else v * s) for k, v in asdict(base).items()})


def _smooth_noise(rng: np.random.Generator, n: int, rate_hz: float, sr: int) -> np.ndarray:
    """Zero-mean, unit-scale random curve that changes about ``rate_hz`` times a second, ``[n]``."""
    knots = rng.standard_normal(int(n / sr * rate_hz) + 3)
    return np.interp(np.arange(n) * rate_hz / sr, np.arange(len(knots)), knots)


def _one_pole(y: np.ndarray, cutoff_hz: float, sr: int) -> np.ndarray:
    """First-order low-pass at ``cutoff_hz``."""
    a = float(np.exp(-2 * np.pi * cutoff_hz / sr))
    return lfilter([1 - a], [1, -a], y)


# 1/f ("pink") noise filter: J. O. Smith's 3-pole/3-zero fit, within 0.3 dB of -3 dB/octave above ~10 Hz
_PINK_B = [0.049922035, -0.095993537, 0.050612699, -0.004408786]
_PINK_A = [1.0, -2.494956002, 2.017265875, -0.522189400]


def _coloured_noise(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Unit-RMS background noise ``[n]``: white, pink or brown, sometimes with mains hum."""
    colour = rng.choice(["white", "pink", "brown"])
    noise = rng.standard_normal(n)
    if colour == "pink":
        noise = lfilter(_PINK_B, _PINK_A, noise)
    elif colour == "brown":  # leaky integrator (-6 dB/octave) with a 20 Hz high-pass against drift
        noise = lfilter([1.0], [1.0, -0.998], noise)
        noise -= _one_pole(noise, 20.0, sr)
    noise /= noise.std() + 1e-12
    if rng.random() < 0.2:
        t = np.arange(n) / sr
        mains = rng.choice([50.0, 60.0])
        noise += sum(
            rng.uniform(0.5, 2) / k * np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 6.3)) for k in (1, 2, 3)
        )
        noise /= noise.std()
    return noise


def _active_rms(y: np.ndarray, sr: int) -> float:
    """RMS over 20 ms frames within 30 dB of the loudest: the level of the speech, not the pauses."""
    hop = sr // 50
    frames = y[: len(y) // hop * hop].reshape(-1, hop)
    e = (frames**2).mean(axis=1)
    return float(np.sqrt(e[e > e.max() * 1e-3].mean())) if len(e) and e.max() > 0 else 0.0


def _speak(tts, text: str, voice: str, prosody) -> np.ndarray:  # noqa: ANN001
    y = tts.say(text, voice=voice, prosody=prosody)
    idx = np.flatnonzero(np.abs(y) > 1e-3)  # espeak pads with digital silence; pauses are ours
    return y[idx[0] : idx[-1] + 1] if len(idx) else y


def render(u: Utterance, cfg: SynthConfig) -> tuple[np.ndarray, str]:
    """Synthesise one utterance: float32 ``[N]`` at ``cfg.sr`` Hz and the words spoken.

    Call it inside :func:`areaser.builtin.espeak.in_fresh_engine` for byte-identical output.
    """
    rng = np.random.default_rng(u.seed)
    tts = Espeak.get()
    tts.set_rand_seed(u.seed)
    spk, p, v, sr = u.speaker, _profile(u), cfg.variation, cfg.sr
    # per-utterance variation around speaker + emotion: this is what makes classes overlap
    f0_st = spk.pitch_st + p.f0_st + rng.normal(0, 1.5) * v
    range_ = spk.range * p.range_x * np.exp(rng.normal(0, 0.25) * v)
    rate = spk.rate_wpm * p.rate_x * np.exp(rng.normal(0, 0.07) * v)
    level_db = spk.level_db + p.level_db + rng.normal(0, 2.5) * v
    tilt = spk.tilt + p.tilt + rng.normal(0, 0.35) * v
    breath = max(0.0, spk.breath + p.breath + abs(rng.normal(0, 0.04)) * v)
    pause_x = p.pause_x * np.exp(rng.normal(0, 0.3) * v)
    jitter = max(0.0, p.jitter + abs(rng.normal(0, 0.002)) * v)
    # vocal-tract length by resampling: speech made at 22050 Hz is read as 22050*alpha Hz, which
    # multiplies formants, F0 and speed by alpha; F0 and rate are asked lower by alpha to compensate
    alpha = spk.alpha
    espeak_rate = int(np.clip(rate / alpha, 80, 450))
    pitch0 = 50 + 7.0 * (f0_st - 12 * np.log2(alpha))  # ~7 espeak pitch units per semitone
    wordgap = int(max(0, round(p.wordgap + rng.normal(0, 0.5) * v)))

    lo, hi = cfg.short_duration_s if u.short else cfg.duration_s
    target = rng.uniform(lo + 0.3 * (hi - lo), hi - 0.05 * (hi - lo))
    limit = hi - (0.05 if u.short else 0.02)  # "2 s or less" must stay short
    bank = SHORT if u.short else SENTENCES
    lead, trail = rng.uniform(0.08, 0.3, size=2)
    out_len = lambda n: n / (tts.sr * alpha)  # noqa: E731 - seconds at the output after the VTL resample
    pieces: list[np.ndarray] = []
    words: list[str] = []
    total = lead + trail
    tries = rng.permutation(len(bank))[:12]
    for k, i in enumerate(tries):
        last_try = k == len(tries) - 1
        gap_s = rng.uniform(0.12, 0.4) * pause_x if pieces else 0.0
        # espeak speaks about 8.1 characters per second per 60 wpm: skip what clearly cannot fit
        guess = len(bank[i]) * 8.1 / (rate * 1.0) + bank[i].count(" ") * wordgap * 0.01
        if total + gap_s + 0.85 * guess > limit and not (last_try and not pieces):
            continue
        pitch = int(np.clip(pitch0 - 2.5 * len(pieces) + rng.normal(0, 2.0) * v, 0, 100))  # declination
        prosody = Prosody(
            rate=espeak_rate,
            pitch=pitch,
            range=int(np.clip(range_ * np.exp(rng.normal(0, 0.1)), 0, 100)),
            wordgap=wordgap,
        )
        y = _speak(tts, bank[i], spk.voice, prosody)
        gap = np.zeros(int(tts.sr * alpha * gap_s))
        if total + out_len(len(gap) + len(y)) > limit:
            if pieces or not last_try:
                continue  # too long here: try a shorter one
            y = y[: int((limit - total) * tts.sr * alpha)]  # last resort: cut
        pieces += [gap, y]
        words.append(bank[i])
        total += out_len(len(gap) + len(y))
        if total >= target:
            break
    speech = np.concatenate(pieces).astype(np.float64)
    speech = resample(speech.astype(np.float32), int(round(tts.sr * alpha)), sr).astype(np.float64)

    # F0 jitter / tremor: a slowly wobbling playback speed (pitch and timing perturbation)
    n = len(speech)
    warp = 1.0 + jitter * _smooth_noise(rng, n, rng.uniform(5, 12), sr)
    pos = np.cumsum(warp)
    pos = pos[pos < n - 1]
    speech = np.interp(pos, np.arange(n), speech)
    speech *= 1.0 + 2 * jitter * _smooth_noise(rng, len(speech), 15.0, sr)  # shimmer
    # voice quality: tense = more high-frequency energy (+ saturation for vocal effort), lax = less
    if tilt > 0:
        speech = speech + 0.6 * tilt * (speech - _one_pole(speech, 400.0, sr))
    elif tilt < 0:
        g = min(0.9, 0.7 * -tilt)
        speech = (1 - g) * speech + g * _one_pole(speech, 1200.0, sr)
    if p.drive > 0:
        k = 1.0 + 4.0 * p.drive
        peak = np.abs(speech).max() + 1e-12
        speech = np.tanh(k * speech / peak) / np.tanh(k) * peak
    if breath > 0:  # aspiration noise that follows the speech envelope, high-passed
        env = np.sqrt(_one_pole(speech**2, 30.0, sr).clip(0))
        asp = rng.standard_normal(len(speech))
        asp -= _one_pole(asp, 1500.0, sr)
        speech += breath * 1.5 * env * asp
    speech *= 10 ** (level_db / 20) / (_active_rms(speech, sr) + 1e-12)

    # place in time, add background noise relative to the speaker's *neutral* level, soft-limit
    n_lead = int(lead * sr)
    n_total = max(n_lead + len(speech) + int(trail * sr), int(np.ceil(lo * sr)) + 1)
    y = np.zeros(min(n_total, int(hi * sr)))
    seg = speech[: len(y) - n_lead]
    y[n_lead : n_lead + len(seg)] = seg
    snr = rng.uniform(*cfg.snr_db)
    y += _coloured_noise(rng, len(y), sr) * 10 ** ((spk.level_db - snr) / 20)
    y *= 10 ** (rng.normal(0, 1.0) * v / 20)  # microphone gain
    y = 0.97 * np.tanh(y / 0.97)  # never clip
    return y.astype(np.float32), " ".join(words)


def _render_files(batch: list[Utterance], cfg: SynthConfig, root: str) -> list[tuple[str, int, str]]:
    out = []
    for u in batch:
        y, text = render(u, cfg)
        write_audio(Path(root) / u.path, y, cfg.sr)
        out.append((u.utt_id, len(y), text))
    return out


def _worker_init() -> None:

    # Initialise once and load the English voice here; speak only in forks, so every fork starts
    # from this same state. Warm the numeric code too, so no fork pays for a first call.
    Espeak.get().set_voice("en-us")
    _coloured_noise(np.random.default_rng(0), 1000, 16000)
    _one_pole(resample(np.zeros(2205, np.float32), 22050, 16000), 100.0, 16000)


def _render_batch(batch: list[Utterance], cfg: SynthConfig, root: str) -> list[tuple[str, int, str]]:
    """Render a batch in one fresh fork: batches are fixed by position, so bytes do not depend on jobs."""
    return in_fresh_engine(_render_files, batch, cfg, root)


# ----------------------------------------------------------------------------- write


def _label_file(rng: np.random.Generator, rows: list[dict]) -> str:
    """An EmoEvaluation file: header, then per turn a blank line, the label line, annotator lines."""
    lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    for r in rows:
        label, word = r["label"], _IEMOCAP[r["label"]][1]
        vad0 = np.array(_IEMOCAP[r["label"]][2])
        votes = [word, word, str(rng.choice([word, "Neutral", "Frustration", "Excited", "Other"]))]
        if label == "undecided":  # no majority: that is what xxx means
            votes = list(
                rng.choice(["Neutral", "Frustration", "Anger", "Sadness", "Happiness", "Excited"], 3, replace=False)
            )
        ratings = np.clip(np.round(vad0 + rng.normal(0, 0.6, size=(3, 3))), 1, 5).astype(int)
        vad = ratings.mean(axis=0)
        lines.append(
            f"[{r['start']:.4f} - {r['end']:.4f}]\t{r['utt_id']}\t{r['raw_label']}\t"
            f"[{vad[0]:.4f}, {vad[1]:.4f}, {vad[2]:.4f}]"
        )
        evaluators = sorted(rng.choice(["E1", "E2", "E3", "E4"], 3, replace=False))
        lines += [f"C-{e}:\t{w};\t()" for e, w in zip(evaluators, rng.permutation(votes))]
        lines += [f"A-{e}:\tval {a}; act {b}; dom  {c};\t()" for e, (a, b, c) in zip(evaluators, ratings)]
        lines.append("")
    return "\n".join(lines)


def _transcription_file(rows: list[dict]) -> str:
    return "".join(f"{r['utt_id']} [{r['start']:08.4f}-{r['end']:08.4f}]: {r['text']}\n" for r in rows)


def _readme(cfg: SynthConfig, df) -> str:  # noqa: ANN001
    counts = df["raw_label"].value_counts().sort_index()
    return (
        "SYNTHETIC acted-emotion speech, made by `areaser synth` with espeak-ng (formant synthesis)\n"
        "and signal processing. For demos and tests ONLY: scores on it show that code runs end to end\n"
        "and say NOTHING about accuracy on human speech. Not IEMOCAP: it only copies IEMOCAP's layout\n"
        "(Session*/sentences/wav, Session*/dialog/EmoEvaluation, Session*/dialog/transcriptions;\n"
        "whole-dialog wavs are not written).\n\n"
        f"utterances: {len(df)}, {df['duration_s'].sum() / 3600:.2f} h; labels: "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
        + f"\nconfig (also in synth_config.json):\n{json.dumps(cfg.to_json(), indent=2)}\n"
    )


def _is_ours(out_dir: Path) -> dict | None:
    try:
        meta = json.loads((out_dir / "synth_config.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("generator") == GENERATOR else None


def same_corpus(out_dir: str | os.PathLike, config: SynthConfig) -> bool:
    """True if ``out_dir`` already holds the corpus ``config`` describes (``synthesize`` keeps it)."""
    out_dir = Path(out_dir)
    return _is_ours(out_dir) == config.to_json() and (out_dir / "manifest.csv").is_file()


def _check_target(out_dir: Path) -> bool:
    """True if ``out_dir`` holds a previous synthetic corpus; raise if it holds anything else."""
    if out_dir.exists() and not out_dir.is_dir():
        raise SynthError(f"{out_dir}: exists and is not a folder; give a new or empty folder")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return False
    if _is_ours(out_dir) is None:
        raise SynthError(
            f"{out_dir}: folder is not empty and holds no corpus made by `areaser synth` "
            "(no synth_config.json); give a new or empty folder"
        )
    return True


def synthesize(
    out_dir: str | os.PathLike,
    config: SynthConfig = SynthConfig(),
    progress: bool = True,
    jobs: int | None = None,
) -> Path:
    """Write the synthetic corpus to ``out_dir``; return the manifest path ``out_dir/manifest.csv``.

    ``out_dir`` must be new, empty, or a corpus this function wrote before: one with the same
    config is kept as it is, another is replaced. The corpus is built in a hidden sibling folder
    and moved into place when complete, so an interrupted run leaves nothing half-written.
    ``jobs`` worker processes (default: 1 up to 200 utterances, else the CPU count, at most 8); the
    bytes written do not depend on it. The workers are spawned, so a script calling this must
    guard its top level with ``if __name__ == "__main__":``.
    """
    cfg, out_dir = config, Path(out_dir)
    manifest_path = out_dir / "manifest.csv"
    if _check_target(out_dir) and same_corpus(out_dir, cfg):
        return manifest_path  # same config, same bytes: nothing to do
    utts = plan(cfg)
    if jobs is None:
        jobs = 1 if cfg.n_utterances <= 200 else min(os.cpu_count() or 1, 8)
    jobs = max(1, min(int(jobs), len(utts)))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = out_dir.parent / f".{out_dir.name}.synth-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        results = _render_all(utts, cfg, stage, jobs, progress)
        rows = _write_tables(utts, results, cfg, stage)
        df = make_manifest(rows)
        write_manifest(df, stage / "manifest.csv")
        atomic_write_json(stage / "synth_config.json", cfg.to_json())
        atomic_write_text(stage / "README.txt", _readme(cfg, df))
        _swap_into_place(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return manifest_path


def _render_all(utts: list[Utterance], cfg: SynthConfig, stage: Path, jobs: int, progress: bool) -> dict:
    batches = [utts[i : i + _BATCH] for i in range(0, len(utts), _BATCH)]
    results: dict[str, tuple[int, str]] = {}
    bar, task = _progress_bar(progress, len(utts))
    # spawn, not fork: workers must start with an espeak-ng engine that has never spoken
    with bar, process_pool(jobs, _worker_init) as pool:
        for done in pool.map(_render_batch, batches, [cfg] * len(batches), [str(stage)] * len(batches)):
            for utt_id, n, text in done:
                results[utt_id] = (n, text)
            bar.advance(task, len(done))
    return results


def _progress_bar(progress: bool, total: int):  # noqa: ANN202

    bar = Progress(TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), disable=not progress)
    return bar, bar.add_task("synth", total=total)


def _write_tables(utts: list[Utterance], results: dict, cfg: SynthConfig, root: Path) -> list[dict]:
    """Dialog times, EmoEvaluation and transcription files; the manifest rows."""
    rng = np.random.default_rng([cfg.seed, 1])
    by_dialog: dict[str, list[dict]] = {}
    rows = []
    for u in utts:  # utterances of a dialog are consecutive, in turn order
        n, text = results[u.utt_id]
        turns = by_dialog.setdefault(u.dialog, [])
        start = (turns[-1]["end"] if turns else 0.0) + float(rng.uniform(0.3, 2.5))
        start = round(start, 4)
        row = {
            "utt_id": u.utt_id,
            "path": str(root / u.path),
            "corpus": "iemocap",
            "speaker": u.speaker.id,
            "session": f"Ses{u.session:02d}",
            "gender": u.speaker.gender,
            "label": u.label,
            "raw_label": u.raw_label,
            "duration_s": n / cfg.sr,
            "improvised": "impro" in u.dialog,
            "source_id": "",
            "start": start,
            "end": round(start + n / cfg.sr, 4),
            "text": text,
        }
        turns.append(row)
        rows.append(row)
    for dialog, turns in by_dialog.items():
        session = root / f"Session{int(dialog[3:5])}" / "dialog"
        atomic_write_text(session / "EmoEvaluation" / f"{dialog}.txt", _label_file(rng, turns))
        atomic_write_text(session / "transcriptions" / f"{dialog}.txt", _transcription_file(turns))
    return [{k: r[k] for k in r if k not in ("start", "end", "text")} for r in rows]


def _swap_into_place(stage: Path, out_dir: Path) -> None:
    """Move the finished corpus onto ``out_dir`` (replacing an empty folder or an older corpus)."""
    old = None
    if out_dir.exists() and any(out_dir.iterdir()):
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.replace(out_dir, old)
    os.replace(stage, out_dir)  # an empty out_dir is replaced in one step
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    # manifest paths were written relative to the CSV, so they stay valid after the move

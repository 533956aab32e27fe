"""Synthesise spoken digits "zero" … "nine" with espeak-ng into a small zip of class folders.

Several accents, voice variants, speeds and pitches; each clip is resampled to 8 kHz mono,
trimmed of silence and stored as 8-bit PCM WAV so the committed archive stays small.
Usage: python scripts/make_speech_digits.py [tests/data/speech_digits.zip]
"""

from __future__ import annotations

import io
import itertools
import subprocess
import sys
import wave
import zipfile
from math import gcd
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VOICES = [
    "en-us+m1",
    "en-us+f2",
    "en-gb+m3",
    "en-gb+f4",
    "en-gb-scotland+m2",
    "en-029+f1",
    "en-gb-x-rp+m4",
    "en-us+f3",
]
SPEEDS = [130, 175, 220]
PITCHES = [35, 65]
RATE = 8000


def synthesise(word: str, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word],
        check=True,
        capture_output=True,
    ).stdout
    with wave.open(io.BytesIO(wav)) as reader:
        rate = reader.getframerate()
        samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2").astype(np.float32)
    return samples / 32768.0, rate


def to_8bit_wav(samples: np.ndarray, rate: int) -> bytes:
    common = gcd(RATE, rate)
    audio = resample_poly(samples, RATE // common, rate // common)
    loud = np.flatnonzero(np.abs(audio) > 0.02)
    audio = audio[max(loud[0] - 160, 0) : loud[-1] + 160] if len(loud) else audio
    audio = audio / max(float(np.abs(audio).max()), 1e-6) * 0.9
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(1)
        writer.setframerate(RATE)
        writer.writeframes(np.clip(audio * 127 + 128, 0, 255).astype(np.uint8).tobytes())
    return buffer.getvalue()


def main(out: Path) -> None:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for word, voice, speed, pitch in itertools.product(WORDS, VOICES, SPEEDS, PITCHES):
            samples, rate = synthesise(word, voice, speed, pitch)
            name = f"{word}/{voice.replace('+', '_')}-s{speed}-p{pitch}.wav"
            archive.writestr(name, to_8bit_wav(samples, rate))
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("tests/data/speech_digits.zip"))

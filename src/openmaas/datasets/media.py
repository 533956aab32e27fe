"""Decoding of the media files found in class-folder archives: images with Pillow, WAV audio
with the standard library's `wave` module. Both return plain numpy arrays.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from openmaas.errors import ValidationFailed

MAX_IMAGE_PIXELS = 64 * 1024 * 1024


@dataclass(frozen=True)
class WavInfo:
    sample_rate: int
    channels: int
    sample_width: int
    frames: int


def image_info(data: bytes) -> tuple[int, int, str]:
    """(width, height, mode) of an encoded image; raises ValueError when it cannot be decoded."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise ValueError(f"{image.width}x{image.height} pixels is too large")
            image.load()
            return image.width, image.height, image.mode
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from exc


def decode_image(data: bytes, size: tuple[int, int], grayscale: bool) -> np.ndarray:
    """Decode and resize an image to a float32 array (channels, height, width) in [0, 1]."""
    try:
        with Image.open(io.BytesIO(data)) as source:
            image = source.convert("L" if grayscale else "RGB")
        height, width = size
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValidationFailed(f"cannot decode the image: {exc}", param="image") from exc
    return array[None, :, :] if grayscale else array.transpose(2, 0, 1)


def wav_info(data: bytes) -> WavInfo:
    """Header facts of a PCM WAV file; raises ValueError when it is not one."""
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            info = WavInfo(
                reader.getframerate(), reader.getnchannels(), reader.getsampwidth(), reader.getnframes()
            )
    except (wave.Error, EOFError) as exc:
        raise ValueError(str(exc)) from exc
    if info.sample_width not in (1, 2, 3, 4) or info.frames == 0:
        raise ValueError(f"unsupported WAV: {info.sample_width}-byte samples, {info.frames} frames")
    return info


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Decode a PCM WAV to mono float32 samples in [-1, 1] and its sample rate."""
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            rate, channels, width = reader.getframerate(), reader.getnchannels(), reader.getsampwidth()
            raw = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValidationFailed(f"cannot decode the WAV audio: {exc}", param="audio") from exc
    if width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        triples = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        packed = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        samples = (np.where(packed >= 1 << 23, packed - (1 << 24), packed) / float(1 << 23)).astype(
            np.float32
        )
    elif width == 4:
        samples = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2147483648.0
    else:
        raise ValidationFailed(f"unsupported WAV sample width {width}", param="audio")
    if channels > 1:
        samples = samples[: len(samples) // channels * channels].reshape(-1, channels).mean(axis=1)
    return samples, rate

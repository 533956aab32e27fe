"""Audio preprocessing: WAV bytes → mono at a fixed sample rate → fixed duration → log-mel
spectrogram, computed with torch.stft and our own triangular mel filterbank (HTK mel scale),
normalised per mel bin with statistics from the training clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from openmaas.datasets.media import decode_wav
from openmaas.datasets.params import parse_dataclass, to_dict
from openmaas.datasets.preprocessing.base import State
from openmaas.datasets.preprocessing.spec import AudioSpec
from openmaas.errors import ValidationFailed

LOG_FLOOR = 1e-6


def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    """Triangular filters, shape (n_mels, n_fft // 2 + 1), evenly spaced on the mel scale."""
    bin_hz = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges_mel = torch.linspace(
        float(hz_to_mel(torch.tensor(f_min))),
        float(hz_to_mel(torch.tensor(f_max))),
        n_mels + 2,
        dtype=torch.float64,
    )
    edges = mel_to_hz(edges_mel)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_hz[None, :] - lower) / (centre - lower)
    falling = (upper - bin_hz[None, :]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


def resample(samples: torch.Tensor, source_rate: int, target_rate: int) -> torch.Tensor:
    """Linear-interpolation resampling (adequate for the low-rate speech the platform trains on)."""
    if source_rate == target_rate:
        return samples
    length = max(1, round(len(samples) * target_rate / source_rate))
    return F.interpolate(samples.view(1, 1, -1), size=length, mode="linear", align_corners=False).view(-1)


class AudioPreprocessor:
    kind = "audio"

    def __init__(self, spec: AudioSpec, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.spec = spec
        self.mean = mean
        self.std = std
        f_max = spec.f_max or spec.sample_rate / 2
        self.filterbank = mel_filterbank(spec.sample_rate, spec.n_fft, spec.n_mels, spec.f_min, f_max)
        self.window = torch.hann_window(spec.n_fft)

    @property
    def frames(self) -> int:
        samples = round(self.spec.duration_s * self.spec.sample_rate)
        return samples // self.spec.hop_length + 1

    @classmethod
    def fit(cls, clips: Sequence[bytes], spec: AudioSpec) -> AudioPreprocessor:
        fitted = cls(spec, torch.zeros(spec.n_mels), torch.ones(spec.n_mels))
        batch = fitted.log_mel(clips)
        fitted.mean = batch.mean(dim=(0, 2))
        fitted.std = batch.std(dim=(0, 2)).clamp_min(1e-4)
        return fitted

    def waveform(self, data: bytes) -> torch.Tensor:
        samples, rate = decode_wav(data)
        wave = resample(torch.from_numpy(samples.copy()), rate, self.spec.sample_rate)
        target = round(self.spec.duration_s * self.spec.sample_rate)
        if len(wave) >= target:
            return wave[:target]
        return F.pad(wave, (0, target - len(wave)))

    def log_mel(self, clips: Sequence[bytes]) -> torch.Tensor:
        """(batch, n_mels, frames) log-mel energies, before normalisation."""
        waves = torch.stack([self.waveform(data) for data in clips])
        spectrum = torch.stft(
            waves, self.spec.n_fft, self.spec.hop_length, window=self.window, center=True, return_complex=True
        )
        power = spectrum.abs().pow(2)
        return torch.log(torch.matmul(self.filterbank, power) + LOG_FLOOR)

    def transform(self, raw: Sequence[Any]) -> torch.Tensor:
        """(batch, 1, n_mels, frames) normalised log-mel spectrograms of WAV bytes."""
        if not raw or not all(isinstance(data, bytes | bytearray) for data in raw):
            raise ValidationFailed("inputs must be a non-empty list of WAV files", param="inputs")
        features = self.log_mel([bytes(data) for data in raw])
        features = (features - self.mean.view(1, -1, 1)) / self.std.view(1, -1, 1)
        return features.unsqueeze(1)

    def state(self) -> State:
        return {"kind": self.kind, "spec": to_dict(self.spec)}, {
            "mean": self.mean.clone(),
            "std": self.std.clone(),
        }

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, torch.Tensor]) -> AudioPreprocessor:
        return cls(parse_dataclass(AudioSpec, meta["spec"]), arrays["mean"], arrays["std"])

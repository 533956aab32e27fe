"""Declarative preprocessing: a JSON spec, fitted on the training split into a preprocessor
whose state is JSON plus safetensors arrays and which transforms raw serving inputs to tensors.
"""

from openmaas.datasets.preprocessing.audio import AudioPreprocessor
from openmaas.datasets.preprocessing.base import FittedPreprocessor, LabelEncoder
from openmaas.datasets.preprocessing.image import ImagePreprocessor
from openmaas.datasets.preprocessing.interactions import InteractionIndex
from openmaas.datasets.preprocessing.spec import (
    AudioSpec,
    ImageSpec,
    PreprocessingSpec,
    SplitSpec,
    TabularSpec,
    TextSpec,
)
from openmaas.datasets.preprocessing.split import Split, split_examples, split_interactions
from openmaas.datasets.preprocessing.state import (
    load_preprocessor,
    preprocessor_from_state,
    save_preprocessor,
)
from openmaas.datasets.preprocessing.tabular import TabularPreprocessor
from openmaas.datasets.preprocessing.text import TextPreprocessor

__all__ = [
    "AudioPreprocessor",
    "AudioSpec",
    "FittedPreprocessor",
    "ImagePreprocessor",
    "ImageSpec",
    "InteractionIndex",
    "LabelEncoder",
    "PreprocessingSpec",
    "Split",
    "SplitSpec",
    "TabularPreprocessor",
    "TabularSpec",
    "TextPreprocessor",
    "TextSpec",
    "load_preprocessor",
    "preprocessor_from_state",
    "save_preprocessor",
    "split_examples",
    "split_interactions",
]

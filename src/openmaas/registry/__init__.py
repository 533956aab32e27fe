"""The registry: the catalogue of models a tenant owns — models and their immutable versions
with artifacts, lineage, aliases and tags — and how a version gets in (training registers one,
imports bring Hugging Face folders and ONNX files).

The model artifact format itself is `artifact.py`; nothing here knows about HTTP.
"""

"""The registry: the catalogue of versioned things a tenant owns — dataset versions and model
versions with their artifacts, lineage, aliases and tags — and the artifact store they live in.

The model artifact format itself is `artifact.py`; nothing here knows about HTTP.
"""

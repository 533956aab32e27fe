"""Transformer encoders imported from Hugging Face folders: BERT-family models for sentence
embeddings and text classification, implemented here and loaded from safetensors."""

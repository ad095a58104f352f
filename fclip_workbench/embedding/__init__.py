"""Embedding: models and their weights, precisions, image decoding, the embedding engines and the vector store."""

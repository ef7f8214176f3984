"""Inference: the batching engine and its OpenAI-compatible HTTP server."""

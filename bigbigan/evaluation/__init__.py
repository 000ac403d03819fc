"""Evaluation: metrics computed from samples, encodings and reconstructions, and figures."""

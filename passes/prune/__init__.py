"""Pruning passes: unstructured magnitude pruning and structured channel pruning."""

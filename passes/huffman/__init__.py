"""Entropy coding of weights into edgec's compressed weight container."""

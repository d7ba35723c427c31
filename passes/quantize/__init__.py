"""Quantization passes: calibrated int8 Q/DQ per backend scheme, fp16, and accuracy helpers."""

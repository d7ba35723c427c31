"""Quantization machinery shared by the quantize passes, accuracy control and debug-precision."""

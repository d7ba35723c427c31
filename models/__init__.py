"""Reference models: training scripts, small committed ONNX files, and a registry of real
pretrained models shipped in pip packages. Installed as edgec.models."""

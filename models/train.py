"""Train the reference models on Fashion-MNIST, deterministically, and export them to ONNX.

    python -m edgec.models.train                 # all three, into this directory
    python -m edgec.models.train lenet5 --epochs 2 --out /tmp/models

Same seed, same data order, deterministic kernels and a fixed thread count give the same
weights on the same machine. The test accuracy of each exported ONNX file (run in
onnxruntime) is recorded in models.json beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from edgec.models import fashion_mnist
from edgec.progress import Progress

SEED = 0
THREADS = 2
BATCH = 128


def build(name: str):
    import torch.nn as nn

    if name == "lenet300":
        # LeNet-300-100 as in Deep Compression (Han et al. 2016): 266,610 parameters.
        return nn.Sequential(
            nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10)
        )
    if name == "lenet5":
        # Caffe's LeNet-5, the one Deep Compression used: 431,080 parameters.
        return nn.Sequential(
            nn.Conv2d(1, 20, 5),
            nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(800, 500),
            nn.ReLU(),
            nn.Linear(500, 10),
        )
    if name == "mobilenetv2-fmnist":
        return MobileNetV2Small()
    raise ValueError(f"unknown model {name}")


def _conv_bn(cin, cout, kernel=1, stride=1, groups=1, act=True):
    import torch.nn as nn

    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU6()] if act else layers


def _inverted_residual_cls():
    import torch.nn as nn

    class InvertedResidual(nn.Module):
        """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection, residual when shapes match."""

        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = cin * expand
            layers = _conv_bn(cin, hidden) if expand != 1 else []
            layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden)
            layers += _conv_bn(hidden, cout, act=False)
            self.block = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.block(x)
            return x + y if self.residual else y

    return InvertedResidual


def MobileNetV2Small():
    """A MobileNetV2 scaled for 28x28 inputs: (expand, channels, repeats, stride) per stage."""
    import torch.nn as nn

    block = _inverted_residual_cls()
    layers, cin = _conv_bn(1, 16, 3), 16
    for expand, cout, repeats, stride in [(1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 2, 1)]:
        for i in range(repeats):
            layers.append(block(cin, cout, stride if i == 0 else 1, expand))
            cin = cout
    layers += _conv_bn(cin, 128)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(128, 10)]
    return nn.Sequential(*layers)


RECIPES = {
    # name: (file, epochs, optimizer settings)
    "lenet300": ("lenet300.onnx", 12, {"lr": 1e-3}),
    "lenet5": ("lenet5.onnx", 12, {"lr": 1e-3}),
    "mobilenetv2-fmnist": ("mobilenetv2_fmnist.onnx", 10, {"lr": 2e-3}),
}


def train(name: str, epochs: int, lr: float, show_progress: bool = True):
    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    images, labels = fashion_mnist.load("train")
    x = torch.from_numpy(fashion_mnist.normalize(images))
    y = torch.from_numpy(labels.astype(np.int64))
    model = build(name)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(x) + BATCH - 1) // BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    loss_fn = torch.nn.CrossEntropyLoss()
    order_rng = torch.Generator().manual_seed(SEED)
    with Progress(steps, f"training {name}", enabled=show_progress) as progress:
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(x), generator=order_rng)
            for start in range(0, len(x), BATCH):
                idx = order[start : start + BATCH]
                optimizer.zero_grad()
                loss = loss_fn(model(x[idx]), y[idx])
                loss.backward()
                optimizer.step()
                schedule.step()
                progress.update(note=f"epoch {epoch + 1}/{epochs} loss {loss.item():.3f}")
    return model.eval()


def test_accuracy_onnx(path: Path) -> float:
    """Top-1 accuracy of an exported model on the 10,000 test images, run in onnxruntime."""
    from edgec import runner

    images, labels = fashion_mnist.load("test")
    session = runner.make_session(path)
    name = session.get_inputs()[0].name
    logits = np.concatenate(
        [
            session.run(None, {name: fashion_mnist.normalize(images[i : i + 1000])})[0]
            for i in range(0, len(images), 1000)
        ]
    )
    return float(np.mean(logits.argmax(1) == labels))


def export(model, path: Path) -> None:
    import torch

    from edgec import ir
    from edgec.frontends.torch import from_module

    # A plain export (no exporter-side folding), as users get it: edgec's passes do the cleanup.
    example = torch.zeros(1, 1, 28, 28)
    exported = from_module(model, (example,), input_names=["input"], output_names=["logits"], dynamic_batch=True)
    exported.metadata.update(
        {
            "edgec.trained_by": "models/train.py",
            "edgec.normalize": f"x/255, (x - {fashion_mnist.MEAN}) / {fashion_mnist.STD}",
        }
    )
    ir.save(exported, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgec.models.train", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"models to train (default all: {', '.join(RECIPES)})")
    parser.add_argument("--epochs", type=int, help="override the recipe's epoch count")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    args.names = args.names or list(RECIPES)
    args.out.mkdir(parents=True, exist_ok=True)
    record_path = args.out / "models.json"
    records = json.loads(record_path.read_text()) if record_path.exists() else {}
    import torch

    for name in args.names:
        filename, epochs, settings = RECIPES[name]
        epochs = args.epochs or epochs
        start = time.perf_counter()
        model = train(name, epochs, **settings)
        path = args.out / filename
        export(model, path)
        accuracy = test_accuracy_onnx(path)
        records[name] = {
            "file": filename,
            "test_accuracy": round(accuracy, 4),
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "epochs": epochs,
            "batch": BATCH,
            "seed": SEED,
            "threads": THREADS,
            "torch": torch.__version__,
            "train_seconds": round(time.perf_counter() - start, 1),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
        print(f"{name}: test accuracy {accuracy:.4f} -> {path}", file=sys.stderr)
    record_path.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

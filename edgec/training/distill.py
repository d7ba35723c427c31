"""Recovery fine-tuning: train the compressed graph to match the uncompressed teacher (and the labels).

The loss is Hinton's distillation: KL divergence between the temperature-softened class
distributions of teacher and student (times T^2), mixed with cross-entropy on the labels when
there are labels; outputs that are not class scores are matched by mean squared error. The
compression constraints (pruning masks, shared indices) hold throughout: see GraphModule.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
import torch
import torch.nn.functional as F

from edgec import ir, runner
from edgec.errors import EdgecError
from edgec.quant import collect
from edgec.progress import Progress
from edgec.training.graph_module import GraphModule


@dataclass
class Settings:
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 128
    distill: bool = True
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the distillation term when labels exist
    seed: int = 0
    max_samples: int = 0  # 0: all
    schedule: str = "cosine"  # learning rate: "cosine" (annealed to 0 over the run) or "constant"


def score_tensor(graph: gs.Graph) -> str:
    """The tensor to train on: the first output, or the input of the Softmax producing it (logits)."""
    out = graph.outputs[0]
    producer = out.inputs[0] if out.inputs else None
    if producer is not None and producer.op in ("Softmax", "LogSoftmax"):
        return producer.inputs[0].name
    return out.name


def _batchable(graph: gs.Graph) -> bool:
    return all(not t.shape or t.shape[0] != 1 for t in graph.inputs)


def _stack(samples: list[dict], names: list[str]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.concatenate([np.asarray(s[name]) for s in samples])) for name in names}


def _forward(module: GraphModule, feeds: dict[str, torch.Tensor], name: str, batchable: bool) -> torch.Tensor:
    if batchable:
        return module(feeds, [name])[0]
    count = len(next(iter(feeds.values())))
    return torch.cat([module({k: v[i : i + 1] for k, v in feeds.items()}, [name])[0] for i in range(count)])


def _loss(student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor | None, s: Settings):
    classes = student.dim() == 2 and student.shape[1] > 1
    terms = []
    if teacher is not None:
        if classes:
            t = s.temperature
            kd = F.kl_div(F.log_softmax(student / t, 1), F.softmax(teacher / t, 1), reduction="batchmean") * t * t
        else:
            kd = F.mse_loss(student, teacher)
        terms.append((s.alpha if labels is not None else 1.0, kd))
    if labels is not None:
        terms.append((1.0 - s.alpha if teacher is not None else 1.0, F.cross_entropy(student, labels)))
    return sum(weight * term for weight, term in terms)


def _teacher_scores(teacher_graph: gs.Graph, samples: list[dict]) -> torch.Tensor:
    """The uncompressed model's scores on every sample, computed once by onnxruntime: any model
    it runs can teach, whatever ops the trainable module supports."""
    name = score_tensor(teacher_graph)
    model = collect.expose(ir.Model(teacher_graph), [name])
    session = runner.make_session(model, optimize=True)
    inputs = [i.name for i in session.get_inputs()]
    parts = [session.run([name], {k: feeds[k] for k in inputs})[0] for feeds, _ in collect.batches(samples, model)]
    return torch.from_numpy(np.concatenate(parts).astype(np.float32))


def finetune(graph: gs.Graph, teacher_graph: gs.Graph | None, data, settings: Settings, progress: bool = False) -> dict:
    """Train `graph` in place on `data` (an EvalSet); returns what happened, for the pass stats."""
    start = time.perf_counter()
    torch.manual_seed(settings.seed)
    samples = data.samples
    labels = data.labels
    if settings.max_samples and len(samples) > settings.max_samples:
        keep = np.sort(np.random.default_rng(settings.seed).permutation(len(samples))[: settings.max_samples])
        samples = [samples[i] for i in keep]
        labels = None if labels is None else labels[keep]
    if not settings.distill and labels is None:
        raise EdgecError("finetune without distillation needs labelled --train data")
    names = [t.name for t in graph.inputs]
    feeds = _stack(samples, names)
    count = len(samples)
    target = torch.from_numpy(np.asarray(labels, np.int64)) if labels is not None else None
    batchable = _batchable(graph)
    student = GraphModule(graph)
    scores = score_tensor(graph)

    teacher_scores = None
    if settings.distill:
        if teacher_graph is None:
            raise EdgecError("finetune{distill=true} needs the uncompressed model as teacher")
        teacher_scores = _teacher_scores(teacher_graph, samples)

    optimizer = torch.optim.Adam(student.params, lr=settings.lr)
    generator = torch.Generator().manual_seed(settings.seed)
    steps = settings.epochs * -(-count // settings.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if settings.schedule == "cosine" else None
    bar = Progress(steps, "finetune", enabled=progress)
    losses = []
    for _ in range(settings.epochs):
        order = torch.randperm(count, generator=generator)
        total = 0.0
        for i in range(0, count, settings.batch_size):
            batch = order[i : i + settings.batch_size]
            out = _forward(student, {k: v[batch] for k, v in feeds.items()}, scores, batchable)
            loss = _loss(
                out,
                None if teacher_scores is None else teacher_scores[batch],
                None if target is None else target[batch],
                settings,
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            student.constrain()
            value = loss.item()
            total += value * len(batch)
            bar.update(note=f"loss {value:.4f}")
        losses.append(round(total / count, 5))
    bar.close()
    student.export()

    stats = {"samples": count, "epochs": settings.epochs, "loss_per_epoch": losses}
    with torch.no_grad():
        final = torch.cat(
            [
                _forward(student, {k: v[i : i + 256] for k, v in feeds.items()}, scores, batchable)
                for i in range(0, count, 256)
            ]
        )
    if target is not None and final.dim() == 2:
        stats["train_accuracy"] = round(float((final.argmax(1) == target).float().mean()), 4)
    if teacher_scores is not None and final.dim() == 2:
        stats["teacher_agreement"] = round(float((final.argmax(1) == teacher_scores.argmax(1)).float().mean()), 4)
    stats["seconds"] = round(time.perf_counter() - start, 2)
    return stats

"""The bilevel methods' training iteration against a plain one, as a ratio (issue #7).

One *plain* step: forward + cross-entropy + backward + SGD step (momentum 0.9) on a batch of
100. One *meta* step is a whole training iteration of the method on the same model and batch
plus a trusted batch of 100, through the methods' own losses and the look-ahead module
(:mod:`noisylab.methods.lookahead`): the look-ahead meta-gradient, the weights, (MW-Net: the
weighting network's step) and the real weighted step. L2RW and Meta-Weight-Net, each with
backend ``higher`` and ``func``, and L2RW's default ``alignment`` form (one
forward-mode pass, no double backward). The L2RW paper reports about 3x; the goal is <= 2.5x on GPU.

    python -m noisylab.benchmarks.meta [--device cpu|cuda] [--models resnet32 cifar_quick] [--repeats N]

The variants are timed in turn in every repeat (machine noise hits them alike), median of
repeats; on CUDA with warm-up and synchronised timing. On the CPU a ResNet-32 step on a batch
of 100 takes seconds, so the plan is short (the output says so).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from noisylab.benchmarks.fused import Plan, sync
from noisylab.methods.bilevel import trusted_loss
from noisylab.methods.l2rw import normalised_weights
from noisylab.methods.lookahead import LookaheadSettings, alignment_gradient, meta_gradient
from noisylab.methods.mwnet import WeightNet, inner_loss, weighted_loss
from noisylab.models import build_model

BATCH = 100
NUM_CLASSES = 10
INPUT_SHAPE = (3, 32, 32)
VARIANTS = ("plain", "l2rw/alignment", "l2rw/higher", "l2rw/func", "mwnet/higher", "mwnet/func")
CUDA_MODELS = ("resnet32", "wrn28_10")  # MW-Net's two networks
CPU_MODELS = ("cifar_quick", "resnet32")
CUDA_PLAN = Plan(warmup=5, repeats=10, steps=5)
CPU_PLANS = {"cifar_quick": Plan(warmup=1, repeats=5, steps=1), "resnet32": Plan(warmup=1, repeats=2, steps=1)}


@dataclass
class Setup:
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    x: torch.Tensor
    y: torch.Tensor
    xv: torch.Tensor
    yv: torch.Tensor


def setup(model: str, device: torch.device) -> Setup:
    torch.manual_seed(0)
    net = build_model(model, INPUT_SHAPE, NUM_CLASSES).to(device).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(1)
    x, xv = (torch.rand(BATCH, *INPUT_SHAPE, generator=g).to(device) for _ in range(2))
    y, yv = (torch.randint(0, NUM_CLASSES, (BATCH,), generator=g).to(device) for _ in range(2))
    return Setup(net, optimizer, x, y, xv, yv)


def real_step(s: Setup, loss: torch.Tensor) -> None:
    s.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    s.optimizer.step()


def plain_step(s: Setup) -> Callable[[], None]:
    return lambda: real_step(s, F.cross_entropy(s.net(s.x), s.y))


def l2rw_step(s: Setup, backend: str) -> Callable[[], None]:
    """L2RW's iteration (``noisylab.methods.l2rw``): ε = 0, w = normalised max(−∂L_trusted/∂ε, 0)."""
    settings = LookaheadSettings(backend="higher" if backend == "alignment" else backend)

    def losses(forward):
        return F.cross_entropy(forward(s.x), s.y, reduction="none")

    def step() -> None:
        if backend == "alignment":  # the method's default: no double backward
            meta = alignment_gradient(s.net, losses, trusted_loss(s.xv, s.yv), s.optimizer.param_groups[0]["lr"])
        else:
            eps = torch.zeros(BATCH, device=s.x.device, requires_grad=True)
            meta = meta_gradient(s.net, s.optimizer, lambda forward: (eps * losses(forward)).sum(),
                                 trusted_loss(s.xv, s.yv), [eps], settings)
        w = normalised_weights(meta.grads[0])
        real_step(s, (w * F.cross_entropy(s.net(s.x), s.y, reduction="none")).sum())
    return step


def mwnet_step(s: Setup, backend: str) -> Callable[[], None]:
    """Meta-Weight-Net's iteration (``noisylab.methods.mwnet``, the paper's sum normalisation)."""
    settings = LookaheadSettings(backend=backend)
    vnet = WeightNet(100).to(s.x.device)
    meta_optimizer = torch.optim.SGD(vnet.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=5e-4)
    theta = list(vnet.parameters())

    def step() -> None:
        meta = meta_gradient(s.net, s.optimizer, inner_loss(vnet, s.x, s.y, "sum"), trusted_loss(s.xv, s.yv),
                             theta, settings)
        for p, g in zip(theta, meta.grads):
            p.grad = g
        meta_optimizer.step()
        losses = F.cross_entropy(s.net(s.x), s.y, reduction="none")
        with torch.no_grad():
            v = vnet.weights(losses.detach())
        real_step(s, weighted_loss(losses, v, "sum"))
    return step


def make_step(variant: str, s: Setup) -> Callable[[], None]:
    if variant == "plain":
        return plain_step(s)
    method, backend = variant.split("/")
    return (l2rw_step if method == "l2rw" else mwnet_step)(s, backend)


def measure(model: str, device: torch.device, plan: Plan) -> dict:
    steps = {}
    for variant in VARIANTS:  # one model and optimiser each: the variants do not share state
        steps[variant] = make_step(variant, setup(model, device))
        for _ in range(plan.warmup):
            steps[variant]()
    sync(device)
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for _ in range(plan.repeats):
        for variant in VARIANTS:
            started = time.perf_counter()
            for _ in range(plan.steps):
                steps[variant]()
            sync(device)
            times[variant].append((time.perf_counter() - started) / plan.steps)
    result = {"model": model, "batch": BATCH, "warmup": plan.warmup, "repeats": plan.repeats,
              "steps_per_repeat": plan.steps}
    for variant in VARIANTS:
        result[f"{variant}_ms"] = 1000 * statistics.median(times[variant])
    for variant in VARIANTS[1:]:
        result[f"{variant}/plain"] = result[f"{variant}_ms"] / result["plain_ms"]
    return result


def report(result: dict, device: torch.device) -> None:
    print(f"{result['model']} on 3x32x32, batch {result['batch']} (+ trusted {result['batch']}), median of "
          f"{result['repeats']} repeats x {result['steps_per_repeat']} steps after {result['warmup']} warm-up:")
    for variant in VARIANTS:
        ratio = "" if variant == "plain" else f"   {result[f'{variant}/plain']:.2f}x plain"
        print(f"  {variant:13s} {result[f'{variant}_ms']:10.1f} ms/step{ratio}")
    print("  (goal on GPU <= 2.5x; the L2RW paper reports about 3x"
          + (")" if device.type == "cuda" else "; this is not a GPU run)"))


def main(device: str | torch.device | None = None, models=None, repeats: int | None = None) -> dict:
    """Measures each model on ``device`` (default: CUDA when available, else CPU), prints the
    ratios and returns ``{"device": ..., "<model>": {...ms and ratios...}}``."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    torch.backends.cudnn.benchmark = cuda
    threads = "" if cuda else f", {torch.get_num_threads()} CPU threads"
    print(f"Bilevel training iteration vs a plain step (L2RW, Meta-Weight-Net; both look-ahead backends) "
          f"on {device}{threads}")
    results: dict = {"device": str(device)}
    for model in models or (CUDA_MODELS if cuda else CPU_MODELS):
        plan = CUDA_PLAN if cuda else CPU_PLANS.get(model, Plan(1, 2, 1))
        if repeats is not None:
            plan = Plan(plan.warmup, repeats, plan.steps)
        results[model] = measure(model, device, plan)
        report(results[model], device)
    return results


def cli(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--models", nargs="+", default=None, help="model names (default: per device)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per variant")
    args = parser.parse_args(argv)
    return main(args.device, args.models, args.repeats)


if __name__ == "__main__":
    cli()

"""Two-network step time: one network, the plain pair and the fused (vmapped) pair.

One step is forward + Co-teaching loss (``cross_update_losses``) + backward + Adam step, on
random data of the benchmark's shape. The single network's step uses the same loss code with
itself as peer, so the three differ only in the networks run. Reported from one run, as
ratios fused/plain and fused/single (goal on GPU: fused/single <= 1.3).

    python -m noisylab.benchmarks.fused [--device cpu|cuda] [--repeats N]

On CUDA: batch 128, warm-up steps, CUDA-synchronised timing of blocks of steps, median of
repeats. On CPU the cnn9 batch is cut to 8 and the repeats to a few so that the run takes
about a minute; the output says so. The three variants are timed in turn in every repeat,
so that a busy machine slows them alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch

from noisylab.methods.coteaching import cross_update_losses
from noisylab.methods.pair import make_pair
from noisylab.models import build_model

FORGET_RATE = 0.2
VARIANTS = ("single", "plain", "fused")


@dataclass(frozen=True)
class Case:
    model: str
    input_shape: tuple[int, ...]
    batch: int  # on CUDA
    cpu_batch: int


CASES = (
    Case("cnn9", (3, 32, 32), batch=128, cpu_batch=8),  # Co-teaching on CIFAR
    Case("mlp", (1, 28, 28), batch=128, cpu_batch=128),  # Co-teaching+/JoCoR on MNIST
)


@dataclass(frozen=True)
class Plan:
    warmup: int  # steps before timing
    repeats: int  # timed blocks; the median is reported
    steps: int  # steps per timed block


CUDA_PLAN = Plan(warmup=10, repeats=20, steps=10)
CPU_PLANS = {"cnn9": Plan(warmup=1, repeats=3, steps=1), "mlp": Plan(warmup=2, repeats=7, steps=3)}


def make_step(variant: str, case: Case, device: torch.device, num_classes: int = 10):
    """A closure running one training step of ``variant`` on a fixed random batch."""
    def build():
        return build_model(case.model, case.input_shape, num_classes)

    torch.manual_seed(0)
    if variant == "single":
        network = build().to(device)

        def logits(x):
            out = network(x)
            return out, out
    else:
        network = make_pair(build, fused=variant == "fused").to(device)
        logits = network
    network.train()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    batch = case.batch if device.type == "cuda" else case.cpu_batch
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(batch, *case.input_shape, generator=generator).to(device)
    y = torch.randint(0, num_classes, (batch,), generator=generator).to(device)

    def step() -> None:
        logits1, logits2 = logits(x)
        loss1, loss2, _, _ = cross_update_losses(logits1, logits2, y, FORGET_RATE)
        loss = loss1 if variant == "single" else loss1 + loss2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, batch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(case: Case, device: torch.device, plan: Plan) -> dict:
    steps = {}
    for variant in VARIANTS:
        steps[variant], batch = make_step(variant, case, device)
        for _ in range(plan.warmup):
            steps[variant]()
    sync(device)
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for _ in range(plan.repeats):
        for variant in VARIANTS:  # in turn: machine noise hits all three alike
            started = time.perf_counter()
            for _ in range(plan.steps):
                steps[variant]()
            sync(device)
            times[variant].append((time.perf_counter() - started) / plan.steps)
    result = {"model": case.model, "input_shape": list(case.input_shape), "batch": batch,
              "warmup": plan.warmup, "repeats": plan.repeats, "steps_per_repeat": plan.steps}
    for variant in VARIANTS:
        result[f"{variant}_ms"] = 1000 * statistics.median(times[variant])
    result["fused/plain"] = result["fused_ms"] / result["plain_ms"]
    result["fused/single"] = result["fused_ms"] / result["single_ms"]
    result["plain/single"] = result["plain_ms"] / result["single_ms"]
    return result


def report(result: dict, device: torch.device, note: str) -> None:
    shape = "x".join(map(str, result["input_shape"]))
    print(f"{result['model']} on {shape}, batch {result['batch']}, median of {result['repeats']} repeats "
          f"x {result['steps_per_repeat']} steps after {result['warmup']} warm-up{note}:")
    for variant, label in zip(VARIANTS, ("single network", "plain pair", "fused pair"), strict=True):
        print(f"  {label:15s} {result[f'{variant}_ms']:9.2f} ms/step")
    goal = "goal on GPU <= 1.30" + ("" if device.type == "cuda" else "; not a GPU run")
    print(f"  fused/plain {result['fused/plain']:.3f}   fused/single {result['fused/single']:.3f} ({goal})"
          f"   plain/single {result['plain/single']:.3f}")


def main(device: str | torch.device | None = None, repeats: int | None = None) -> dict:
    """Measures every case on ``device`` (default: CUDA when available, else CPU), prints
    the table and returns ``{"device": ..., "<model>": {...ms and ratios...}}``."""
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    print(f"Two-network step (forward + Co-teaching loss + backward + Adam step) on {device}"
          + ("" if device.type == "cuda" else f", {torch.get_num_threads()} CPU threads"))
    results: dict = {"device": str(device)}
    for case in CASES:
        plan = CUDA_PLAN if device.type == "cuda" else CPU_PLANS[case.model]
        if repeats is not None:
            plan = Plan(plan.warmup, repeats, plan.steps)
        note = ""
        if device.type != "cuda" and case.cpu_batch != case.batch:
            note = f" (CPU: batch cut from {case.batch} and few repeats, to keep the run short)"
        results[case.model] = measure(case, device, plan)
        report(results[case.model], device, note)
    return results


def cli(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per variant")
    args = parser.parse_args(argv)
    return main(args.device, args.repeats)


if __name__ == "__main__":
    cli()

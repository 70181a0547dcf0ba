"""``make bench``: noisylab's speed goals, each measured as a ratio against a reference
timed in the same run (never as absolute numbers in tests).

1. framework overhead: a ``ce`` step through noisylab vs a plain PyTorch loop (goal <= 1.10x);
2. two networks in one step: fused (vmapped) vs plain pair vs one network (goal on GPU:
   fused pair <= 1.3x one network);
3. the beta-mixture methods' pass over the training set + fit vs one training epoch (``dyr_h``);
4. the bilevel methods' iteration (L2RW, Meta-Weight-Net; look-ahead with ``higher`` and
   ``torch.func``) vs a plain step on the same model and batch (goal on GPU <= 2.5x).
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings

import torch


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description="noisylab benchmarks (ratios measured in one run)")
    parser.add_argument("--only", choices=["overhead", "fused", "bmm", "meta"], help="run one benchmark")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args(argv)
    from noisylab.train import quiet_lightning

    quiet_lightning()
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"noisylab bench on {device} ({torch.cuda.get_device_name() if device == 'cuda' else 'CPU'})\n")
    results = {}
    if args.only in (None, "overhead"):
        from noisylab.benchmarks import overhead

        results["overhead"] = overhead.main([])
        print()
    if args.only in (None, "fused"):
        from noisylab.benchmarks import fused

        results["fused"] = fused.main(device)
        print()
    if args.only in (None, "bmm"):
        from noisylab.benchmarks import bmm_pass

        results["bmm"] = bmm_pass.main([], device)
        print()
    if args.only in (None, "meta"):
        from noisylab.benchmarks import meta

        results["meta"] = meta.main(device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
    return results


if __name__ == "__main__":
    main()

"""The GPU-path settings (issue #9), ``conf/speed/*.yaml``, applied by ``noisylab.train``.

* ``bf16``: the Trainer's ``precision: bf16-mixed`` (autocast; weights and optimiser stay
  fp32), where supported: the CPU, and CUDA devices that report bf16 support; elsewhere a
  warning and fp32.
* ``channels_last``: the networks' 4-D (conv) weights in channels_last memory format, so
  cuDNN picks its NHWC kernels; MLPs and the stacked (5-D) weights of a fused pair are left
  as they are. Inputs are not converted (a conv with channels_last weights returns
  channels_last activations).
* ``compile``: ``nn.Module.compile()`` of every training network, in place (the parameter
  names, hence checkpoints, are those of the eager run). Bilevel methods refuse it up front:
  their look-ahead differentiates through a functional copy of the network twice, which
  compiled graphs do not support (``lookahead._refuse_compiled`` is the second guard).
* ``fused``: fused Adam/SGD kernels (``fused=True``) when the parameters are on CUDA; on
  the CPU the setting is ignored with a note (the CPU path stays bit-identical).
* ``data_on_device``: ``auto`` turns ``data.on_device`` on when the run's device is a GPU
  and the in-memory arrays take at most half its free memory; ``true`` on any GPU;
  ``false`` leaves ``data.on_device`` as the data config says.

None of this has been measured on a GPU yet (no GPU was available when it was written).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from noisylab.errors import ConfigError

log = logging.getLogger("noisylab")
BF16 = "bf16-mixed"


def settings(cfg) -> dict:
    """The run's ``speed`` group as a plain dict (all off when the config has none)."""
    from omegaconf import OmegaConf

    from noisylab.schema import Speed

    given = cfg.get("speed")
    values = OmegaConf.to_container(given, resolve=True) if given is not None else {}
    return Speed(**values).model_dump()


def check(speed: dict, method_cls, method_name: str) -> None:
    """Refuses what cannot work, before anything is built: compile with a bilevel method."""
    from noisylab.methods.bilevel import BilevelMethod

    if speed["compile"] and issubclass(method_cls, BilevelMethod):
        raise ConfigError(f"speed.compile=true cannot be used with method={method_name}: its look-ahead "
                          "differentiates through the network twice, which torch.compile does not support; "
                          "set speed.compile=false.")


def uses_cuda(accelerator) -> bool:
    return str(accelerator) in ("gpu", "cuda", "auto") and torch.cuda.is_available()


def trainer_overrides(speed: dict, trainer_cfg) -> dict:
    """Extra Trainer arguments: ``precision`` for bf16 where the device supports it."""
    if not speed["bf16"]:
        return {}
    accelerator = trainer_cfg.get("accelerator", "auto")
    cuda = uses_cuda(accelerator)
    if (cuda and torch.cuda.is_bf16_supported()) or (not cuda and str(accelerator) in ("cpu", "auto")):
        return {"precision": BF16}
    log.warning("speed.bf16: this device (%s) has no bf16 support; training in fp32.", accelerator)
    return {}


def apply(speed: dict, method, datamodule, trainer) -> None:
    """Memory format, compilation and optimiser kernels of the method's networks, and the
    dataset's placement, for the device ``trainer`` runs on."""
    cuda = trainer.strategy.root_device.type == "cuda"
    networks = method.networks().values()
    on_cpu = [key for key in ("bf16", "channels_last", "compile") if speed[key]] if not cuda else []
    if on_cpu:  # they run on the CPU too, but slower and with other numbers: say so
        log.warning("speed.%s on the CPU: GPU settings that change the numbers and are slower here "
                    "(speed=default for CPU runs).", ", speed.".join(on_cpu))
    if not cuda and datamodule.data_cfg.get("on_device", False):
        log.warning("data.on_device=true has no effect on the CPU: the data is in memory already.")
    if speed["channels_last"]:
        for network in networks:
            to_channels_last(network)
    if speed["compile"]:
        for network in networks:
            network.compile()
    if speed["fused"]:
        if cuda:
            method.fused_optimizers = True
        else:
            log.info("speed.fused: fused optimiser kernels are used on CUDA only; ignored on the CPU.")
    if cuda and speed["data_on_device"] and not datamodule.data_cfg.get("on_device", False):
        if speed["data_on_device"] is True or fits_on_device(datamodule, trainer.strategy.root_device):
            datamodule.data_cfg.on_device = True
            log.info("speed.data_on_device: the dataset is kept on %s.", trainer.strategy.root_device)


def to_channels_last(network: nn.Module) -> None:
    """4-D parameters and buffers in channels_last format, in place (the optimiser, built
    later, sees the same tensors)."""
    with torch.no_grad():
        for tensor in [*network.parameters(), *network.buffers()]:
            if tensor.dim() == 4:
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)


def fits_on_device(datamodule, device: torch.device, share: float = 0.5) -> bool:
    """Whether the in-memory splits take at most ``share`` of the device's free memory
    (file-backed data never fits: it is read by a DataLoader)."""
    splits = [datamodule.train, datamodule.val, datamodule.trusted, datamodule.test]
    if not isinstance(datamodule.train, dict):
        return False
    size = sum(t.numel() * t.element_size() for split in splits if isinstance(split, dict) for t in split.values())
    free, _ = torch.cuda.mem_get_info(device)
    return size <= share * free

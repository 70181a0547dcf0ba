"""The one differentiable look-ahead of the bilevel methods, written once.

Every method of the family (L2RW, Meta-Weight-Net, SOSELETO, MSLG, IEG) asks the same
question: *if the network took one training step on a loss that depends on some meta
variables φ (per-sample weights, soft labels, a weighting network), how would its loss on
trusted data change with φ?* ::

    θ̂(φ) = θ − lr · U(∇θ L_in(θ, φ))        (one step, kept differentiable)
    g_φ   = ∂ L_out(θ̂(φ)) / ∂φ               (through the step: a mixed second derivative)

``meta_gradient(model, optimizer, inner, outer, wrt, settings)`` returns g_φ (and the outer
loss). Where φ are per-sample weights taken at zero (L2RW's ε, SOSELETO's first-order
gradient), ``alignment_gradient`` gives the same numbers without a double backward: at ε = 0
the look-ahead leaves θ unchanged, and the meta-gradient is an inner product of gradients. ``inner(forward)`` and ``outer(forward)`` receive a forward function of the model at
θ and at θ̂ respectively; φ enters through the method's closures. Methods never import
``higher`` themselves.

Settings (``LookaheadSettings``, the ``lookahead`` block of a method's config):

* ``backend``: ``higher`` (``innerloop_ctx``, the project's named dependency) or ``func``
  (``torch.func.functional_call`` + ``autograd.grad(create_graph=True)``). They compute the
  same gradient (tested to 1e-10 in float64); ``func`` is the one to use where ``higher`` is
  weak (many modules: its per-step monkey-patching costs grow with the module count).
* ``step``: ``sgd`` — a plain SGD step (no momentum, no weight decay), as MW-Net, MSLG and
  L2RW take it; ``optimizer`` — the real optimiser's step *with its state* (momentum buffer,
  weight decay, nesterov), as IEG takes it (``higher`` mirrors any torch optimiser; ``func``
  implements SGD only).
* ``lr``: ``null`` — the real optimiser's current learning rate (follows the schedule, as
  MW-Net); a number — a fixed look-ahead rate (MSLG's α = 0.5).
* ``batchnorm``: ``batch`` — batch statistics in the look-ahead forwards, as every official
  code; ``running`` — the running statistics (eval-mode BatchNorm). Either way the real
  running statistics are never touched: the look-ahead works on copies.

The look-ahead never changes the real model, its buffers or its optimiser's state (tested).
It runs on the plain module; a ``torch.compile``d one is refused with a sentence (double
backward through compiled graphs is not supported by PyTorch, and ``higher`` recurses).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from noisylab.errors import ConfigError
from noisylab.methods.contract import fits

Forward = Callable[[torch.Tensor], torch.Tensor]

BACKENDS = ("higher", "func")
STEPS = ("sgd", "optimizer")
BATCHNORM = ("batch", "running")


@dataclass(frozen=True)
class LookaheadSettings:
    backend: str = "higher"
    step: str = "sgd"
    lr: float | None = None
    batchnorm: str = "batch"

    def __post_init__(self):
        for key, value, allowed in (("backend", self.backend, BACKENDS), ("step", self.step, STEPS),
                                    ("batchnorm", self.batchnorm, BATCHNORM)):
            if value not in allowed:
                raise ConfigError(f"method.lookahead.{key}={value} is not one of {', '.join(allowed)}.")
        if self.lr is not None and not (fits(self.lr, float) and float(self.lr) > 0):
            raise ConfigError(f"method.lookahead.lr must be null (the optimiser's) or > 0, got {self.lr}.")

    @classmethod
    def of(cls, settings) -> LookaheadSettings:
        """From a config mapping (or an instance); unknown keys are refused."""
        if isinstance(settings, cls):
            return settings
        if settings is not None and not isinstance(settings, Mapping):
            raise ConfigError(f"method.lookahead must be a block of look-ahead settings (backend, step, lr, "
                              f"batchnorm), got {settings!r}.")
        settings = dict(settings or {})
        unknown = sorted(set(settings) - {"backend", "step", "lr", "batchnorm"})
        if unknown:
            raise ConfigError(f"method.lookahead.{unknown[0]} is not a look-ahead setting; "
                              "they are: backend, step, lr, batchnorm.")
        return cls(**settings)


@dataclass
class MetaGradient:
    grads: tuple[torch.Tensor, ...]   # one per tensor of ``wrt`` (zeros where unused)
    outer_loss: torch.Tensor          # detached


def meta_gradient(model: nn.Module, optimizer: torch.optim.Optimizer,
                  inner: Callable[[Forward], torch.Tensor], outer: Callable[[Forward], torch.Tensor],
                  wrt: Sequence[torch.Tensor], settings: LookaheadSettings | None = None) -> MetaGradient:
    """∂ outer(θ̂) / ∂ wrt, with θ̂ one differentiable step of ``optimizer`` (or plain SGD) on
    ``inner(θ)``. ``wrt`` are leaf tensors that require grad (the meta variables)."""
    settings = LookaheadSettings.of(settings)
    _refuse_compiled(model)
    wrt = list(wrt)
    lr = float(settings.lr) if settings.lr is not None else float(optimizer.param_groups[0]["lr"])
    with _batchnorm_mode(model, settings.batchnorm):
        outer_loss = LOOKAHEADS[settings.backend](model, optimizer, inner, outer, settings.step, lr)
        grads = torch.autograd.grad(outer_loss, wrt, allow_unused=True)
    grads = tuple(torch.zeros_like(w) if g is None else g for w, g in zip(wrt, grads))
    return MetaGradient(grads, outer_loss.detach())


def alignment_gradient(model: nn.Module, per_sample_loss: Callable[[Forward], torch.Tensor],
                       outer: Callable[[Forward], torch.Tensor], lr: float,
                       batchnorm: str = "batch", outer_decay: float = 0.0) -> MetaGradient:
    """The look-ahead's meta-gradient for per-sample weights ε *at ε = 0*, where θ̂ = θ and
    it is exactly −lr ⟨∇θ ℓ_i(θ), ∇θ L_out(θ)⟩ (Ren et al.; the official L2RW code computes
    it this way). One backward gives ∇θ L_out, one forward-mode pass (``torch.func.jvp``
    along it) all B inner products: no double backward. ``per_sample_loss(forward)`` returns
    the B losses ℓ_i. ``outer_decay`` adds L2 weight decay (λ/2)·Σ‖W‖² over the weight matrices
    and kernels (parameters of 2 or more dimensions) to L_out, as the official L2RW code's clean
    cost. Returns the gradient w.r.t. ε (one tensor) and L_out (without the decay)."""
    from torch.func import functional_call, jvp

    _refuse_compiled(model)
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    fixed = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())

    def at(weights) -> Forward:  # fresh copies of the buffers: the real statistics stay untouched
        return lambda x: functional_call(model, ({**weights, **fixed}, {n: b.clone() for n, b in buffers.items()}), (x,))

    with _batchnorm_mode(model, batchnorm):
        leaves = {n: p.requires_grad_() for n, p in ((n, p.clone()) for n, p in params.items())}
        outer_loss = outer(at(leaves))
        direction = dict(zip(leaves, torch.autograd.grad(outer_loss, list(leaves.values()), allow_unused=True)))
        direction = {n: torch.zeros_like(params[n]) if g is None else g for n, g in direction.items()}
        if outer_decay:
            direction = {n: g + outer_decay * params[n] if params[n].dim() > 1 else g for n, g in direction.items()}
        _, tangent = jvp(lambda weights: per_sample_loss(at(weights)), (params,), (direction,))
    return MetaGradient((-float(lr) * tangent.detach(),), outer_loss.detach())


def _refuse_compiled(model: nn.Module) -> None:
    # torch.compile(m) wraps (_orig_mod); m.compile() (speed.compile) compiles in place (_compiled_call_impl)
    if any(hasattr(m, "_orig_mod") or getattr(m, "_compiled_call_impl", None) is not None for m in model.modules()):
        raise ConfigError("the bilevel look-ahead cannot run through a torch.compile'd network "
                          "(double backward through compiled graphs is unsupported); run it uncompiled.")


@contextlib.contextmanager
def _batchnorm_mode(model: nn.Module, mode: str):
    """``running``: BatchNorm layers in eval mode for the look-ahead, restored afterwards."""
    if mode == "batch":
        yield
        return
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m in norms:
        m.eval()
    try:
        yield
    finally:
        for m in norms:
            m.train()


def _plain_sgd(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)


def _higher_lookahead(model, optimizer, inner, outer, step: str, lr: float) -> torch.Tensor:
    import higher

    if step == "sgd":
        optimizer, override = _plain_sgd(model, lr), None
    else:
        override = {"lr": [lr] * len(optimizer.param_groups)}
    # copy_initial_weights: θ is a constant here; only φ receives the meta-gradient.
    with higher.innerloop_ctx(model, optimizer, copy_initial_weights=True, override=override) as (fmodel, diffopt):
        diffopt.step(inner(fmodel))
        return outer(fmodel)


def _func_lookahead(model, optimizer, inner, outer, step: str, lr: float) -> torch.Tensor:
    from torch.func import functional_call

    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    params = {n: p.detach().requires_grad_() for n, p in named.items()}
    fixed = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    buffers = {n: b.clone() for n, b in model.named_buffers()}  # the real statistics stay untouched

    def at(weights) -> Forward:
        return lambda x: functional_call(model, ({**weights, **fixed}, buffers), (x,))

    grads = torch.autograd.grad(inner(at(params)), list(params.values()), create_graph=True, allow_unused=True)
    group_of = _sgd_groups(optimizer, named) if step == "optimizer" else {}
    fast = {}
    for (name, p), g in zip(params.items(), grads):
        if g is None:
            fast[name] = p
            continue
        if step == "optimizer":
            g = _sgd_direction(g, p, named[name], *group_of[name], optimizer)
        fast[name] = p - lr * g
    return outer(at(fast))


def _sgd_groups(optimizer: torch.optim.Optimizer, named: dict) -> dict:
    if not isinstance(optimizer, torch.optim.SGD):
        raise ConfigError(f"method.lookahead.step=optimizer with backend=func supports SGD only, not "
                          f"{type(optimizer).__name__}; use backend=higher or step=sgd.")
    by_id = {id(p): n for n, p in named.items()}
    return {by_id[id(p)]: (group,) for group in optimizer.param_groups for p in group["params"] if id(p) in by_id}


def _sgd_direction(g, p, real, group, optimizer) -> torch.Tensor:
    """torch.optim.SGD's update direction, differentiable in g (its state as constants)."""
    if group["weight_decay"]:
        g = g + group["weight_decay"] * p
    momentum = group["momentum"]
    if momentum:
        buffer = optimizer.state.get(real, {}).get("momentum_buffer")
        buf = g if buffer is None else momentum * buffer + (1 - group["dampening"]) * g
        g = g + momentum * buf if group["nesterov"] else buf
    return g


LOOKAHEADS = {"higher": _higher_lookahead, "func": _func_lookahead}

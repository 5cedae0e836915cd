"""Several processes, several machines: DistributedDataParallel under `torchrun`, as reusable pieces.

    torchrun --standalone --nproc-per-node 2 --no-python spnas-train data=cifar10 ...
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --rdzv-backend c10d \\
             --rdzv-endpoint host0:29400 --rdzv-id run42 --no-python spnas-search ...

The world (RANK, WORLD_SIZE, LOCAL_RANK, the rendezvous) comes from torchrun's environment; without
it every helper here is a no-op for one process, so the same loop runs alone or in a group.

Semantics: `batch_size` is the *global* batch, split evenly across ranks; the learning rate belongs to
that global batch, so N ranks take the same optimisation steps as one process would. Data order and
augmentation are drawn for the global batch from (seed, epoch) and each rank takes its slice
(`shard_slice`); BatchNorm statistics are computed over the global batch (`dist.sync_bn=true`:
`GlobalBatchNorm2d`, over NCCL or gloo). Weight gradients are averaged by DDP;
extra gradients that flow outside the DDP forward (the search's decision thresholds, which also receive
the latency term) are averaged with `allreduce_gradients`. Only rank 0 writes files
(`env.is_main`); resumes read the checkpoint on rank 0 and `broadcast_object` it.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn

from spnas_core.errors import ConfigError
from training.config import DistBackend, DistConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the group (rank 0 of 1 when not under torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes logs, checkpoints and artifacts."""
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "rank": self.rank, "local_rank": self.local_rank,
                "backend": dist.get_backend() if dist.is_available() and dist.is_initialized() else None}


SINGLE = DistEnv()


def env_from_torchrun(environ: dict[str, str] | None = None) -> DistEnv:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them (one process when absent)."""
    e = os.environ if environ is None else environ
    if "WORLD_SIZE" not in e:
        return SINGLE
    try:
        world, rank = int(e["WORLD_SIZE"]), int(e.get("RANK", "0"))
        local = int(e.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError(f"torchrun environment is malformed (WORLD_SIZE={e.get('WORLD_SIZE')!r}, "
                          f"RANK={e.get('RANK')!r}, LOCAL_RANK={e.get('LOCAL_RANK')!r}); launch with torchrun") from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"torchrun environment is inconsistent: RANK={rank} of WORLD_SIZE={world}")
    return DistEnv(rank, world, local)


def current_env() -> DistEnv:
    """The group this process belongs to right now (initialised or not)."""
    if dist.is_available() and dist.is_initialized():
        return DistEnv(dist.get_rank(), dist.get_world_size(), env_from_torchrun().local_rank)
    return SINGLE


def backend_for(dcfg: DistConfig, device: torch.device) -> str:
    """`dist.backend=auto`: nccl for CUDA tensors, gloo for CPU tensors."""
    if dcfg.backend is DistBackend.auto:
        return "nccl" if device.type == "cuda" else "gloo"
    if dcfg.backend is DistBackend.nccl and device.type != "cuda":
        raise ConfigError("dist.backend=nccl needs device=cuda; use dist.backend=gloo (or auto) on the CPU")
    return dcfg.backend.name


@contextlib.contextmanager
def process_group(dcfg: DistConfig, device: torch.device, env: DistEnv | None = None) -> Iterator[DistEnv]:
    """Join torchrun's group for the duration (and leave it after); yields this process's `DistEnv`.

    A group that is already initialised (a caller set it up) is used as is and left alone."""
    env = env or env_from_torchrun()
    if not env.enabled or (dist.is_available() and dist.is_initialized()):
        yield current_env() if env.enabled else env
        return
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; run one process, or install a full torch")
    backend = backend_for(dcfg, device)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=dcfg.timeout_s),
                            device_id=device if device.type == "cuda" else None)
    log.info("rank %d/%d joined the %s group (local rank %d)", env.rank, env.world_size, backend, env.local_rank)
    try:
        yield env
    finally:
        with contextlib.suppress(Exception):  # a peer that died already broke the group: nothing to tidy
            dist.destroy_process_group()


# ---------------------------------------------------------------------------------- collectives
def _tensor_device() -> torch.device:
    """Where collective payloads must live: CUDA for nccl, CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier(env: DistEnv) -> None:
    """Wait for every rank (e.g. after rank 0 wrote a file the others read)."""
    if env.enabled:
        dist.barrier()


def all_reduce_sums(values: Sequence[float], env: DistEnv) -> list[float]:
    """Element-wise sums over ranks (float64), e.g. (loss sum, correct, seen) for global metrics."""
    if not env.enabled:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_tensor_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def allreduce_gradients(params: Iterable[nn.Parameter], env: DistEnv) -> None:
    """Average the gradients of `params` over ranks in one flat all-reduce.

    For gradients DDP does not reduce: parameters kept out of DDP (`wrap_ddp(ignore=...)`), such as
    the decision thresholds that also receive the latency term outside the DDP forward. A parameter
    without a gradient on this rank contributes zeros, so every rank makes the same update."""
    if not env.enabled:
        return
    ps = [p for p in params if p.requires_grad]
    if not ps:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in ps]
    flat = torch.cat([g.reshape(-1) for g in grads]).to(_tensor_device())
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= env.world_size
    offset = 0
    for p, g in zip(ps, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(p.device)
        offset += n


def broadcast_object(obj: Any, env: DistEnv, src: int = 0) -> Any:
    """`obj` from rank `src` on every rank (e.g. a checkpoint rank 0 read, or a resume decision)."""
    if not env.enabled:
        return obj
    box = [obj if env.rank == src else None]
    dist.broadcast_object_list(box, src=src, device=_tensor_device() if dist.get_backend() == "nccl" else None)
    return box[0]


def check_same_on_all_ranks(obj: Any, env: DistEnv, what: str) -> None:
    """Fail loudly if ranks disagree about `obj` (e.g. the layer decisions): DDP must never drift."""
    if not env.enabled:
        return
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
    seen: list[Any] = [None] * env.world_size
    dist.all_gather_object(seen, digest)
    if len(set(seen)) != 1:
        raise RuntimeError(f"ranks disagree about {what} (digests {seen}): the replicas have diverged")


# ---------------------------------------------------------------------------------- data sharding
def shard_slice(n: int, env: DistEnv) -> slice:
    """This rank's contiguous part of a batch (or split) of n items; parts differ by at most one item."""
    return slice(n * env.rank // env.world_size, n * (env.rank + 1) // env.world_size)


def per_rank_batch(global_batch: int, env: DistEnv, key: str = "batch_size") -> int:
    """The per-rank batch of a global batch; it must split evenly so every rank takes equal steps."""
    if global_batch % env.world_size:
        raise ConfigError(f"{key}={global_batch} is the global batch and must divide by the {env.world_size} ranks "
                          f"(e.g. {key}={global_batch - global_batch % env.world_size or env.world_size})")
    return global_batch // env.world_size


def rank_seed(seed: int, env: DistEnv, stream: int = 0) -> int:
    """A seed per rank for per-rank randomness (dropout masks): rank 0 keeps the single-process seed."""
    return (seed * 1_000_003 + stream + env.rank * 7_777_777) % (2**63)


# ---------------------------------------------------------------------------------- models
class _SumOverRanks(torch.autograd.Function):
    """Differentiable all-reduce (sum): the gradient of a sum over ranks is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = t.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def weights_digest(model: nn.Module) -> str:
    """sha256 of every parameter and buffer: DDP replicas must agree on it bit for bit."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


_RANK_LOCAL_BN = [0]  # > 0 inside `rank_local_batchnorm`


@contextlib.contextmanager
def rank_local_batchnorm() -> Iterator[None]:
    """Inside the block a `GlobalBatchNorm2d` in training mode normalises by this rank's batch alone, as a plain
    BatchNorm2d does. For work one rank does by itself (rank 0 scoring the finalists, a ranking curve): its
    all-reduce would wait forever for ranks that are not there."""
    _RANK_LOCAL_BN[0] += 1
    try:
        yield
    finally:
        _RANK_LOCAL_BN[0] -= 1


def batchnorm_is_rank_local() -> bool:
    """Whether `rank_local_batchnorm` is in force (code that normalises with a module's buffers itself)."""
    return _RANK_LOCAL_BN[0] > 0


def _running_stats_of_first(bn: nn.BatchNorm2d, c: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Views of the running mean and variance of `bn`'s first c channels (None where it tracks none), for a
    sliced candidate path; more channels than the layer has is refused."""
    if c > bn.num_features:
        raise ValueError(f"{type(bn).__name__}: {c} channels for a layer of {bn.num_features}")
    return (bn.running_mean[:c] if bn.running_mean is not None else None,
            bn.running_var[:c] if bn.running_var is not None else None)


def _count_step_and_momentum(bn: nn.BatchNorm2d) -> float:
    """nn.BatchNorm2d's bookkeeping of one forward pass: a training step with tracked statistics counts itself;
    the running average's factor is `momentum`, or 1 / steps counted (a cumulative average) when it is None, and
    0 where no running statistics are updated."""
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            return 1.0 / float(bn.num_batches_tracked)
    return bn.momentum if bn.momentum is not None else 0.0


def batch_norm_first_channels(bn: nn.BatchNorm2d, x: torch.Tensor, weight: torch.Tensor | None,
                              bias: torch.Tensor | None) -> torch.Tensor:
    """`bn(x)` on this process's batch, with the given affine parameters, where `x` may hold only the first c of
    `bn`'s channels (a superkernel's sliced candidate path): those channels' running statistics are used and,
    in training, updated in place through views of the buffers, with nn.BatchNorm2d's own bookkeeping."""
    running_mean, running_var = _running_stats_of_first(bn, x.shape[1])
    momentum = _count_step_and_momentum(bn)
    use_batch = bn.training or running_mean is None
    return torch.nn.functional.batch_norm(x, running_mean, running_var, weight, bias, use_batch, momentum, bn.eps)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the global batch of all ranks, on any backend.

    torch's SyncBatchNorm accepts only accelerator tensors and has no way to normalise with replaced
    affine parameters (the search's superkernel slices them per candidate); this does both: one
    differentiable all-reduce of (sum, sum of squares, count) per layer, shifted by the running mean
    for numerical accuracy. Parameter and buffer names are BatchNorm2d's, so checkpoints are unchanged.
    Code that calls `F.batch_norm` with a module's buffers itself should call `normalize` instead."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(x, self.weight, self.bias)

    def normalize(self, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor:
        """This layer's BatchNorm of `x` with the given affine parameters (global statistics when training
        in a group of several ranks, tracked in this module's running buffers). `x` may hold only the first
        c of the layer's channels (a superkernel's sliced candidate path, `weight` and `bias` sliced alike):
        the statistics of those channels are used and updated, through views of the buffers. In a group every
        rank must then run the same slice (the search draws its paths identically on every rank)."""
        synced = (self.training and not batchnorm_is_rank_local() and dist.is_available() and dist.is_initialized()
                  and dist.get_world_size() > 1)
        if not synced:
            return batch_norm_first_channels(self, x, weight, bias)
        c = x.shape[1]
        running_mean, running_var = _running_stats_of_first(self, c)
        mom = _count_step_and_momentum(self)
        xf = x.float()
        shift = running_mean.detach().view(1, -1, 1, 1) if running_mean is not None else 0.0
        d = xf - shift
        count = torch.full((1,), float(x.numel() // x.shape[1]), dtype=torch.float32, device=x.device)
        stats = _SumOverRanks.apply(torch.cat([d.sum((0, 2, 3)), (d * d).sum((0, 2, 3)), count]))
        n = stats[2 * c]
        m1 = stats[:c] / n
        var = (stats[c:2 * c] / n - m1 * m1).clamp_min(0)
        mean = m1 + (shift.view(-1) if isinstance(shift, torch.Tensor) else 0.0)
        if self.track_running_stats and running_mean is not None and running_var is not None:
            with torch.no_grad():
                running_mean.mul_(1 - mom).add_(mean.detach(), alpha=mom)
                running_var.mul_(1 - mom).add_(var.detach() * (n / (n - 1).clamp_min(1)), alpha=mom)
        y = (xf - mean.view(1, -1, 1, 1)) * torch.rsqrt(var.view(1, -1, 1, 1) + self.eps)
        if weight is not None:
            y = y * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)
        return y.to(x.dtype)


def _swap_batchnorm(module: nn.Module, make: Any) -> nn.Module:
    """Replace every BatchNorm2d (exact type) below `module` with `make(bn)`, keeping its state."""
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm2d:
            setattr(module, name, make(child))
        else:
            _swap_batchnorm(child, make)
    return module


def _global_bn(bn: nn.BatchNorm2d) -> nn.Module:
    new = GlobalBatchNorm2d(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    new.load_state_dict(bn.state_dict())
    return new.to(bn.weight.device if bn.weight is not None else "cpu")


def convert_sync_batchnorm(model: nn.Module, device: torch.device | None = None) -> nn.Module:
    """Global-batch BatchNorm on every device: each BatchNorm2d becomes a `GlobalBatchNorm2d` (same state).

    One implementation for CPU (gloo) and GPU (NCCL), and one the superkernel can call with sliced
    affine parameters; for these small networks its cost is a few small all-reduces per step."""
    return _swap_batchnorm(model, _global_bn)


def revert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Plain BatchNorm2d again (same state): what exporters and `count_macs` expect after training."""
    def plain(m: nn.Module) -> nn.Module:
        bn = nn.BatchNorm2d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
        bn.load_state_dict(m.state_dict())
        return bn.to(m.weight.device if m.weight is not None else "cpu")

    for name, child in list(model.named_children()):
        if isinstance(child, (nn.SyncBatchNorm, GlobalBatchNorm2d)):
            setattr(model, name, plain(child))
        else:
            revert_sync_batchnorm(child)
    return model


def wrap_ddp(model: nn.Module, env: DistEnv, device: torch.device, dcfg: DistConfig, *,
             ignore: Sequence[str] = (), find_unused: bool = False) -> nn.Module:
    """`model` in DistributedDataParallel (itself when alone). `ignore`: parameter names DDP leaves
    alone (reduce their gradients with `allreduce_gradients`). Call after `Compute.module(model)`."""
    if not env.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if dcfg.sync_bn:
        model = convert_sync_batchnorm(model, device)
    if ignore:
        DDP._set_params_and_buffers_to_ignore_for_model(model, list(ignore))
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
               forward_sync_buffers=not dcfg.sync_bn,  # synced BN keeps running stats identical on every rank
               find_unused_parameters=find_unused, gradient_as_bucket_view=True)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (itself otherwise): what is saved, evaluated and exported."""
    return getattr(model, "module", model)

"""The shared distributed runner: one function, run data-parallel under Horovod or torch.distributed.

A training function takes a `Comm` (rank, size and the few collectives training needs) plus keyword
arguments, and is started by `launch(fn, kwargs, num_proc, launcher)`:

- `horovod` (default): real Horovod processes over Gloo, started in Spark tasks by `horovod.spark.run`
  on the current Spark master (so `num_proc` must not exceed the free task slots);
- `torch`: `pyspark.ml.torch.distributor.TorchDistributor` with torch.distributed over Gloo, because
  Horovod has had no release since 2023 and a second launcher keeps the code honest;
- `local`: one process, in this interpreter (quick runs, debugging).

Only small results (metrics dicts) come back; models and vectors are written to storage by rank 0.
Both `train` (the two models) and `graph.embed` (SGNS) launch through here, so it sits below both.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from recsys_spark.catalog import LAUNCHERS

log = logging.getLogger(__name__)


class Comm:
    """Rank, size and collectives, with the same meaning on every backend."""

    backend = "local"
    rank = 0
    size = 1
    local_size = 1  # ranks on this machine: they share its cores

    def allreduce_mean_(self, tensor) -> None:
        """Average `tensor` in place across ranks.

        Parameters
        ----------
        tensor : torch.Tensor
            Same shape and dtype on every rank; overwritten with the mean.

        Returns
        -------
        None
            The result is in `tensor` (unchanged on one rank).
        """

    def allreduce_max(self, value: int) -> int:
        """The largest `value` over all ranks (e.g. the longest rank's number of batches).

        Parameters
        ----------
        value : int
            This rank's value.

        Returns
        -------
        int
            The maximum, the same on every rank.
        """
        return value

    def allreduce_sum(self, value: float) -> float:
        """The sum of `value` over all ranks (e.g. a loss total).

        Parameters
        ----------
        value : float
            This rank's value.

        Returns
        -------
        float
            The sum, the same on every rank.
        """
        return value

    def broadcast_(self, tensor, root: int = 0) -> None:
        """Overwrite `tensor` on every rank with root's copy.

        Parameters
        ----------
        tensor : torch.Tensor
            Same shape and dtype on every rank.
        root : int, default 0
            The rank whose copy is sent.

        Returns
        -------
        None
            The result is in `tensor`.
        """

    def broadcast_model_(self, model) -> None:
        """Every parameter and buffer of `model` from rank 0, so all ranks start identical.

        Parameters
        ----------
        model : torch.nn.Module
            The same architecture on every rank; its state is overwritten in place.

        Returns
        -------
        None
            The model is updated in place.
        """

    def distributed_optimizer(self, optimizer, named_parameters: list):
        """`optimizer` whose `step()` first averages the gradients of `named_parameters` across ranks.

        Parameters
        ----------
        optimizer : torch.optim.Optimizer
            The optimizer to wrap.
        named_parameters : list of (str, torch.nn.Parameter)
            The parameters whose gradients are averaged, e.g. `list(model.named_parameters())`.

        Returns
        -------
        optimizer-like
            The wrapped optimizer (`optimizer` itself on one rank).
        """
        return optimizer

    def shutdown(self) -> None:
        """Leave the process group (called once when the training function returns).

        Returns
        -------
        None
            No collective may be used afterwards.
        """


class HorovodComm(Comm):
    """`Comm` over Horovod (Gloo): initialises Horovod; methods as documented on `Comm`."""

    backend = "horovod"

    def __init__(self) -> None:
        import horovod.torch as hvd

        hvd.init()
        self.hvd = hvd
        self.rank, self.size, self.local_size = hvd.rank(), hvd.size(), hvd.local_size()

    def allreduce_mean_(self, tensor) -> None:
        tensor.copy_(self.hvd.allreduce(tensor, op=self.hvd.Average))

    def allreduce_max(self, value: int) -> int:
        import torch

        return int(self.hvd.allreduce(torch.tensor([value], dtype=torch.int64), op=self.hvd.Max).item())

    def allreduce_sum(self, value: float) -> float:
        import torch

        return float(self.hvd.allreduce(torch.tensor([value], dtype=torch.float64), op=self.hvd.Sum).item())

    def broadcast_(self, tensor, root: int = 0) -> None:
        self.hvd.broadcast_(tensor, root_rank=root)

    def broadcast_model_(self, model) -> None:
        self.hvd.broadcast_parameters(model.state_dict(), root_rank=0)

    def distributed_optimizer(self, optimizer, named_parameters: list):
        return self.hvd.DistributedOptimizer(
            optimizer, named_parameters=named_parameters, op=self.hvd.Average
        )

    def shutdown(self) -> None:
        self.hvd.shutdown()


class TorchComm(Comm):
    """`Comm` over torch.distributed (Gloo), joining the process group if needed; methods as on `Comm`."""

    backend = "torch"

    def __init__(self) -> None:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
        self.dist = dist
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.local_size = int(os.environ.get("LOCAL_WORLD_SIZE", self.size))

    def allreduce_mean_(self, tensor) -> None:
        self.dist.all_reduce(tensor, op=self.dist.ReduceOp.SUM)
        tensor.div_(self.size)

    def allreduce_max(self, value: int) -> int:
        import torch

        t = torch.tensor([value], dtype=torch.int64)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return int(t.item())

    def allreduce_sum(self, value: float) -> float:
        import torch

        t = torch.tensor([value], dtype=torch.float64)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.SUM)
        return float(t.item())

    def broadcast_(self, tensor, root: int = 0) -> None:
        self.dist.broadcast(tensor, src=root)

    def broadcast_model_(self, model) -> None:
        for tensor in model.state_dict().values():
            self.dist.broadcast(tensor, src=0)

    def distributed_optimizer(self, optimizer, named_parameters: list):
        return AveragingOptimizer(optimizer, [p for _, p in named_parameters], self)

    def shutdown(self) -> None:
        self.dist.destroy_process_group()


class AveragingOptimizer:
    """torch.distributed's counterpart of `hvd.DistributedOptimizer`: average gradients, then step.

    The gradients travel as one flat buffer per step (one allreduce, not one per tensor); a parameter
    without a gradient on this step contributes zeros, so every rank joins the same collective.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        The optimizer that steps after the averaging.
    params : list of torch.nn.Parameter
        The parameters whose gradients are averaged, in the same order on every rank.
    comm : Comm
        The communicator doing the allreduce.
    """

    def __init__(self, optimizer, params: list, comm: Comm) -> None:
        self.optimizer, self.params, self.comm = optimizer, params, comm

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients, as the wrapped optimizer's `zero_grad`.

        Parameters
        ----------
        set_to_none : bool, default True
            Set gradients to None instead of zeroing them.

        Returns
        -------
        None
            The parameters' gradients are cleared.
        """
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        """Average the gradients across ranks (one allreduce), then step the wrapped optimizer.

        Returns
        -------
        None
            The parameters are updated in place, identically on every rank.
        """
        import torch

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.comm.allreduce_mean_(flat)
        offset = 0
        for p, g in zip(self.params, grads):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(g).clone()
            offset += n
        self.optimizer.step()

    @property
    def param_groups(self):
        """The wrapped optimizer's parameter groups (e.g. for a learning-rate schedule).

        Returns
        -------
        list of dict
            `optimizer.param_groups`, shared (changes apply to the wrapped optimizer).
        """
        return self.optimizer.param_groups


def _entry(fn: Callable[..., Any], backend: str, kwargs: dict) -> Any:
    comm = {"horovod": HorovodComm, "torch": TorchComm, "local": Comm}[backend]()
    # One compute thread per core share: more ranks x threads than cores makes OpenMP's spinning
    # threads fight (measured: 2 Horovod ranks x 2 threads on 2 cores ran 12x slower than 1 rank).
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // comm.local_size))
    try:
        return fn(comm, **kwargs)
    finally:
        comm.shutdown()


def launch(fn: Callable[..., Any], kwargs: dict, num_proc: int = 1, launcher: str = "horovod") -> list[Any]:
    """Run `fn(comm, **kwargs)` on `num_proc` ranks; returns what each rank returned (rank 0 first).

    TorchDistributor only hands back rank 0's result, so with `torch` the list has one element.

    Parameters
    ----------
    fn : callable
        The training function, `fn(comm, **kwargs)`; it must be picklable for horovod and torch.
    kwargs : dict
        Keyword arguments of `fn` (small or picklable: they travel to every rank).
    num_proc : int, default 1
        Number of ranks (exactly 1 with the local launcher).
    launcher : {"horovod", "torch", "local"}, default "horovod"
        How the ranks are started (module docstring).

    Returns
    -------
    list
        What `fn` returned on each rank, rank 0 first (only rank 0's with `torch`).

    Raises
    ------
    ValueError
        If `launcher` is unknown, `num_proc` is below 1, or the local launcher is asked for more than one.
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f"unknown launcher {launcher!r}; choose one of {LAUNCHERS}")
    if num_proc < 1:
        raise ValueError("num_proc must be >= 1")
    log.info("launching %s on %d %s process(es)", getattr(fn, "__name__", fn), num_proc, launcher)
    if launcher == "local":
        if num_proc != 1:
            raise ValueError("the local launcher runs exactly one process; use horovod or torch for --np > 1")
        return [_entry(fn, "local", kwargs)]
    if launcher == "horovod":
        import horovod.spark

        return list(
            horovod.spark.run(
                _entry, args=(fn, "horovod", kwargs), num_proc=num_proc, use_gloo=True, verbose=0
            )
        )
    from pyspark.ml.torch.distributor import TorchDistributor

    return [
        TorchDistributor(num_processes=num_proc, local_mode=True, use_gpu=False).run(
            _entry, fn, "torch", kwargs
        )
    ]

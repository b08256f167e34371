"""Detectron2's ``launch``, extended to CPU processes.

Detectron2 0.6's ``launch`` spawns one process per GPU and insists on CUDA (NCCL).
With CUDA present this module calls it unchanged. Without CUDA, it spawns the same
process layout on the CPU with the gloo backend, so multi-process training (DDP, the
RBP backward and the penalty's double backward included) also runs and is tested on
machines with no GPU.
"""

import logging
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import detectron2.engine.defaults as d2_defaults
from detectron2.engine import launch as d2_launch
from detectron2.engine.launch import _find_free_port
from detectron2.utils import comm

__all__ = ["launch"]

DEFAULT_TIMEOUT = timedelta(minutes=30)


def launch(
    main_func,
    num_gpus_per_machine,
    num_machines=1,
    machine_rank=0,
    dist_url=None,
    args=(),
    timeout=DEFAULT_TIMEOUT,
):
    """Run ``main_func(*args)`` in ``num_machines * num_gpus_per_machine`` processes.

    Same arguments as :func:`detectron2.engine.launch`; on a machine without CUDA,
    ``num_gpus_per_machine`` is the number of CPU processes per machine.
    """
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1 or torch.cuda.is_available():
        return d2_launch(
            main_func,
            num_gpus_per_machine,
            num_machines,
            machine_rank,
            dist_url,
            args=args,
            timeout=timeout,
        )
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError(
                "--dist-url auto works only with --num-machines 1; give tcp://HOST:PORT"
            )
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    mp.spawn(
        _cpu_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
    )


def _cpu_create_ddp_model(model, **kwargs):
    # CPU modules take device_ids=None; Detectron2 0.6 passes [local_rank], which DDP rejects.
    kwargs.setdefault("device_ids", None)
    return _D2_CREATE_DDP_MODEL(model, **kwargs)


_D2_CREATE_DDP_MODEL = d2_defaults.create_ddp_model


def _cpu_worker(
    local_rank, main_func, world_size, procs_per_machine, machine_rank, dist_url, args, timeout
):
    global_rank = machine_rank * procs_per_machine + local_rank
    try:
        dist.init_process_group(
            "gloo", init_method=dist_url, world_size=world_size, rank=global_rank, timeout=timeout
        )
    except Exception:
        logging.getLogger(__name__).error("Process group URL: %s", dist_url)
        raise
    num_machines = world_size // procs_per_machine
    for i in range(num_machines):
        ranks = list(range(i * procs_per_machine, (i + 1) * procs_per_machine))
        group = dist.new_group(ranks)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    # Only in these CPU worker processes: DefaultTrainer builds DDP through this function.
    d2_defaults.create_ddp_model = _cpu_create_ddp_model
    comm.synchronize()
    main_func(*args)

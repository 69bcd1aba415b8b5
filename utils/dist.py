"""Distributed training is switched on by the environment torchrun sets (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR), not by flags: NCCL on GPUs, gloo on CPU. `torchrun --nproc_per_node 1` joins a
process group of one, so that it runs the multi-GPU code path. Runs started without torchrun use the
same code, where every collective below is a no-op."""
import os

import torch
import torch.distributed as dist


def is_distributed():
    return dist.is_available() and dist.is_initialized()


def rank():
    return dist.get_rank() if is_distributed() else 0


def world_size():
    return dist.get_world_size() if is_distributed() else 1


def is_main_process():
    return rank() == 0


def setup(ngpu):
    """Pick the device (--ngpu 0 = CPU; no GPU present = CPU with a note) and join the process
    group when launched by torchrun. Returns the torch.device of this process."""
    use_cuda = ngpu > 0 and torch.cuda.is_available()
    if ngpu > 0 and not use_cuda and int(os.environ.get("RANK", 0)) == 0:
        print("note: no CUDA device found, running on CPU (pass --ngpu 0 to silence this)")
    if launched_by_torchrun() and not is_distributed():
        local = int(os.environ.get("LOCAL_RANK", 0))
        if use_cuda:
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)   # NCCL's communicator bound to this GPU now
            return device
        dist.init_process_group("gloo")
        return torch.device("cpu")
    if ngpu > 1 and use_cuda:
        print(f"note: --ngpu {ngpu} in one process uses one GPU; for several, launch with "
              f"torchrun --nproc_per_node={ngpu}")
    return torch.device("cuda") if use_cuda else torch.device("cpu")


def launched_by_torchrun():
    """torchrun (or another launcher of the same environment) started this process, with any number of them."""
    return "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def cleanup():
    if is_distributed():
        dist.destroy_process_group()


def all_reduce_sum(t):
    """Sum `t` over ranks in place (every rank gets the result)."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t):
    """The maximum of `t` over ranks, in place (every rank gets the result)."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def reduce_sum_to_main(t):
    """Sum `t` over ranks into rank 0's copy (others keep garbage: use only on rank 0)."""
    if is_distributed():
        dist.reduce(t, dst=0, op=dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj):
    """List of `obj` from every rank, in rank order."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    """rank 0's `obj` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_buffers(module):
    """rank 0's buffers (BatchNorm running statistics) on every rank, so that all ranks evaluate the
    model rank 0 saves; DDP re-broadcasts them before every training forward anyway."""
    if is_distributed():
        for b in module.buffers():
            dist.broadcast(b, src=0)


def barrier():
    if is_distributed():
        dist.barrier()

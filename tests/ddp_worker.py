"""One training step of a family's tiny model, run either by 1 process on the global batch or by `torchrun` with 2
ranks on half of it each under DistributedDataParallel. Saves the loss and the (rank-averaged) gradients.

    python tests/ddp_worker.py <test module> <tester class> <output dir>
"""

import importlib
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GLOBAL_BATCH = 8


def main(module: str, tester_name: str, output_dir: Path) -> None:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if world_size > 1 else 0
    tester = getattr(importlib.import_module(module), tester_name)()
    torch.manual_seed(0)
    config = tester.get_config()
    model = tester.model_class(config).train()
    inputs = tester.get_inputs(config, GLOBAL_BATCH, seed=3)
    inputs["group_ids"] = torch.tensor([0, 1, 2, 3, 4, 5, 0, 7])  # rows 0 and 6 describe the same thing
    per_rank = GLOBAL_BATCH // world_size
    inputs = {k: v[rank * per_rank : (rank + 1) * per_rank] for k, v in inputs.items()}
    wrapped = torch.nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
    loss = wrapped(**inputs, return_loss=True).loss
    loss.backward()  # DDP averages the gradients over the ranks
    if rank == 0:
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        torch.save({"loss": loss.detach(), "grads": grads}, output_dir / f"world{world_size}.pt")
    if world_size > 1:
        # Leave together: a rank tearing gloo down while the other still works aborts it ("terminate called
        # without an active exception", seen once on a fresh clone).
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))

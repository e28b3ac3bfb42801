"""Multi-GPU (or multi-process CPU) training with PyTorch DDP under ``torchrun``.

The script is an ordinary single-process training script: :class:`~allinone_ir.training.Trainer` reads
the variables ``torchrun`` sets (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``),
joins the process group (NCCL on GPUs, gloo on CPUs), puts each process on its own GPU, wraps the
network in ``DistributedDataParallel``, shards every epoch across the processes and lets only rank 0
log, validate and write checkpoints. ``batch_size`` is per process: the global batch is
``batch_size * grad_accum_steps * world_size``. Our networks have no unused parameters, so DDP needs
no ``find_unused_parameters``.

    torchrun --nproc_per_node=4 examples/ddp_training.py --steps 2000 --out runs/ddp      # 4 GPUs
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \\
        examples/ddp_training.py --steps 2000 --out runs/ddp                               # 2 machines
    torchrun --nproc_per_node=2 examples/ddp_training.py --smoke                          # 2 CPU processes
    python examples/ddp_training.py --smoke                                                # 1 process

An interrupted run continues where it stopped with the same command (``resume="auto"``, the default):
checkpoints are written every ``save_every`` updates, every 5 minutes and on Ctrl-C / SIGTERM (all ranks
stop at the same update; rank 0 writes it).
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch

from allinone_ir import create_model, save_pretrained
from allinone_ir.assets import sample_images
from allinone_ir.data import SyntheticDegradationDataset
from allinone_ir.training import Trainer, TrainerConfig


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=None, help="run folder, the same for every process")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8, help="per process")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--smoke", action="store_true", help="tiny network, 3 updates, fp32 (for CI)")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.batch_size, args.precision = 3, 2, "fp32"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if args.out is None:
        if world > 1:
            raise SystemExit("pass --out: every process must write to the same run folder")
        args.out = tempfile.mkdtemp(prefix="allinone_ddp_")

    torch.manual_seed(0)  # every process builds the same initial weights (DDP also broadcasts rank 0's)
    if args.smoke:
        model = create_model("promptir", dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1,
                             prompt_dims=(8, 8, 16), prompt_sizes=(8, 4, 4), prompt_len=3)  # fmt: skip
    else:
        model = create_model("promptir")  # the official configuration
    data = SyntheticDegradationDataset(sample_images(), tasks=("noise", "rain", "haze"),
                                       patch_size=32 if args.smoke else 128, repeat=64)  # fmt: skip
    config = TrainerConfig(
        output_dir=args.out, max_steps=args.steps, batch_size=args.batch_size, lr=2e-4, warmup_steps=args.steps // 20,
        precision=args.precision, channels_last=True, save_every=max(1, args.steps // 10), resume="auto",
        progress_bar=not args.smoke, plot=False,
    )  # fmt: skip
    trainer = Trainer(model, config, data)
    summary = trainer.fit()
    print(f"rank {rank}/{world}: {summary['step']} updates, global batch {args.batch_size * world}, "
          f"last loss {summary['loss']:.4f}, device {trainer.device}")  # fmt: skip
    if trainer.dist.is_main:
        save_pretrained(trainer.model, os.path.join(args.out, "model"), overwrite=True)
        print(f"rank 0 saved {args.out}/model")
    if torch.distributed.is_initialized():  # the Trainer joined torchrun's group: leave it together
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()

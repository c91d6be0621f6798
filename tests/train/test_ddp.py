"""DistributedDataParallel on 2 CPU processes (gloo) takes the same step as one process on twice the batch."""

import os
import socket

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ks_runtime.core.au import BP4D
from ks_train.config import load_config
from ks_train.data.base import AUDataset, VideoSequence

OVERRIDES = [
    "data.image_size=32",
    "data.every_k=1",
    "model.dropout=0.0",
    "loss.p_student_key=0.0",
    "loss.l_self=0.0",
    "train.epochs=1",
    "train.batches_per_epoch=1",
    "train.workers=0",
    "train.freeze_bn=true",
    "train.augment.rotate_deg=0.0",
    "train.augment.flip_p=0.0",
    "train.augment.brightness=0.0",
    "train.augment.contrast=0.0",
    "train.augment.saturation=0.0",
    "train.warmup_fraction=1.0",
    # fp32: bf16 autocast rounds the two half-batches' sums differently from the whole batch's
    "train.amp=false",
]


def tiny_dataset() -> AUDataset:
    rng = np.random.default_rng(0)
    sequences = [
        VideoSequence(
            f"S{s}",
            "T1",
            rng.integers(0, 2, (20, 12)).astype(np.int8),
            np.arange(20),
            frames=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
        )
        for s in range(3)
    ]
    return AUDataset("toy", BP4D, sequences, [["S0"], ["S1"], ["S2"]])


def one_step(batch_size: int, out: str, steps: int = 1) -> dict[str, torch.Tensor]:
    from ks_train.trainer import Trainer

    cfg = load_config("synth-cpu", OVERRIDES + [f"train.batch_size={batch_size}"])
    trainer = Trainer(cfg, out, device="cpu", dataset=tiny_dataset(), progress=False)
    for _ in range(steps):
        trainer.train_epoch()
    state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    # The last step's gradients stay in .grad: under DDP they are the all-reduced mean over the ranks.
    state.update(
        {f"grad:{k}": p.grad.detach().clone() for k, p in trainer.model.named_parameters() if p.grad is not None}
    )
    return state


def worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank))
    torch.set_num_threads(1)
    weights = one_step(8, out)  # batch_size is the global batch; each rank trains on half of it
    if rank == 0:
        torch.save(weights, os.path.join(out, "ddp.pt"))
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_equal_one_process_on_twice_the_batch(tmp_path):
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    single = one_step(8, str(tmp_path / "single"))
    initial = one_step(8, str(tmp_path / "initial"), steps=0)
    grads = [k for k in single if k.startswith("grad:")]
    assert len(grads) > 10 and set(grads) == {k for k in ddp if k.startswith("grad:")}
    for name in grads:
        torch.testing.assert_close(ddp[name], single[name], rtol=1e-4, atol=1e-7, msg=lambda m, n=name: f"{n}: {m}")
    # Adam's first step is about lr * sign(grad): where a gradient is float noise (e.g. attention's key bias,
    # which softmax ignores) its sign, and so the weight, may differ by up to 2 lr.
    moved = 0
    for name, value in single.items():
        if not name.startswith("grad:") and value.dtype.is_floating_point:
            torch.testing.assert_close(ddp[name], value, rtol=1e-4, atol=2e-3, msg=lambda m, n=name: f"{n}: {m}")
            moved += int(not torch.equal(value, initial[name]))
    assert moved > 10, "the step changed almost no weights: the comparison proves nothing"

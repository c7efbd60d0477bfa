"""The training loop: optimiser, AMP, resumable checkpoints, CSV log, tqdm bar, optional DDP.

Outputs in out_dir: `state.safetensors` (resumable: model, optimiser, scaler, step, RNG, the run's
fingerprint; training/state.py, no pickle), `model.safetensors` (loads directly into Propagator.load),
`config.json` and `log.csv`. The state and model are written atomically (temp file + rename). A state is
resumed only when its fingerprint (config, data, init) matches this run's.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from XRayVOSLib.errors import CancelledError, InputError
from XRayVOSLib.model.checkpoint import load_checkpoint, save_checkpoint, write_atomically
from XRayVOSLib.model.mobilenet import load_imagenet_weights
from XRayVOSLib.model.network import LocalMatchingNetwork
from XRayVOSLib.runtime import resolve_device
from XRayVOSLib.training.config import TrainConfig
from XRayVOSLib.training.distributed import DistInfo, all_reduce_mean, cleanup, init_distributed
from XRayVOSLib.training.state import (LEGACY_STATE_NAME, STATE_NAME, check_fingerprint, load_optimizer_state,
                                       read_state, restore_rng, run_fingerprint, write_state)
from XRayVOSLib.training.step import ClipStep

StepCallback = Callable[[int, int, dict[str, float]], None]


def build_network(config: TrainConfig) -> tuple[LocalMatchingNetwork, dict[str, Any]]:
    """A fresh network from ImageNet MobileNetV2 (.pth, that one file) or an XRayVOS checkpoint (.safetensors)."""
    init = config.init
    if init and str(init).endswith(".safetensors"):
        network, info = load_checkpoint(init)
        info = {k: v for k, v in info.items() if k != "init_info"}  # one level of history, not every stage's
        return network, {"init": str(init), "init_info": info}
    network = LocalMatchingNetwork()
    if init:
        if not Path(init).is_file():
            raise InputError(f"init weights {init} do not exist")
        missing = load_imagenet_weights(network.key_encoder.trunk, init)
        if missing:
            raise InputError(f"init weights {init}: trunk parameters missing from the file: {missing[:5]}")
    return network, {"init": str(init) if init else "random"}


def build_dataset(config: TrainConfig) -> Dataset:
    from XRayVOSLib.synth import config_for
    from XRayVOSLib.training.data import DavisClipDataset, SyntheticClipDataset

    size = (config.size, config.size)
    if config.data == "synthetic":
        return SyntheticClipDataset(config.synthetic_length, size=size, clip_length=config.clip_length,
                                    max_objects=config.max_objects, seed=config.seed, augment=config.augment,
                                    synth_frames=config.synth_frames, synth_config=config_for(config.synth_generator))
    dataset = DavisClipDataset(config.data, size=size, clip_length=config.clip_length, max_objects=config.max_objects,
                               augment=config.augment, pseudo_root=config.pseudo_root, seed=config.seed,
                               max_skip=config.max_skip)
    # Few videos (a site's fine-tune): repeat them so one loader pass holds `loader_refresh` batches.
    wanted = config.batch_size * config.loader_refresh
    dataset.repeats = max(1, math.ceil(wanted / max(1, len(dataset.videos))))
    return dataset


def _param_groups(network: LocalMatchingNetwork, config: TrainConfig) -> list[dict[str, Any]]:
    trunk = [p for n, p in network.named_parameters() if n.startswith("key_encoder.trunk.")]
    rest = [p for n, p in network.named_parameters() if not n.startswith("key_encoder.trunk.")]
    for p in trunk:
        p.requires_grad_(not config.freeze_trunk)
    trunk_lr = 0.0 if config.freeze_trunk else config.lr * config.trunk_lr_scale
    return [{"params": trunk, "lr": trunk_lr}, {"params": rest, "lr": config.lr}]


class Trainer:
    """`inputs`: digests that stand for inputs in the run's fingerprint (see state.run_fingerprint)."""

    def __init__(self, config: TrainConfig, network: LocalMatchingNetwork | None = None,
                 info: dict[str, Any] | None = None, dataset: Dataset | None = None,
                 inputs: dict[str, str] | None = None) -> None:
        self.config = config.validate()
        self.device = resolve_device(config.device)
        self.dist: DistInfo = init_distributed(self.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        torch.manual_seed(config.seed + self.dist.rank)
        if network is None:
            network, info = build_network(config)
        self.network = network.to(self.device).train()
        self.info = info or {}
        self.dataset = dataset if dataset is not None else build_dataset(config)
        self.step_module = ClipStep(self.network, config)
        self.model: torch.nn.Module = self.step_module
        if self.dist.enabled:
            self.model = DistributedDataParallel(self.step_module, find_unused_parameters=True,
                                                 device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = torch.optim.AdamW(_param_groups(self.network, config), weight_decay=config.weight_decay)
        # The schedule scales these; read them now: after resume() the groups hold the last *scheduled* lr.
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.use_amp = config.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.step = 0
        self.resumed = False
        self.out_dir = Path(config.out_dir)
        self.state_path = self.out_dir / STATE_NAME
        self.model_path = self.out_dir / "model.safetensors"
        self.fingerprint = run_fingerprint(config, inputs)

    # -- checkpoints ---------------------------------------------------------------------------
    def resume(self) -> bool:
        """Continue from out_dir's state when there is one and it is this run's; InputError when it is not."""
        legacy = self.out_dir / LEGACY_STATE_NAME
        if legacy.exists() or legacy.is_symlink():
            raise InputError(f"{legacy} is a training state in the old pickle format, which is never loaded "
                             "(unpickling can run code); delete it, or start over in a new folder")
        if not (self.state_path.exists() or self.state_path.is_symlink()):
            return False
        state = read_state(self.state_path)
        check_fingerprint(self.state_path, state.fingerprint, self.fingerprint)
        if state.step > self.config.steps:
            raise InputError(f"{self.state_path} is at step {state.step}, past this run's {self.config.steps} "
                             "steps; ask for more steps, or start over")
        own = self.network.state_dict()
        differing = sorted(set(own) ^ set(state.model)) + sorted(k for k in set(own) & set(state.model)
                                                                 if own[k].shape != state.model[k].shape)
        if differing:
            raise InputError(f"{self.state_path} does not fit this run's network (another init model's run?): "
                             f"{len(differing)} tensors differ, e.g. {differing[:3]}; use the run's own config "
                             "or a new out_dir")
        self.network.load_state_dict(state.model)
        load_optimizer_state(self.optimizer, state.optimizer, self.state_path)
        try:
            self.scaler.load_state_dict(state.scaler)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"{self.state_path}: its AMP scaler state is not readable ({exc})") from None
        if not self.dist.enabled:  # each DDP rank draws from its own seed; the state holds rank 0's RNG only
            restore_rng(state.rng, self.state_path)
        self.step, self.resumed = state.step, True
        self.info.update(state.info)
        return True

    def save(self) -> None:
        if not self.dist.is_main:
            return
        write_state(self.state_path, self.network, self.optimizer, self.scaler, self.step, self.config, self.info,
                    self.fingerprint)
        self.export(self.model_path)

    def export(self, path: Path, half: bool = False, extra: dict[str, Any] | None = None) -> Path:
        info = {**self.info, "trained": True, "steps": self.step, "train_config": self.config.to_dict(),
                **(extra or {})}
        return save_checkpoint(path, self.network, info, half=half)

    # -- loop ----------------------------------------------------------------------------------
    def _lr_factor(self) -> float:
        warmup = min(200, self.config.steps // 10 + 1)
        if self.step < warmup:
            return (self.step + 1) / warmup
        progress = (self.step - warmup) / max(1, self.config.steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def _loader(self) -> DataLoader:
        from XRayVOSLib.training.data import collate_clips

        sampler = (DistributedSampler(self.dataset, shuffle=True, seed=self.config.seed + self.step)
                   if self.dist.enabled else None)
        return DataLoader(self.dataset, batch_size=self.config.batch_size, shuffle=sampler is None, sampler=sampler,
                          num_workers=self.config.num_workers, collate_fn=collate_clips, drop_last=True,
                          persistent_workers=False)

    def train(self, on_step: StepCallback | None = None, cancel=None, show_progress: bool = True) -> Path:
        """Run until config.steps; returns the exported model path. Call resume() first to continue a run."""
        from XRayVOSLib.training.data import max_skip_schedule

        cfg = self.config
        base_lrs = self.base_lrs
        log_file = self._open_log() if self.dist.is_main else None
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", disable=not (show_progress and self.dist.is_main),
                   dynamic_ncols=True)
        writer = None
        start = time.time()
        try:
            while self.step < cfg.steps:
                if hasattr(self.dataset, "set_max_skip"):
                    self.dataset.set_max_skip(max_skip_schedule(self.step, cfg.steps, cfg.max_skip))
                if hasattr(self.dataset, "set_epoch"):
                    self.dataset.set_epoch(self.step)
                # A fresh loader every `loader_refresh` steps, so the max-skip curriculum reaches the workers.
                for i, batch in enumerate(self._loader()):
                    if self.step >= cfg.steps or i >= cfg.loader_refresh:
                        break
                    if cancel is not None and cancel.is_set():
                        raise CancelledError(f"training cancelled at step {self.step}")
                    losses = self._train_step(batch, base_lrs)
                    self.step += 1
                    row = {"step": self.step, "lr": self.optimizer.param_groups[1]["lr"],
                           "seconds": round(time.time() - start, 2), **losses}
                    if log_file is not None and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                        if writer is None:
                            writer = csv.DictWriter(log_file, fieldnames=list(row))
                            if log_file.tell() == 0:
                                writer.writeheader()
                        writer.writerow({k: row.get(k, "") for k in writer.fieldnames})
                        log_file.flush()
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses['total']:.4f}")
                    if on_step is not None and self.dist.is_main:
                        on_step(self.step, cfg.steps, losses)
                    if self.step % cfg.save_every == 0:
                        self.save()
            self.save()
        finally:
            bar.close()
            if log_file is not None:
                log_file.close()
        return self.model_path

    def _open_log(self):
        """config.json, and log.csv opened to append: a resumed run's rows up to its step, else empty."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(self.out_dir / "config.json", json.dumps(self.config.to_dict(), indent=2).encode())
        log_path = self.out_dir / "log.csv"
        rows: list[list[str]] = []
        if self.resumed and log_path.is_file():  # steps past the saved state are run again: drop their rows
            with open(log_path, newline="") as handle:
                rows = [r for i, r in enumerate(csv.reader(handle)) if i == 0 or (r and r[0].isdigit()
                                                                                   and int(r[0]) <= self.step)]
        log_file = open(log_path, "w", newline="")
        csv.writer(log_file).writerows(rows)
        return log_file

    def _train_step(self, batch: dict[str, torch.Tensor], base_lrs: list[float]) -> dict[str, float]:
        factor = self._lr_factor()
        for group, base in zip(self.optimizer.param_groups, base_lrs):
            group["lr"] = base * factor
        batch = {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.use_amp):
            losses = self.model(batch, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["total"]).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {k: float(all_reduce_mean(v.detach(), self.dist)) for k, v in losses.items()}

    def close(self) -> None:
        cleanup(self.dist)


def run_training(config: TrainConfig, resume: bool = True, on_step: StepCallback | None = None, cancel=None,
                 show_progress: bool = True, inputs: dict[str, str] | None = None) -> Path:
    trainer = Trainer(config, inputs=inputs)
    try:
        if resume:
            trainer.resume()
        return trainer.train(on_step=on_step, cancel=cancel, show_progress=show_progress)
    finally:
        trainer.close()


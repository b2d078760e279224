"""``llmdiff train``: one training loop for every denoiser (LI-DiT, U-Net, U-Net + LLMDiff adapter).

The frozen LLMs are never in the graph: their features come from the cache. The loop runs
under accelerate (one process, or DDP: torchrun/gloo processes on CPU, which the tests run, or
processes on GPUs), optionally in micro-batches (train.gradient_accumulation_steps) and with the
denoiser's blocks checkpointed (train.gradient_checkpointing), keeps an EMA of the trainable
weights, checkpoints atomically, resumes exactly (data order and noise are functions of the
step), stops with a message when the loss stops being finite, and leaves a run folder:

    RUN/config.yaml  log.jsonl  loss.png  samples/step-*.png  checkpoints/step-*/  model/  [logs/]

Nothing is written into RUN until the config, the data and the model have been checked, and
RUN/config.yaml is only ever replaced when it is the run's own (a YAML config of your own in
that folder is refused, never overwritten); so are a log.jsonl or loss.png in a folder no run has
claimed. ``--resume`` continues from the last checkpoint and is an error when there is none.

With ``train.report_to`` (tensorboard or wandb, through accelerate's trackers) the loss, learning rate,
gradient norm, training throughput and the sample grids are also logged there as the run goes.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
from pathlib import Path

import torch

from ..config import ExperimentConfig, load_config, to_dict, yaml_text
from ..diffusion import noise_draws, to_uint8, training_loss
from ..errors import LLMDiffError
from ..integrity import check_replaceable, folder_lock, remove_temp_folders
from ..utils import atomic_write_text
from .checkpoint import (export_checkpoint, last_good_checkpoint, list_checkpoints, load_checkpoint, load_optimizer,
                         save_checkpoint)
from .data import cached_features, training_data

log = logging.getLogger(__name__)

# The first line of a run's own config.yaml: what tells it apart from a config file of the user's.
RUN_CONFIG_HEADER = "# llmdiff run config: written by `llmdiff train`, compared on --resume; edit a copy, not this file\n"
RUN_FILES = ("log.jsonl", "loss.png")  # written over as a run goes: only in a folder a run has claimed

SAMPLE_PROMPTS = [
    "a red circle", "a blue square to the left of a yellow triangle", "three green crosses",
    "a purple triangle above an orange circle", "a small pink square and a large brown circle", "two blue circles",
    "a yellow cross below a red square", "an orange square",
]


class TrainingDiverged(LLMDiffError):
    pass


def validation_prompts(tc) -> list[str]:
    """The sample grid's prompts: ``train.validation_prompts`` (a list, or 8 prompts of a suite spread over its
    tasks), else SAMPLE_PROMPTS."""
    v = tc.validation_prompts
    if not v:
        return list(SAMPLE_PROMPTS)
    if isinstance(v, str):
        from ..shapes.suites import load_suite

        try:
            entries = load_suite(v)
        except FileNotFoundError as e:
            raise LLMDiffError(f"train.validation_prompts: {e}") from None
        return [e["prompt"] for e in entries[:: max(1, len(entries) // 8)][:8]]
    return list(v)


def check_paths(cfg: ExperimentConfig) -> None:
    """Every file and folder the config names, checked at once before anything slow starts (the caption cache),
    and the model folders it names verified against their recorded hashes."""
    problems = []
    if cfg.data.world == "folder" and not (Path(cfg.data.path or "") / "metadata.jsonl").is_file():
        problems.append(f"data.path {cfg.data.path} has no metadata.jsonl")
    # init: an llmdiff model folder; autoencoder: a diffusers AutoencoderKL folder; base: either kind of U-Net
    for key, files in (("init", ["model_index.json"]), ("autoencoder", ["config.json"]),
                       ("base", ["model_index.json", "config.json"])):
        value = getattr(cfg.model, key)
        if value and not any((Path(value) / f).is_file() for f in files):
            problems.append(f"model.{key} {value} is not a model folder (no {' or '.join(files)})")
    for i, enc in enumerate(cfg.text.encoders):
        looks_local = enc.model.startswith(("/", ".", "~")) or enc.model.endswith(".gguf")
        if looks_local and not Path(enc.model).expanduser().exists():
            problems.append(f"text.encoders[{i}].model {enc.model} does not exist")
    if problems:
        raise LLMDiffError("; ".join(problems) + " (relative paths in a config file are relative to its folder)")
    from ..integrity import verify_model_folder

    for folder in (cfg.model.init, cfg.model.base, cfg.model.autoencoder):
        if folder:
            verify_model_folder(folder)


def _hparams(cfg: ExperimentConfig) -> dict:
    """The config as flat scalars (dotted keys), as trackers store hyperparameters."""
    out = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = value if isinstance(value, (int, float, str, bool)) else str(value)

    walk("", to_dict(cfg))
    return out


def _tracker(report_to: str) -> str | None:
    """accelerate's ``log_with`` for train.report_to, after checking its package is installed."""
    if report_to == "none":
        return None
    import importlib.util

    if importlib.util.find_spec(report_to) is None:
        raise LLMDiffError(f"train.report_to={report_to} needs the {report_to} package: pip install 'llmdiff[{report_to}]'")
    return report_to


def lr_at(step: int, cfg) -> float:
    """Linear warmup, then constant or cosine decay to 5% of the peak.

    Not transformers' get_cosine_with_min_lr_schedule_with_warmup (min_lr_rate=0.05) or
    get_constant_schedule_with_warmup: after the warmup they give the same rates, but their warmup is one step behind
    (step/warmup from 0, so the first step learns nothing) and rounds differently, so every published run's rates,
    and with them its weights, would change."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule != "cosine":
        raise LLMDiffError(f"unknown lr schedule {cfg.schedule!r}; known: cosine, constant")
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def _same_run(saved: ExperimentConfig, cfg: ExperimentConfig) -> bool:
    """A resumed run keeps its config; only train.steps may grow (extending a run; the cosine schedule then
    spans the new total, so the learning rate rises again from where the new schedule stands)."""
    if cfg.train.steps < saved.train.steps:
        return False
    a, b = to_dict(saved), to_dict(cfg)
    a["train"]["steps"] = b["train"]["steps"]
    return a == b


def _read_log(path: Path, before: int) -> list[dict]:
    """Logged rows of steps before `before`; a line cut short by a kill (or otherwise unreadable) is dropped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] < before:
            rows.append(row)
    return rows


def _is_run_config(path: Path) -> bool:
    """Whether RUN/config.yaml was written by a run (it starts with our header; older runs: checkpoints or a log
    next to it) rather than by the user."""
    with open(path, errors="replace") as f:
        if f.readline() == RUN_CONFIG_HEADER:
            return True
    run = path.parent
    return bool(list_checkpoints(run / "checkpoints")) or (run / "log.jsonl").is_file()


class Trainer:
    def __init__(self, cfg: ExperimentConfig, run_dir: Path | str, resume: bool = False, progress: bool = True):
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from accelerate.utils import DistributedType, ProjectConfiguration

        self.cfg, self.run_dir, self.progress = cfg, Path(run_dir), progress
        check_paths(cfg)
        self.sample_prompts = validation_prompts(cfg.train)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        on_gpu = torch.cuda.is_available()
        if cfg.train.mixed_precision == "fp16" and not on_gpu:
            raise LLMDiffError("train.mixed_precision=fp16 needs a GPU; on a CPU use bf16 (or fp32)")
        # accelerate keeps one process-wide state that refuses a second mixed-precision setting, but one process
        # may train several runs one after another (an experiment's variants): each run starts from a clean
        # state (the process group, in PartialState, is kept)
        AcceleratorState._reset_state()
        self.acc = Accelerator(cpu=not on_gpu, log_with=_tracker(cfg.train.report_to),
                               mixed_precision={"fp32": "no"}.get(cfg.train.mixed_precision, cfg.train.mixed_precision),
                               project_config=ProjectConfiguration(self.run_dir, self.run_dir / "logs"))
        if self.acc.distributed_type == DistributedType.FSDP:  # the EMA and checkpoints need whole, not sharded, weights
            raise LLMDiffError("llmdiff train does not support FSDP; launch DDP instead (accelerate launch --multi_gpu)")
        self._check_folder(resume)  # nothing is written into the run folder before data and model are built
        self.data = training_data(cfg)
        # the periodic sample grid's prompts go through the same feature cache as the captions
        self.sample_texts = [cached_features(e, self.sample_prompts, "float32", cfg.text.batch_size).text
                             for e in cfg.text.encoders]
        torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
        from .build import build_denoiser

        model = build_denoiser(cfg, self.data.text_dims, self.data.text_outputs)
        # a resumed run loads the statistics with the weights, a fine-tuned one keeps its init's
        if cfg.text.standardize and not cfg.model.init:
            model.fit_text_statistics(self.data.feature_sample())
        self.codec = None
        if cfg.model.autoencoder:
            from ..autoencoder import LatentCodec

            self.codec = LatentCodec(cfg.model.autoencoder, self.acc.device)
        if cfg.train.gradient_checkpointing:  # every denoiser is a diffusers ModelMixin with checkpointed blocks
            model.enable_gradient_checkpointing()
        self.trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.opt = torch.optim.AdamW(list(self.trainable.values()), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                                     betas=(0.9, cfg.train.adam_beta2))
        self.step, self.history = 0, []
        self.seconds_before = 0.0  # wall seconds spent training in the earlier processes of a resumed run
        self._open_folder(resume)
        saved_ema = self._resume(model) if resume else None
        self.model, self.opt = self.acc.prepare(model, self.opt)
        self.ema = self._make_ema(saved_ema)

    # --- run folder and resume -----------------------------------------------------------------------

    def _check_folder(self, resume: bool) -> None:
        """Refuse a run folder this run must not write into; reads only."""
        cfg_path = self.run_dir / "config.yaml"
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise LLMDiffError(f"run folder {self.run_dir} is a file; pass another --run-dir")
        checkpoints = list_checkpoints(self.run_dir / "checkpoints")
        if resume and not checkpoints:
            raise LLMDiffError(f"nothing to resume in {self.run_dir}: it holds no checkpoint; start the run "
                               "without --resume")
        if cfg_path.is_file() and not _is_run_config(cfg_path):
            raise LLMDiffError(f"{cfg_path} is not a run's config (a file of yours?); it is never overwritten: "
                               "use another --run-dir")
        if not cfg_path.is_file() and not checkpoints:  # no run wrote here: a log or plot there is someone's
            for name in RUN_FILES:
                check_replaceable(self.run_dir / name, "--run-dir", remedy="use another --run-dir")
        if cfg_path.is_file() and resume:
            saved = load_config(cfg_path)
            if not _same_run(saved, self.cfg):
                raise LLMDiffError(f"{self.run_dir} was started with another config; resume it with "
                                   f"`llmdiff train {cfg_path} --resume` (a larger train.steps extends it) "
                                   "or use another --run-dir")
        elif checkpoints and not resume:
            raise LLMDiffError(f"{self.run_dir} already holds checkpoints; pass --resume to continue or "
                               "choose another --run-dir")

    def _open_folder(self, resume: bool) -> None:
        """Create the run folder, remove what a killed checkpoint write left behind, record the config; a run
        that starts anew (its folder killed before a first checkpoint) starts its log and loss plot anew."""
        if self.acc.is_main_process:
            with self._writing():
                for stale in remove_temp_folders(self.run_dir / "checkpoints"):
                    log.warning("removed %s (an interrupted checkpoint write)", stale)
                if not resume:
                    for name in RUN_FILES:
                        (self.run_dir / name).unlink(missing_ok=True)
                atomic_write_text(self.run_dir / "config.yaml", RUN_CONFIG_HEADER + yaml_text(self.cfg))
        self.acc.wait_for_everyone()

    def _writing(self):
        """The run folder's lock (main process): a second `llmdiff train` into the same folder is refused."""
        if not self.acc.is_main_process:
            return contextlib.nullcontext()
        return folder_lock(self.run_dir, "the run folder")

    def _resume(self, model) -> dict[str, torch.Tensor] | None:
        """Model, optimiser, step and log from the last checkpoint; returns its EMA weights (None: it has none)."""
        ckpt = load_checkpoint(list_checkpoints(self.run_dir / "checkpoints")[-1])  # _check_folder: there is one
        model.load_state_dict(ckpt["model"])
        load_optimizer(self.opt, ckpt["optimizer"], ckpt["state"]["optimizer"])
        self.step = ckpt["state"]["step"]
        self.seconds_before = ckpt["state"].get("train_seconds", 0.0)
        self.history = _read_log(self.run_dir / "log.jsonl", self.step)
        if self.acc.is_main_process:  # forget what a killed run logged after its last checkpoint
            atomic_write_text(self.run_dir / "log.jsonl", "".join(json.dumps(r) + "\n" for r in self.history))
        return ckpt["ema"]

    def _make_ema(self, saved: dict[str, torch.Tensor] | None):
        """diffusers' EMAModel of the trainable weights, made after accelerate.prepare so that it lives on their
        device; a resumed run's EMA continues from the checkpoint's (a name -> tensor dict, as runs have always
        saved it) at the checkpoint's step.

        Its decay is the one we had, min(ema_decay, (1 + step) / (10 + step)) at the update after step `step`, but
        for the very first update, where EMAModel uses 0 (it copies the weights) and we used 0.1, and its foreach
        update s - (1 - d)(s - p) rounds differently from the lerp we used. That 0.1 of the initial weights weighed
        0.1 * 10! n! / (n + 9)! in the EMA after n steps (2e-13 after 100): a run trained before this change gives
        the same EMA weights again to float rounding, not bit for bit."""
        from diffusers.training_utils import EMAModel

        ema = EMAModel(list(self.trainable.values()), decay=self.cfg.train.ema_decay, foreach=True)
        if saved is not None:
            for shadow, name in zip(ema.shadow_params, self.trainable):
                shadow.copy_(saved[name])  # onto the weights' device
        ema.optimization_step = self.step  # its decay warm-up goes by the optimiser steps taken
        return ema

    def ema_weights(self) -> dict[str, torch.Tensor]:
        """The EMA of every trainable weight by name (what checkpoints store)."""
        return dict(zip(self.trainable, self.ema.shadow_params))

    # --- the loop ----------------------------------------------------------------------------------

    def train(self, stop_after: int | None = None) -> Path | None:
        """Train to cfg.train.steps (or stop after `stop_after` steps, as a kill would); returns the model folder."""
        with self._writing():
            return self._train(stop_after)

    def _train(self, stop_after: int | None) -> Path | None:
        from tqdm.auto import tqdm

        cfg, tc = self.cfg, self.cfg.train
        end = tc.steps if stop_after is None else min(tc.steps, self.step + stop_after)
        bar = tqdm(total=tc.steps, initial=self.step, desc=f"training {cfg.name}", unit="step",
                   disable=not (self.progress and self.acc.is_main_process))
        log_file = self.run_dir / "log.jsonl"
        if self.acc.log_with:
            self.acc.init_trackers(cfg.name, config=_hparams(cfg))
        try:
            self._loop(end, bar, log_file)
        finally:
            bar.close()
            if self.acc.log_with:
                self.acc.end_training()
        if self.step < tc.steps:
            return None
        return self._export()

    def _loop(self, end: int, bar, log_file: Path) -> None:
        tc = self.cfg.train
        self.loop_started = time.perf_counter()
        t_last, n_imgs = time.perf_counter(), 0
        while self.step < end:
            x0, texts, gen = self.data.batch(self.step, self.acc.process_index, tc.batch_size, tc.caption_dropout)
            device = self.acc.device
            texts = [t.to(device) for t in texts]
            for group in self.opt.param_groups:
                group["lr"] = lr_at(self.step, tc)
            self.model.train()
            x0 = x0.to(device)
            if self.codec is not None:
                x0 = self.codec.encode(x0)  # the frozen autoencoder's normalised latents
            loss = self._accumulate(x0, texts, noise_draws(x0, tc.objective, gen, tc.flow_shift))
            grad_norm = self.acc.clip_grad_norm_(list(self.trainable.values()), tc.grad_clip)
            mean_loss = self.acc.gather(loss.detach()[None]).mean().item()
            if not (math.isfinite(mean_loss) and math.isfinite(float(grad_norm))):
                last = last_good_checkpoint(self.run_dir / "checkpoints")
                raise TrainingDiverged(
                    f"loss became {mean_loss} (grad norm {float(grad_norm)}) at step {self.step}; "
                    f"the last good checkpoint is {last or 'none'}; lower train.lr or train.grad_clip "
                    "and resume with --resume")
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.ema.step(self.trainable.values())
            self.step += 1
            n_imgs += tc.batch_size * self.acc.num_processes
            row = {"step": self.step - 1, "loss": mean_loss, "lr": lr_at(self.step - 1, tc), "grad_norm": float(grad_norm)}
            if self.step % tc.log_every == 0 or self.step == end:
                row["img_s"] = n_imgs / (time.perf_counter() - t_last)  # training throughput since the last log
                t_last, n_imgs = time.perf_counter(), 0
                recent = [r["loss"] for r in self.history[-tc.log_every + 1:]] + [mean_loss]
                bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", img_s=f"{row['img_s']:.0f}")
                self.acc.log({"train/loss": sum(recent) / len(recent), "train/lr": row["lr"],
                              "train/grad_norm": row["grad_norm"], "train/images_per_s": row["img_s"]}, step=self.step)
            self.history.append(row)
            if self.acc.is_main_process:
                with open(log_file, "a") as f:
                    f.write(json.dumps(row) + "\n")
            bar.update(1)
            paused = time.perf_counter()  # checkpoints and sample grids do not count against the throughput
            if self.step % tc.checkpoint_every == 0 or self.step == tc.steps:
                self._checkpoint()
            if tc.sample_every and (self.step % tc.sample_every == 0 or self.step == tc.steps):
                self._sample_grid()
            t_last += time.perf_counter() - paused

    def _accumulate(self, x0: torch.Tensor, texts: list, draws: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The gradients of one optimiser step's batch, summed over train.gradient_accumulation_steps equal
        micro-batches (each loss scaled by 1/k: the gradient of the batch's mean loss); returns that mean loss.

        The batch's noise and levels were drawn for the whole batch, so micro-batch i trains on rows i*m..(i+1)*m
        of exactly what one pass would. Only the last backward synchronises the gradients across processes."""
        tc, k = self.cfg.train, self.cfg.train.gradient_accumulation_steps
        m = tc.batch_size // k
        total = 0.0
        for i in range(k):
            rows = slice(i * m, (i + 1) * m)
            with self.acc.no_sync(self.model) if i < k - 1 else contextlib.nullcontext():
                loss = training_loss(self.model, x0[rows], [t.select(rows) for t in texts], tc.objective,
                                     draws=(draws[0][rows], draws[1][rows]))
                self.acc.backward(loss / k)
            total = total + loss.detach()
        return total / k

    def _checkpoint(self) -> None:
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            save_checkpoint(self.run_dir / "checkpoints", self.step, self.acc.unwrap_model(self.model),
                            self.ema_weights(), self.opt,
                            {"config": to_dict(self.cfg), "processes": self.acc.num_processes,
                             "train_seconds": self.seconds_before + time.perf_counter() - self.loop_started},
                            keep=self.cfg.train.keep_checkpoints)
            self._plot_loss()
        self.acc.wait_for_everyone()

    def ema_model(self):
        """A copy of the model with the EMA weights, in eval mode."""
        model = copy.deepcopy(self.acc.unwrap_model(self.model))
        # without the autocast wrapper accelerate puts on a mixed-precision model's forward: the grids are
        # sampled in fp32, as `llmdiff generate` samples the exported model
        model.__dict__.pop("forward", None)
        model.__dict__.pop("_original_forward", None)
        state = model.state_dict()
        state.update({n: v.to(state[n].dtype) for n, v in self.ema_weights().items()})
        model.load_state_dict(state)
        return model.eval()

    def _sample_grid(self) -> None:
        """The fixed prompts through the pipeline's sampling, with the run's sample settings."""
        if not self.acc.is_main_process:
            return
        from ..diffusion import make_scheduler
        from ..pipelines import TextToImage
        from ..viz import image_grid

        sc = self.cfg.sample
        pipe = TextToImage(self.ema_model(), make_scheduler(self.cfg.train.objective, sc.scheduler),
                           self.codec.ae if self.codec is not None else None, to_dict(sc))
        pipe.set_progress_bar_config(disable=True)
        imgs = pipe(prompt_embeds=self.sample_texts, generator=torch.Generator().manual_seed(0), output_type="pt").images
        path = image_grid(to_uint8(imgs * 2 - 1), self.sample_prompts, self.run_dir / "samples" / f"step-{self.step:07d}.png",
                          title=f"{self.cfg.name}, step {self.step}, guidance {sc.guidance_scale}")
        self._log_grid(path)

    def _log_grid(self, path: Path) -> None:
        """The sample grid to the tracker (TensorBoard's Images tab, or wandb)."""
        if not self.acc.log_with:
            return
        import numpy as np
        from PIL import Image

        grid = np.asarray(Image.open(path).convert("RGB"))
        tracker = self.acc.get_tracker(self.cfg.train.report_to)
        if self.cfg.train.report_to == "tensorboard":
            tracker.log_images({"samples": grid[None]}, step=self.step, dataformats="NHWC")
        else:
            tracker.log_images({"samples": [grid]}, step=self.step)

    def _plot_loss(self) -> None:
        from ..viz import loss_curve

        if self.history:
            loss_curve([r["step"] for r in self.history], [r["loss"] for r in self.history], self.run_dir / "loss.png",
                       title=f"{self.cfg.name}: training loss")

    def _export(self) -> Path:
        """The model folder from the final checkpoint, through the same export as `llmdiff export`."""
        out = self.run_dir / "model"
        if self.acc.is_main_process:
            export_checkpoint(list_checkpoints(self.run_dir / "checkpoints")[-1], out)
            self._plot_loss()
        self.acc.wait_for_everyone()
        return out


def train(cfg: ExperimentConfig, run_dir: Path | str, resume: bool = False, progress: bool = True,
          stop_after: int | None = None) -> Path | None:
    return Trainer(cfg, run_dir, resume, progress).train(stop_after)

"""Fine-tuning a pretrained backbone with a new head: which blocks train, at which rates, when.

Strategies:
- ``finetune_top``: the last ``top_blocks`` block groups and the head train; earlier blocks (the
  generic edge and colour detectors) stay as pretrained.
- ``finetune_all``: every block trains, at lower rates than the head.
- ``gradual``: the head trains alone for ``freeze_epochs`` (so its random start cannot wreck the
  backbone), then everything trains.

BatchNorm: with ``batchnorm="frozen"``, the default (and Keras's transfer-learning advice), every
BatchNorm layer normalises with its stored ImageNet statistics, and in trained blocks only its scale
and shift learn. With ``"batch"``, BatchNorm layers in trained blocks normalise with batch statistics
and update their running statistics: what every later layer sees then changes from the first step,
which wiped out the warm-started head on data unlike ImageNet (digits at 96 px, finetune_all: 78.5%
against 92.3% frozen) and cost 2 points on oxford17flowers (91.0% against 92.9%); it gained one
image of 153 on hymenoptera (96.1% against 95.4%). See docs/benchmarks.md. ``train_bn=True`` extends whatever trained blocks do to the
BatchNorm layers of frozen blocks.
"""

from __future__ import annotations

import logging
import numbers
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .. import distributed, progress
from ..backbones import PRE_LOGITS, BackboneSpec, Preprocessing, build_feature_map_model, build_tap_model
from ..data.augment import augmentation_transform, policy_steps
from ..data.batches import ImageBatches
from .._seeds import derived_seed
from ..data.images import as_sources
from ..data.sampling import IMBALANCE_HANDLING, ClassBalancedSampler, ImbalancePlan, SharedShuffleSampler, inverse_frequency_weights, plan_imbalance
from ..errors import DataError, HeadstartError, check_choice
from ..hardware import PRECISIONS, resolve_bf16, resolve_device
from ..training import EarlyStopping, EpochRecord, History, RangeTest, lr_range_test, param_groups, train, warmup_cosine
from ..training.checkpoint import CHECKPOINT_FILE, restore_checkpoint, run_identity, save_checkpoint
from ..training.params import backbone_blocks, block_index
from ..weight_init import SCHEMES, initialize
from .layers import BatchDropout, DropConnectLinear, StochasticPool
from .linear import LinearHead

log = logging.getLogger(__name__)

STRATEGIES = ("finetune_top", "finetune_all", "gradual")
POOLINGS = ("avg", "stochastic")
KEEP_CHOICES = ("auto", "best", "last")
SCALE_FLOOR = 0.5  # warm start: least code scale, as a share of the median code's
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@dataclass
class FineTuneConfig:
    """Settings of a fine-tuning run; each default is what the shared benchmarks favoured or the
    usual recipe (fastai's ``fine_tune``, Keras's transfer-learning guide)."""

    strategy: str = "finetune_top"
    top_blocks: int = 4  # block groups trained by finetune_top (MobileNetV2 has 19)
    epochs: int = 12
    freeze_epochs: int = 2  # gradual: epochs with only the head training
    head_lr: float = 1e-3
    find_lr: bool = False  # run the LR range test first and use its suggestion instead of head_lr
    lr_mult: float = 10.0  # backbone learns at head_lr / lr_mult ...
    layer_decay: float | None = None  # ... or at head_lr * decay ** (blocks above it), if set
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    batch_size: int = 32
    label_smoothing: float = 0.1
    dropout: float = 0.5  # on the codes, before the head (docs/benchmarks.md: the regularisation sweep)
    ensemble: bool = True  # predict with the mean of the network's and the linear head's probabilities (strategies.ensemble)
    drop_connect: float = 0.0  # share of the head's weights dropped per batch (DropConnect)
    pooling: str = "avg"  # how the last feature map becomes the codes: "avg" (global average) or "stochastic"
    mixup: float = 0.0  # Beta(a, a) mixing of image pairs and their labels; 0 = off (0.2-0.4 usual)
    patience: int = 4  # epochs without a better validation loss before stopping
    # Which epoch's weights end the run: "best" (early stopping on the held-out split's loss),
    # "last" (the whole schedule; the split is still scored every epoch), or "auto": last for
    # finetune_all, best otherwise. Measured (docs/benchmarks.md, "The small-data fine-tuning
    # recipe"): with every layer training at reduced rates, the annealed schedule's last epoch
    # scored at least as well as the small split's pick on 9 of 10 runs over five sets (-0.25 on
    # the tenth) and rose on 11 of 13 bench_advisor rows (mean +0.8 points); when only the top
    # blocks train, the split's pick was worth up to 7 points (MRI).
    keep: str = "auto"
    train_bn: bool = False  # BatchNorm layers of frozen blocks learn too
    batchnorm: str = "frozen"  # "frozen": normalise with the stored statistics; "batch": with each batch's
    augmentation: str | tuple[str, ...] = "objects"
    imbalance: str = "auto"
    precision: str = "auto"  # "bf16", "fp32", or "auto" (bf16 where the hardware has it)
    device: str = "auto"
    seed: int = 0
    num_workers: int = 0
    progress: bool = False
    time_limit: float | None = None  # seconds of training; stops after the last epoch that fits
    init: str = "he_normal"  # the new head's initialisation when not warm-started (headstart.weight_init)

    def __post_init__(self):
        """Every setting is checked here, before any work: one DataError line naming the setting."""
        choices = {"strategy": STRATEGIES, "keep": KEEP_CHOICES, "precision": PRECISIONS, "batchnorm": ("frozen", "batch"), "pooling": POOLINGS, "imbalance": IMBALANCE_HANDLING, "init": SCHEMES}
        for name, allowed in choices.items():
            check_choice(f"{name} value", getattr(self, name), allowed)  # "unknown keep value ..." names the setting
        if not 0.0 <= self.drop_connect < 1.0 or not 0.0 <= self.dropout < 1.0:
            raise DataError(f"dropout={self.dropout!r} and drop_connect={self.drop_connect!r} are shares of units or weights dropped: use values in [0, 1).")
        if self.mixup < 0:
            raise DataError(f"mixup is a Beta distribution's parameter: use 0 (off) or a positive value, got {self.mixup}.")
        for name in ("epochs", "batch_size", "top_blocks", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise DataError(f"fine-tuning setting {name} must be a whole number of at least 1, got {value!r}.")
        if not self.head_lr > 0 or not self.lr_mult > 0:
            raise DataError(f"head_lr={self.head_lr!r} and lr_mult={self.lr_mult!r} must be positive.")
        policy_steps(self.augmentation)  # an unknown policy or step fails now, not at the first epoch

    @property
    def kept_epoch(self) -> str:
        """``keep`` resolved: "best" or "last"."""
        if self.keep != "auto":
            return self.keep
        return "last" if self.strategy == "finetune_all" else "best"


class FineTuneNet(nn.Module):
    """Backbone (up to its pooled codes), fixed standardisation, dropout, and a new linear head.

    With ``pooling="stochastic"`` the backbone stops at its last feature map and
    :class:`StochasticPool` replaces the global average pooling; the parameters are the same either
    way, so a linear probe's solution still warm-starts the head.
    """

    def __init__(self, spec: BackboneSpec, n_classes: int, dropout: float = 0.5, drop_connect: float = 0.0, pooling: str = "avg", seed: int = 0):
        super().__init__()
        width = spec.taps[PRE_LOGITS]
        if pooling == "stochastic":
            self.backbone = build_feature_map_model(spec)
            self.pool = StochasticPool()
            _check_width(nn.Sequential(self.backbone, self.pool).eval(), spec, width)
        else:
            self.backbone = build_tap_model(spec, PRE_LOGITS)  # pools globally itself
            self.pool = nn.Identity()
        _drop_imagenet_dropout(self.backbone.model, spec)
        # Codes are standardised with the linear probe's statistics (identity until warm_start):
        # folding 1/scale into the head instead would give near-constant codes huge weights, and
        # dropout's noise on them huge logits.
        self.register_buffer("code_mean", torch.zeros(width))
        self.register_buffer("code_scale", torch.ones(width))
        self.dropout = BatchDropout(dropout, seed)
        self.head = DropConnectLinear(width, n_classes, drop_connect)

    @property
    def out_features(self) -> int:
        return self.head.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_and_codes(x)[0]

    def logits_and_codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits and the pooled codes they are read from (the penultimate layer, before
        standardisation): what the "none of these" detector of a fine-tuned network scores."""
        codes = self.pool(self.backbone(x))
        return self.head(self.dropout((codes - self.code_mean) / self.code_scale)), codes

    @torch.no_grad()
    def warm_start(self, linear: LinearHead) -> None:
        """Start from a fitted linear probe: its standardisation and weights on the same codes.

        Codes that were nearly constant on the training images (a spread under half the median
        code's) are scaled by that floor instead: as the backbone learns they move by much more
        than their tiny spread, and standardised by it they would swamp the logits (digits at
        96 px: 372 such codes of 1,280, spreads down to 1/1000 of the median).
        """
        scale = np.maximum(linear.scale, SCALE_FLOOR * np.median(linear.scale))
        self.code_mean.copy_(torch.as_tensor(linear.mean, dtype=torch.float32))
        self.code_scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
        self.head.weight.copy_(torch.as_tensor(linear.coef, dtype=torch.float32))
        self.head.bias.copy_(torch.as_tensor(linear.intercept, dtype=torch.float32))


@torch.no_grad()
def _check_width(backbone: nn.Module, spec: BackboneSpec, width: int) -> None:
    """Pooling the feature map must give codes as wide as the pre-logits ones (it does not when the
    ImageNet classifier has hidden layers, as in MobileNetV3 or VGG)."""
    side = spec.preprocessing.crop
    channels = backbone(torch.zeros(1, 3, side, side)).shape[1]
    if channels != width:
        raise HeadstartError(
            f"stochastic pooling needs {spec.name}'s codes to be its pooled last feature map, but they are {width} wide "
            f"and the map has {channels} channels; use pooling='avg' with this backbone."
        )


def _drop_imagenet_dropout(model: nn.Module, spec: BackboneSpec) -> None:
    """The ImageNet classifier's dropout (MobileNetV2's classifier.0, timm's drop_rate) would stack
    on the new head's; only the head's ``dropout`` setting should apply."""
    root = spec.classifier.split(".")[0]
    head = getattr(model, root, None)
    if isinstance(head, nn.Module):
        for module in head.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
    if hasattr(model, "drop_rate"):
        model.drop_rate = 0.0


class ImageDataset(torch.utils.data.Dataset):
    """Images (paths, PIL images or arrays) with integer labels, decoded and transformed on access.

    With a ``seed``, an image's random transform is drawn from (seed, epoch, image index): the same
    augmentation whichever process or loader worker decodes it, and in whatever order, so N
    processes augment each image as one process does (and a resumed epoch as the first try did)."""

    def __init__(self, images, labels, transform, draft_size: int | None = None, seed: int | None = None):
        self.images = as_sources(images)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.draft_size = draft_size
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = self.images[index].rgb(self.draft_size)
        if self.seed is None:
            return self.transform(image), int(self.labels[index])
        with torch.random.fork_rng(devices=[]):  # torchvision's transforms draw from torch's global generator
            torch.manual_seed(derived_seed(self.seed, self.epoch, index))
            tensor = self.transform(image)
        return tensor, int(self.labels[index])


def trainable_blocks(spec: BackboneSpec, config: FineTuneConfig, epoch: int) -> set[int]:
    """Indices of the backbone block groups that train in ``epoch`` (0-based)."""
    n_blocks = len(backbone_blocks(spec))
    if config.strategy == "finetune_all" or (config.strategy == "gradual" and epoch >= config.freeze_epochs):
        return set(range(n_blocks))
    if config.strategy == "finetune_top":
        return set(range(max(0, n_blocks - config.top_blocks), n_blocks))
    return set()  # gradual, head-only epochs


def set_train_mode(net: FineTuneNet, spec: BackboneSpec, config: FineTuneConfig, epoch: int) -> None:
    """Freeze what does not train this epoch; BatchNorm layers keep ImageNet's statistics unless
    ``batchnorm="batch"`` (then those that learn normalise with batch statistics)."""
    blocks = backbone_blocks(spec)
    training = trainable_blocks(spec, config, epoch)
    net.train()
    for name, module in net.backbone.named_modules():
        inner = name.removeprefix("model.")
        index = block_index(inner, blocks)
        frozen = index is None or index not in training
        learns = not frozen or (config.train_bn and isinstance(module, _NORMS))
        for parameter in module.parameters(recurse=False):
            parameter.requires_grad_(learns)
        if isinstance(module, _NORMS) and not (learns and config.batchnorm == "batch"):
            module.eval()


@dataclass
class FineTuneResult:
    net: FineTuneNet
    history: History
    imbalance: ImbalancePlan
    bf16: bool
    lr_test: RangeTest | None = None  # when find_lr was on


def finetune(
    spec: BackboneSpec,
    train_images,
    train_labels,
    val_images,
    val_labels,
    config: FineTuneConfig | None = None,
    *,
    n_classes: int | None = None,
    head_init: LinearHead | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    preprocessing: Preprocessing | None = None,
    on_epoch_end: Callable[[EpochRecord, nn.Module], None] | None = None,
    name: str = "fine-tuning",
) -> FineTuneResult:
    """Fine-tune ``spec``'s network on images with integer labels 0..k-1; validate on the val split.

    The training data are reshuffled every epoch (or drawn class-balanced, when the imbalance plan
    says so); the val split is scored every epoch, and ``config.kept_epoch`` says whether early
    stopping on its loss restores the best epoch's weights or the schedule's last epoch ends it. With
    ``checkpoint_dir``, the whole state is saved after every epoch, and ``resume=True`` continues
    from it: an interrupted run resumed ends with the weights an uninterrupted one would have.
    ``preprocessing`` overrides the backbone's own (another input size, say); ``on_epoch_end(record,
    net)`` runs after every epoch (TensorBoard logging). ``name`` leads the phase's lines (one per
    epoch) while :mod:`headstart.progress` is on.
    """
    config = config or FineTuneConfig()
    # torchvision's random transforms draw from torch's global generator, so seeding must touch it;
    # fork_rng hands the caller's generator state back afterwards.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return _finetune(
            spec, train_images, train_labels, val_images, val_labels, config, n_classes, head_init, checkpoint_dir, resume,
            preprocessing or spec.preprocessing, on_epoch_end, name,
        )


def _finetune(spec, train_images, train_labels, val_images, val_labels, config, n_classes, head_init, checkpoint_dir, resume, preprocessing, on_epoch_end, name) -> FineTuneResult:
    train_labels = np.asarray(train_labels, dtype=np.int64)
    n_classes = n_classes or int(max(train_labels.max(), np.max(val_labels)) + 1)
    device = resolve_device(config.device)
    bf16 = resolve_bf16(config.precision, device)
    net = _new_network(spec, n_classes, config, head_init).to(device)
    world = distributed.current()
    plan = plan_imbalance(train_labels, config.imbalance)
    train_loader, val_loader, generator = _loaders(train_images, train_labels, val_images, val_labels, config, preprocessing, plan)
    weights = inverse_frequency_weights(train_labels, n_classes) if plan.mode in ("weights", "both") else None
    criterion = nn.CrossEntropyLoss(
        weight=torch.as_tensor(weights, dtype=torch.float32, device=device) if weights is not None else None,
        label_smoothing=config.label_smoothing,
    )
    optimizer = torch.optim.AdamW(
        param_groups(net, spec, head_lr=config.head_lr, lr_mult=config.lr_mult, layer_decay=config.layer_decay, weight_decay=config.weight_decay)
    )
    lr_test = _find_lr(net, optimizer, train_loader, criterion, device, bf16) if config.find_lr and not resume else None
    stopper = EarlyStopping(config.patience)
    stops_early = config.kept_epoch == "best"
    identity = run_identity(config, n_classes, len(train_labels), spec.weights_id)
    checkpoint = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    start_epoch, history = 0, History()
    if resume:
        if checkpoint is None:
            raise HeadstartError("resume needs a checkpoint folder: give the run directory (-o RUN) that was interrupted.")
        start_epoch, history = restore_checkpoint(checkpoint, net=net, optimizer=optimizer, early_stopping=stopper, generator=generator, identity=identity, rank=world.rank)
        progress.announce(f"{name}: resuming from {checkpoint} after epoch {start_epoch} of {config.epochs}")
    else:
        progress.announce(
            f"{name}: {config.strategy} of {spec.name}, up to {config.epochs} epochs on {len(train_labels)} images "
            f"({len(val_labels)} held out {'for early stopping' if stops_early else 'to score each epoch; the last is kept'})"
            f"{', bf16' if bf16 else ''}"
        )

    def end_of_epoch(record) -> None:
        if checkpoint is not None:  # one writer, holding every rank's random state; every rank resumes from it
            rng_states = world.gather(torch.get_rng_state())
            if world.main:
                save_checkpoint(checkpoint, net=net, optimizer=optimizer, early_stopping=stopper, history=history, generator=generator, identity=identity, rng_states=rng_states)
        if on_epoch_end is not None:
            on_epoch_end(record, net)

    warmup = int(round(config.warmup_epochs * len(train_loader)))
    history = train(
        net, optimizer, train_loader, epochs=config.epochs, criterion=criterion, lr_factor=lambda step, total: warmup_cosine(step, total, warmup),
        val_loader=val_loader, set_train_mode=lambda n, epoch: set_train_mode(n, spec, config, epoch), early_stopping=stopper if stops_early else None,
        device=device, bf16=bf16, progress=config.progress and world.main, on_epoch_end=end_of_epoch, mixup=config.mixup, start_epoch=start_epoch,
        history=history, deadline=time.perf_counter() + config.time_limit if config.time_limit is not None else None, wrap=_wrapper(world, device), name=name,
    )
    net.eval()
    return FineTuneResult(net, history, plan, bf16, lr_test)


def _new_network(spec: BackboneSpec, n_classes: int, config: FineTuneConfig, head_init: LinearHead | None) -> FineTuneNet:
    net = FineTuneNet(spec, n_classes, config.dropout, config.drop_connect, config.pooling, config.seed)
    if head_init is not None:
        net.warm_start(head_init)
    else:
        initialize(net.head, config.init, seed=config.seed)
    return net


def _loaders(train_images, train_labels, val_images, val_labels, config: FineTuneConfig, preprocessing: Preprocessing, plan: ImbalancePlan):
    """Training batches (augmented; reshuffled every epoch, or drawn class-balanced when the
    imbalance plan says so), validation batches, and the generator that orders them."""
    train_set = ImageDataset(train_images, train_labels, augmentation_transform(config.augmentation, preprocessing), preprocessing.resize, config.seed)
    val_set = ImageDataset(val_images, val_labels, preprocessing.transform(), preprocessing.resize)
    # Several processes share one order per epoch, each taking every world-size-th image and its
    # share of batch_size a step: a step sees the very images one process's step would.
    generator = torch.Generator().manual_seed(config.seed)
    world = distributed.current()
    if plan.mode in ("sampler", "both"):
        sampler = ClassBalancedSampler(train_labels, seed=config.seed, num_replicas=world.size, rank=world.rank)
    else:
        sampler = SharedShuffleSampler(len(train_set), generator, num_replicas=world.size, rank=world.rank)
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=max(1, config.batch_size // world.size), sampler=sampler, generator=generator, num_workers=config.num_workers
    )
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=config.batch_size, num_workers=config.num_workers)
    return train_loader, val_loader, generator


def _wrapper(world: distributed.World, device: torch.device) -> Callable[[nn.Module], nn.Module] | None:
    """DistributedDataParallel around the network, rebuilt when the trainable parameters change
    (gradual unfreezing): DDP averages the gradients of the parameters that trained when it was built."""
    if not world.active:
        return None
    built: dict = {}

    def wrap(net: nn.Module) -> nn.Module:
        trainable = tuple(name for name, p in net.named_parameters() if p.requires_grad)
        if built.get("trainable") != trainable:
            built.update(trainable=trainable, module=world.wrap(net, device))
        return built["module"]

    return wrap


def _find_lr(net, optimizer, train_loader, criterion, device, bf16) -> RangeTest:
    """The LR range test; every group's rate is scaled so that the head's is its suggestion."""
    # One test, on rank 0: every rank must train at the same rates.
    lr_test = distributed.current().from_main(lambda: lr_range_test(net, optimizer, train_loader, criterion, device=device, bf16=bf16))
    top = max(group["lr"] for group in optimizer.param_groups)
    for group in optimizer.param_groups:
        group["lr"] *= lr_test.suggestion / top
    log.info("LR range test suggests a head learning rate of %.2g", lr_test.suggestion)
    return lr_test


def network_scores(net: nn.Module, images, preprocessing, *, batch_size: int = 32, progress: bool = False) -> tuple[np.ndarray, dict[int, str]]:
    """Logits of a network that predicts (a FineTuneNet, or one averaged with its linear head: it
    has ``out_features``) for paths, PIL images or arrays; unreadable images get NaN rows and a
    reason, so one bad file never stops the others."""
    scores, _, failures = network_outputs(net, images, preprocessing, batch_size=batch_size, progress=progress)
    return scores, failures


@torch.no_grad()
def network_outputs(
    net: nn.Module, images, preprocessing, *, with_codes: bool = False, batch_size: int = 32, progress: bool = False, desc: str = "predicting",
) -> tuple[np.ndarray, np.ndarray | None, dict[int, str]]:
    """:func:`network_scores`, and with ``with_codes`` the penultimate codes too, from the same
    pass (``net.logits_and_codes``; NaN rows where unreadable)."""
    net.eval()
    scores = np.full((len(images), net.out_features), np.nan)
    codes = None
    batches = ImageBatches(images, preprocessing.transform(), batch_size=batch_size, draft_size=preprocessing.resize, hashes=False, progress=progress, desc=desc)
    for batch in batches:
        logits, batch_codes = net.logits_and_codes(batch.tensors) if with_codes else (net(batch.tensors), None)
        scores[batch.indices] = logits.float().numpy()
        if with_codes:
            codes = np.full((len(images), batch_codes.shape[1]), np.nan, dtype=np.float32) if codes is None else codes
            codes[batch.indices] = batch_codes.float().numpy()
    return scores, codes, dict(batches.failures)

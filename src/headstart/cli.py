"""The ``headstart`` command: a thin layer that parses arguments and calls the public API."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import signal
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

from .errors import SHOWN_IN_SUMMARY, HeadstartError, one_line

log = logging.getLogger("headstart")

EXIT_ERROR = 2  # bad input or a failed run
EXIT_PARTIAL = 1  # finished, but some images could not be read
# headstart.hardware.PRECISIONS, spelled out here so that parsing arguments imports no torch.
PRECISION_CHOICES = ("auto", "bf16", "fp32")
# headstart.recipe.MIN_INPUT_SIZE and MAX_INPUT_SIZE, likewise: a bad --input-size is refused at once.
INPUT_SIZES = (16, 2048)
# The demo is a first run: it fits within first contact's bound. Unbounded, auto's trial finds
# fine-tuning ahead on its digits (94.3% against 93.3%) and the fit takes 130 s; within it, 16 s.
DEMO_SECONDS = 60.0
# Names the file in which the --nproc launcher hands the images it found to the processes it starts.
FOUND_VARIABLE = "HEADSTART_FOUND_IMAGES"
INPUT_SIZE_HELP = "crop side fed to the backbone (default: its test size, 288 px, where the images' median shorter side is at least the 224 px it learnt at; else 224)"
PRECISION_HELP = "arithmetic of the network (default auto: bf16 where the hardware has it natively, ~4x faster on such CPUs)"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    given = list(sys.argv[1:] if argv is None else argv)
    if not given:  # a first try of the bare command: the commands and what each does, as pip shows them
        parser.print_help()
        return 0
    args = parser.parse_args(given)
    args.argv = given  # --nproc starts torchrun with these
    # Bars and phase lines: off with -q; off when standard error is not a terminal (a log file, CI)
    # unless --progress asks for them.
    args.show_progress = not args.quiet and (args.progress or sys.stderr.isatty())
    _configure_logging(args.quiet)
    _starting(args)
    previous = _stop_as_interrupt()
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (HeadstartError, FileNotFoundError, PermissionError) as exc:
        if args.debug:
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def run() -> None:
    """The ``headstart`` command (and ``python -m headstart``): ``main``, then out at once.

    Python's own shutdown tears down PyTorch's and torchvision's modules one by one: 1.5-1.7 s after
    every command that loaded them, measured here (``benchmarks/bench_exit.py``), a wait after the
    last line with nothing to show for it. In a torchrun rank the teardown could even abort: gloo's
    threads may still hold tensors whose release needs the interpreter (SIGABRT at exit, about 1
    job in 50 here, after destroy_process_group). Whatever a command writes is closed before
    ``main`` returns (files are written atomically, the feature cache record by record, thread
    pools are joined), so skipping the shutdown loses nothing; an exception still ends the usual way."""
    _interrupt_once()
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left early (head, a closed pager): what it read was written
        code = 141  # what a shell reports for a program ended by SIGPIPE
    sys.stderr.flush()
    os._exit(code or 0)


def _interrupt_once() -> None:
    """The first Ctrl-C interrupts as Python's does, and the next ones are ignored while the command
    stops (a second saved nothing: raised again, it landed in a finaliser (tqdm's bar, a
    DataLoader's) as "Exception ignored in ... KeyboardInterrupt" after the command's last line, or
    as a traceback in place of the line that says how to resume). Stopping takes a moment: what runs
    is closed, then the process ends at once (``run``). Left alone where SIGINT is ignored (a job
    started in the background) or handled by someone else."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return

    def first(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, first)


def _stop_as_interrupt():
    """SIGTERM (a scheduler's stop or preemption: SLURM, Kubernetes, systemd, ``kill``) ends a
    command as Ctrl-C does, saying so and how to resume, instead of a silent death. Returns the
    handler it replaced (None off the main thread, where handlers cannot be set, and in a torchrun
    rank: torchrun sends SIGTERM to the survivors when one rank dies, and an interrupt raised
    wherever a rank then is, a finalizer among others, printed a traceback; the ranks of a stopped
    ``--nproc`` job are spoken for by their launcher)."""
    from .distributed import launched

    if threading.current_thread() is not threading.main_thread() or launched():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headstart", description="Image classifiers from a few images, by transfer from pretrained CNNs.", parents=[_global_options(True)]
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _fit_command(commands)
    _model_commands(commands)
    _advise_command(commands)
    _inspect_commands(commands)
    _style_commands(commands)
    return parser


def _global_options(with_defaults: bool) -> argparse.ArgumentParser:
    """-q, --debug and --progress, taken before or after the subcommand. Only the top parser sets
    their defaults: a subcommand's parser, which parses later, would otherwise reset a flag given
    before it."""
    options = argparse.ArgumentParser(add_help=False)
    default = {} if with_defaults else {"default": argparse.SUPPRESS}
    options.add_argument("--debug", action="store_true", help="show tracebacks", **default)
    options.add_argument("-q", "--quiet", action="store_true", help="no progress, phase lines or warnings", **default)
    options.add_argument("--progress", action="store_true", help="show progress even when standard error is not a terminal", **default)
    return options


_GLOBAL_OPTIONS = _global_options(False)


def _command(commands, name: str, **options) -> argparse.ArgumentParser:
    return commands.add_parser(name, parents=[_GLOBAL_OPTIONS], **options)


def _group(commands, name: str, **options):
    """A command of commands (``style index``, ``inspect weights``); given alone, it lists them."""
    group = _command(commands, name, **options)

    def show_commands(args) -> int:
        group.print_help()
        return 0

    group.set_defaults(handler=show_commands)
    return group.add_subparsers(dest="what", metavar="WHAT")


def _fit_command(commands) -> None:
    fit = _command(commands, "fit", help="train a classifier on a labelled image folder or CSV")
    fit.add_argument("data", help="root/CLASS/img, root/SPLIT/CLASS/img, or a CSV/TSV of path,label")
    fit.add_argument("-o", "--output", required=True, help="run directory to write")
    _model_options(fit)
    fit.add_argument("--strict", action="store_true", help="fail if any image is unreadable")
    fit.add_argument("--resume", action="store_true", help="fine-tuning: continue an interrupted run from RUN/checkpoints")
    fit.add_argument("--allow-outside", action="store_true", help="let CSV paths leave the CSV's folder")
    fit.add_argument("--test-size", type=float, default=0.2, help="held-out share when no split is given (default 0.2)")
    fit.add_argument("--tensorboard", action="store_true", help="write TensorBoard logs to RUN/tensorboard (tensorboard --logdir RUN)")
    fit.add_argument("--no-diagnostics", action="store_true", help="skip the verdict, learning curve, label suspects and weight statistics")
    fit.add_argument(
        "--nproc", type=int, default=None, metavar="N",
        help="run N processes on this machine through torchrun (one per GPU; on a CPU, gloo); several machines: run torchrun yourself (see README)",
    )
    fit.add_argument("--compare-scratch", action="store_true", help="also train the small CNN from scratch and show it in the report as a reference row")
    fit.add_argument(
        "--none-of-these", action="append", metavar="PATH", default=[],
        help="a folder (or file) of images of none of the classes, such as backgrounds or other objects, repeatable: the 'unknown' score learns what they look like",
    )
    fit.set_defaults(handler=cmd_fit)


def _model_commands(commands) -> None:
    """What to do with a saved run, and the offline demo."""
    predict = _command(commands, "predict", help="classify images with a saved run")
    predict.add_argument("run", help="run directory written by fit")
    predict.add_argument("images", nargs="+", help="image files or folders; - reads one image from standard input")
    predict.add_argument("--top-k", type=_at_least_one, default=1, help="classes to show per image (default 1)")
    predict.add_argument("--format", choices=("table", "csv", "json"), default="table", help="table (default), csv or json")
    predict.add_argument(
        "--no-reject", action="store_true",
        help="always name a class; by default an image unlike every training image is answered 'unknown' (the model's calibrated threshold)",
    )
    predict.set_defaults(handler=cmd_predict)

    evaluate = _command(
        commands, "evaluate", help="accuracy of a saved run on labelled images: interval, chance, per-class recall, the worst mistakes",
    )
    evaluate.add_argument("run", help="run directory written by fit")
    evaluate.add_argument("data", help="labelled images: root/CLASS/img (all are scored), root/SPLIT/CLASS/img (test, else val), or a CSV/TSV of path,label")
    evaluate.add_argument("--format", choices=("table", "json"), default="table", help="table (default) or json (every figure, every mistake listed)")
    evaluate.add_argument("--report", default=None, metavar="DIR", help="also write DIR/report.html: confusion matrix, calibration, per-class table")
    evaluate.add_argument("--allow-outside", action="store_true", help="let CSV paths leave the CSV's folder")
    evaluate.add_argument(
        "--none-of-these", action="append", metavar="PATH", default=[],
        help="a folder (or file) of images of none of the classes, repeatable: how many the model flags as unknown",
    )
    evaluate.set_defaults(handler=cmd_evaluate)

    export = _command(commands, "export", help="write a saved run as one ONNX graph (probabilities out)")
    export.add_argument("run", help="run directory written by fit")
    export.add_argument("--format", choices=("onnx",), default="onnx", help="onnx (the only format; default)")
    export.add_argument("-o", "--output", default=None, help="graph file (default RUN/model.onnx)")
    export.set_defaults(handler=cmd_export)

    report = _command(commands, "report", help="rebuild RUN/report.html from RUN/metrics.json")
    report.add_argument("run", help="run directory written by fit")
    report.set_defaults(handler=cmd_report)

    demo = _command(commands, "demo", help="offline demo on scikit-learn's handwritten digits")
    demo.add_argument("-o", "--output", default="runs/demo", help="run directory (default runs/demo)")
    demo.add_argument("--backbone", default="mobilenet_v2", help="backbone name (default mobilenet_v2; see 'headstart backbones')")
    demo.add_argument(
        "--time-budget", type=float, default=DEMO_SECONDS, metavar="SECONDS",
        help=f"seconds the fit may take (default {DEMO_SECONDS:.0f}, a short first run; the advisor skips fine-tuning that would not fit)",
    )
    demo.set_defaults(handler=cmd_demo)

    serve = _command(
        commands, "serve", help="answer predictions over HTTP (JSON API, a page to try the model at /)",
        description="Serve saved runs: POST /v1/models/NAME/predict (an image as the body, or multipart files), GET /v1/models, "
        "/healthz, /metrics, the page at / and the API docs at /docs. Each model is named by its run directory.",
    )
    serve.add_argument("runs", nargs="+", metavar="RUN", help="run directories written by fit")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only; any other needs --token)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one and prints it)")
    serve.add_argument("--token", default=None, help="bearer token every /v1 request must carry (default: $HEADSTART_TOKEN, which other users cannot read in ps)")
    serve.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body in MB (default 20)")
    serve.add_argument("--batch-size", type=int, default=32, help="most images run through the model together (default 32)")
    serve.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits for more images while other requests are being decoded, ms (default 5)")
    serve.add_argument("--queue", type=int, default=256, help="most images waiting; past it requests are answered 429 (default 256)")
    serve.add_argument("--timeout", type=float, default=30.0, help="seconds a request may take, queueing included (default 30)")
    serve.add_argument("--max-connections", type=int, default=128, help="open connections at once; past it uvicorn answers 503 (default 128)")
    serve.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto (default): PyTorch on CUDA when present, else ONNX Runtime on the CPU")
    serve.set_defaults(handler=cmd_serve)


def _advise_command(commands) -> None:
    advise = _command(commands, "advise", help="measure a dataset and say how to transfer (what fit --strategy auto does)")
    advise.add_argument("data", help="root/CLASS/img, root/SPLIT/CLASS/img, or a CSV/TSV of path,label (its train split is measured)")
    advise.add_argument("--backbone", default="mobilenet_v2", help="backbone name (default mobilenet_v2; see 'headstart backbones')")
    advise.add_argument("--time-budget", type=float, default=None, metavar="S", help="seconds for measuring, a fine-tuning trial and the fit")
    advise.add_argument("--input-size", type=_input_size, default=None, help=INPUT_SIZE_HELP)
    advise.add_argument("--device", default="auto", help="auto, cpu or cuda")
    advise.add_argument("--seed", type=_seed, default=0, help="seed for the sample and cross-validation (a whole number, 0 or more)")
    advise.add_argument("--no-cache", action="store_true", help="measure again: do not read or write the plan and feature caches")
    advise.add_argument("--allow-outside", action="store_true", help="let CSV paths leave the CSV's folder")
    advise.add_argument("--json", action="store_true", help="print the whole plan as JSON")
    advise.set_defaults(handler=cmd_advise)


def _inspect_commands(commands) -> None:
    backbones = _command(commands, "backbones", help="list the backbones that work offline")
    backbones.set_defaults(handler=cmd_backbones)

    inspect_what = _group(commands, "inspect", help="look inside a run or a backbone")
    inspect_weights = _command(inspect_what, "weights", help="per-layer weight statistics of a run or a backbone")
    inspect_weights.add_argument("target", help="a run directory, or a backbone name (see 'headstart backbones')")
    inspect_weights.add_argument("--format", choices=("table", "json"), default="table", help="table (default) or json")
    inspect_weights.set_defaults(handler=cmd_inspect_weights)
    inspect_init = _command(inspect_what, "init", help="how each initialisation scheme draws a backbone's weights, against its formula")
    inspect_init.add_argument("--backbone", default="mobilenet_v2", help="backbone whose layers are drawn (default mobilenet_v2)")
    inspect_init.add_argument("--schemes", nargs="+", default=None, metavar="SCHEME", help="default: all (see headstart.weight_init.SCHEMES)")
    inspect_init.add_argument("--layers", type=int, default=6, help="layers shown per scheme, evenly spaced from the first to the last (default 6; 0: all)")
    inspect_init.add_argument("-o", "--output", default=None, metavar="PNG", help="also draw the first-layer filters of every scheme, pretrained included, to this PNG")
    inspect_init.add_argument("--format", choices=("table", "json"), default="table", help="table (default) or json")
    inspect_init.set_defaults(handler=cmd_inspect_init)


def _style_commands(commands) -> None:
    style_what = _group(commands, "style", help="style as Gram matrices of CNN activations: index, search, compare, evaluate")

    index = _command(style_what, "index", help="index a folder's images by style (again: only new or changed files)")
    index.add_argument("folder", help="folder of images (searched recursively)")
    index.add_argument("-o", "--output", required=True, metavar="INDEX", help="index directory to write or update")
    _style_options(index)
    index.add_argument("--sketch-dim", type=int, default=None, help="numbers kept per image (default 1024; estimate spread ~sqrt(2/dim))")
    index.add_argument("--rebuild", action="store_true", help="start afresh even if INDEX exists")
    index.set_defaults(handler=cmd_style_index)

    search = _command(style_what, "search", help="the indexed images closest in style to an image")
    search.add_argument("index", metavar="INDEX", help="index directory written by 'headstart style index'")
    search.add_argument("image", help="the image whose style is looked for")
    search.add_argument("-k", type=_at_least_one, default=5, help="how many matches (default 5)")
    search.add_argument("--rerank", type=int, default=None, help="candidates re-ranked by the exact distance (default 2k; 0: sketch estimates only)")
    search.add_argument("--format", choices=("table", "json"), default="table", help="table (default) or json")
    search.set_defaults(handler=cmd_style_search)

    compare = _command(style_what, "compare", help="style distance between two images, layer by layer")
    compare.add_argument("a", help="an image")
    compare.add_argument("b", help="the image compared with it")
    _style_options(compare)
    compare.add_argument("--format", choices=("table", "json"), default="table", help="table (default) or json (every layer's term)")
    compare.set_defaults(handler=cmd_style_compare)

    evaluate = _command(style_what, "evaluate", help="how well each backbone's Grams separate styles, on images in one folder per style")
    evaluate.add_argument("data", help="folder with one subfolder per style (or a CSV of path,style)")
    evaluate.add_argument("--backbones", nargs="+", default=None, metavar="B", help="default: vgg19 mobilenet_v2 efficientnet_lite0 vgg19@he_normal")
    evaluate.add_argument("--smooth", nargs="+", type=float, default=[1.0], metavar="T", help="smoothing temperatures scored beside raw activations (default 1)")
    evaluate.add_argument("--size", type=int, default=None, help="network input side in pixels (default 128)")
    evaluate.add_argument("--device", default="auto", help="auto, cpu or cuda")
    evaluate.add_argument("--precision", choices=PRECISION_CHOICES, default="fp32", help="arithmetic of the networks (default fp32, so that figures reproduce anywhere; auto: bf16 where native, faster)")
    evaluate.add_argument("--format", choices=("table", "json"), default="table", help="table (default) or json")
    evaluate.set_defaults(handler=cmd_style_evaluate)


def _style_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", default=None, help="default vgg19 (the original weights); any registered backbone")
    parser.add_argument("--layers", nargs="+", default=None, metavar="LAYER", help="module names (relu1_1 ... for vgg19); default: the backbone's style layers")
    parser.add_argument("--size", type=int, default=None, help="network input side in pixels (default 128)")
    parser.add_argument("--smooth", type=float, default=None, metavar="T", help="softmax-smooth activations over channels at temperature T first")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default=None, help=PRECISION_HELP)


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", default="mobilenet_v2", help="backbone name (default mobilenet_v2; see 'headstart backbones')")
    parser.add_argument("--tap", default=None, help="feature tap (default pre_logits); with backbones joined by +, one tap for all or one per backbone joined by +")
    parser.add_argument("--classifier", choices=("logistic", "svm"), default="logistic", help="the linear head: logistic regression (default) or a linear SVM")
    parser.add_argument(
        "--solver", choices=("auto", "sklearn", "minibatch"), default="auto",
        help="logistic head: scikit-learn (C by cross-validation) or mini-batches in PyTorch (thousands of classes); auto picks by size",
    )
    parser.add_argument(
        "--strategy",
        choices=("auto", "linear", "finetune_top", "finetune_all", "gradual", "scratch"),
        default="auto",
        help="auto (default): measure the data and choose (see 'headstart advise'); linear: fixed backbone + linear classifier; "
        "finetune_*/gradual fine-tune; scratch: a small CNN trained from random weights (the baseline)",
    )
    parser.add_argument("--time-budget", type=float, default=None, metavar="S", help="seconds for measuring and training; auto skips fine-tuning that would not fit")
    parser.add_argument("--epochs", type=_at_least_one, default=None, help="fine-tuning: most epochs (early stopping may end sooner)")
    parser.add_argument(
        "--augmentation", default=None, help="fine-tuning: objects (default), text_signs, overhead, none, or steps joined by commas"
    )
    parser.add_argument(
        "--set",
        dest="finetune_settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fine-tuning: any FineTuneConfig setting, e.g. --set dropout=0.3 --set pooling=stochastic (repeatable)",
    )
    parser.add_argument("--input-size", type=_input_size, default=None, help=INPUT_SIZE_HELP)
    parser.add_argument("--engine", choices=("auto", "onnx", "torch"), default="auto", help="what computes the codes: auto (default; ONNX Runtime on a CPU where exporting the graph pays for itself, else PyTorch), onnx or torch")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batch-size", type=_at_least_one, default=32, help="images per forward pass (default 32)")
    parser.add_argument("--seed", type=_seed, default=0, help="seed for splits and cross-validation (a whole number, 0 or more)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")


def _model_params(args) -> dict:
    return {
        "backbone": args.backbone,
        "tap": args.tap,
        "classifier": args.classifier,
        "solver": args.solver,
        "strategy": args.strategy,
        "finetune": _finetune_options(args),
        "time_budget": args.time_budget,
        "input_size": args.input_size,
        "engine": args.engine,
        "device": args.device,
        "batch_size": args.batch_size,
        "random_state": args.seed,
        "cache": not args.no_cache,
        "progress": args.show_progress,
    }


def _finetune_options(args) -> dict | None:
    options = dict(_parse_setting(text) for text in args.finetune_settings)
    if args.epochs is not None:
        options["epochs"] = args.epochs
    if args.augmentation is not None:
        # "objects" names a policy; "hflip,rot90" lists steps.
        steps = tuple(step.strip() for step in args.augmentation.split(","))
        options["augmentation"] = steps if len(steps) > 1 else steps[0]
    return options or None


def _whole(text: str, low: int, high: int | None = None) -> int | None:
    """``text`` as a whole number within [low, high], else None (argparse's types say why)."""
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value >= low and (high is None or value <= high) else None


def _seed(text: str) -> int:
    """A seed numpy accepts: a whole number, 0 or more (a negative one failed deep in the split)."""
    if (value := _whole(text, 0)) is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 0 or more")
    return value


def _at_least_one(text: str) -> int:
    """A count (epochs, images a batch, classes shown), refused before PyTorch loads (it took 3-4 s)."""
    if (value := _whole(text, 1)) is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def _input_size(text: str) -> int:
    """A side the backbones can read, refused before PyTorch loads (it took 4 s to say 8 px is too small)."""
    low, high = INPUT_SIZES
    if (value := _whole(text, low, high)) is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a side in pixels from {low} to {high:,}; the backbones learnt at 224-300 px (default: chosen from the images)")
    return value


def _parse_setting(text: str) -> tuple[str, object]:
    """``"dropout=0.3"`` -> ("dropout", 0.3): numbers, true/false and null as JSON, else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise HeadstartError(f"--set takes KEY=VALUE, e.g. --set dropout=0.3; got {text!r}.")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip().replace("-", "_"), parsed


# ---------------------------------------------------------------------- commands
# What each command says first (the others: their name).
_STARTING = {
    "fit": lambda a: f"fit: {a.data} into {a.output}",
    "predict": lambda a: f"predict: {len(a.images)} path(s) with {a.run}",
    "evaluate": lambda a: f"evaluate: {a.run} on {a.data}",
    "advise": lambda a: f"advise: measuring {a.data}",
    "demo": lambda a: "demo: handwritten digits",
    "export": lambda a: f"export: {a.run}",
    "report": lambda a: f"report: rebuilding {a.run}",
}


def _starting(args) -> None:
    """The command's first line, before the imports that take seconds (torch, scikit-learn): on a
    terminal, every command says what it starts within a fraction of a second."""
    if getattr(args, "what", "") is None:  # a command of commands given alone: it lists them, and loads nothing
        return
    if args.show_progress and os.environ.get("RANK", "0") == "0":
        name = f"{args.command} {args.what}" if getattr(args, "what", None) else args.command
        text = _STARTING[args.command](args) if args.command in _STARTING else name
        print(f"headstart {text} (loading PyTorch)", file=sys.stderr, flush=True)


def cmd_fit(args) -> int:
    from . import distributed

    if args.nproc is not None and not distributed.launched():
        return _launch(args)
    world = distributed.start(args.device)
    if not world.main:  # one voice: rank 0 reports, the others only fail loudly
        logging.getLogger("headstart").setLevel(logging.ERROR)
    return _fit_on_this_rank(args, world)


def _fit_on_this_rank(args, world) -> int:
    from . import distributed

    lost = False
    try:
        return _fit(args)
    except HeadstartError:
        if world.main:
            raise
        return EXIT_ERROR  # bad input fails every rank alike: rank 0 alone says why
    except RuntimeError as exc:  # a collective that failed or timed out: another rank died or hangs
        if not world.active or args.debug:
            raise
        lost = True
        print(f"error: rank {world.rank} of {world.size}: lost the other processes ({one_line(exc)[:200]}); the whole job stops.", file=sys.stderr)
        return EXIT_ERROR
    finally:
        distributed.stop(wait=not lost)


def _launch(args) -> int:
    """``headstart fit --nproc N ...``: the same command under torchrun, N processes on this machine.

    torchrun's own ``run`` is called here, as its command line does, so that a failed rank is
    said in one line (the rank said why above it) instead of torchrun's logs and failure table."""
    if args.nproc < 1:
        raise HeadstartError(f"--nproc {args.nproc}: give 1 or more processes.")
    dataset = _fit_data(args)  # refused before PyTorch loads, and found once for every process
    from .workflow import check_before_reading

    check_before_reading(dataset, args.output, _checked_fit_params(args), args.tensorboard)  # bad input said now, not after N processes start
    with tempfile.TemporaryDirectory(prefix="headstart-") as folder:
        found = Path(folder) / "found.json"
        if args.show_progress:  # a million images take seconds to write here and to read in each process
            print(f"handing the {len(dataset.records):,} images found to {args.nproc} processes", file=sys.stderr, flush=True)
        found.write_text(dataset.to_json())
        os.environ[FOUND_VARIABLE] = str(found)  # the processes torchrun starts inherit it
        try:
            return _torchrun(args, Path(folder) / "torchrun")
        finally:
            del os.environ[FOUND_VARIABLE]


def _torchrun(args, log_dir: Path) -> int:
    """torchrun's ``run`` on this command without --nproc; its log folders (one per process, empty
    unless a process fails) go in ``log_dir``, which the caller removes: left to torchrun, every
    run left a torchelastic_* tree in the temporary folder."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    argv, skip = [], False
    for token in args.argv:  # the command line without --nproc N
        if skip or token.startswith("--nproc="):
            skip = False
            continue
        if token == "--nproc":
            skip = True
            continue
        argv.append(token)
    launcher = ["--standalone", f"--nproc-per-node={args.nproc}", "-m", "headstart", *argv]
    if args.show_progress:
        print(f"starting {args.nproc} processes: torchrun {' '.join(launcher)}", file=sys.stderr)
    # Each process gets its share of the cores (torchrun would give each one thread, and print a
    # banner saying so, even under -q); a value the user set is kept.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.nproc)))
    for name in list(logging.Logger.manager.loggerDict):  # torchrun's lines repeat the rank's own; each sets its own level
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        run(parse_args(["--log-dir", str(log_dir), *launcher]))
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        if failure.exitcode == EXIT_ERROR:  # bad input, or a lost process: the rank said which in one line
            return EXIT_ERROR
        how = f"killed by signal {failure.signal_name()}" if failure.exitcode < 0 else f"exit {failure.exitcode}"
        print(f"error: {args.nproc} processes: rank {rank} failed ({how}); its output is above.", file=sys.stderr)
        return EXIT_ERROR
    except SignalException as exc:
        if exc.sigval == signal.SIGTERM:  # a scheduler stopped this launcher: its ranks died of it without a word
            print(_interrupted(args), file=sys.stderr)
        return 130  # Ctrl-C reached every rank too: rank 0 said what to do
    except KeyboardInterrupt:
        return 130
    return 0


def _checked_fit_params(args) -> dict:
    """fit's model parameters from its flags, refusing flags that contradict each other."""
    params = _model_params(args)
    if args.resume and args.strategy == "linear":
        raise HeadstartError("--resume continues a fine-tuning run; add the --strategy it was started with.")
    if params["finetune"] and args.strategy == "linear":
        raise HeadstartError("--epochs, --augmentation and --set configure fine-tuning; add --strategy finetune_top (or finetune_all, gradual).")
    return params


def _found(args, **options):
    """The images of ``args.data``, found before PyTorch loads (it takes seconds): a folder the
    command cannot use is refused in a fraction of a second. A bar shows the search of many folders."""
    from .data.dataset import load_dataset
    from .progress import shown

    with shown(args.show_progress):
        return load_dataset(args.data, allow_outside=getattr(args, "allow_outside", False), **options)


def _fit_data(args):
    """fit's images, after its output folder is checked: both before PyTorch loads. A process that
    the ``--nproc`` launcher started reads what the launcher found instead of searching again;
    under a torchrun started by hand, rank 0 searches and hands what it found to the others."""
    from . import distributed
    from ._memory import collector_paused
    from .data.dataset import Dataset
    from .persistence import check_run_output

    check_run_output(args.output)
    if FOUND_VARIABLE in os.environ:
        return Dataset.from_json(Path(os.environ[FOUND_VARIABLE]).read_text())
    # One search: N processes searching one folder cost the file system N times over, and a
    # folder that changed between their searches gave the ranks different images to share out.
    # The collector paused: a million records unpickle in 5.0 s instead of 9.9 (bench_search.py).
    with collector_paused():
        return distributed.current().from_main(lambda: _found(args, test_size=args.test_size, random_state=args.seed), patient=True)


def _interrupted(args) -> str:
    resume = "; finished epochs are checkpointed: rerun the same command with --resume to continue" if args.strategy != "linear" else ""
    return f"interrupted{resume}."


def _fit(args) -> int:
    params = _checked_fit_params(args)
    dataset = _fit_data(args)
    from .workflow import fit_folder

    try:
        _, summary = fit_folder(
            dataset, args.output, strict=args.strict,  # the dataset was found with --test-size and --allow-outside
            resume=args.resume, diagnostics=not args.no_diagnostics, tensorboard=args.tensorboard, compare_scratch=args.compare_scratch,
            none_of_these=_none_of_these(args), **params,
        )
    except KeyboardInterrupt:
        print(_interrupted(args), file=sys.stderr)
        return 130
    if summary is None:  # a rank other than 0: rank 0 writes and reports
        return 0
    print(summary)
    return 0  # the model is saved; skipped files are named in the summary (--strict fails on them instead)


def _read_runs(*runs) -> list[dict]:
    """Each run folder's model.json, read before PyTorch loads: a path that is no run is said in a
    fraction of a second (the weights are read, and checked, where the model is loaded)."""
    from .persistence import read_meta

    return [read_meta(Path(run).expanduser()) for run in runs]


# Images predicted, printed and let go at a time: a folder of 100,000 streams its rows as they come,
# in bounded memory (20,000 at once peaked at 1.5 GB and printed nothing until the end), and an
# interrupted run keeps what it printed. Each chunk costs one pipeline drain, about one batch.
PREDICT_CHUNK = 2048


def cmd_predict(args) -> int:
    _read_runs(args.run)
    with tempfile.TemporaryDirectory(prefix="headstart-stdin-") as folder:
        piped = Path(folder) / "stdin"
        images = _expand_images(args.images, stdin_to=piped)  # missing files said before PyTorch loads too
        from . import progress
        from .estimator import TransferClassifier
        from .workflow import predict_images

        model = TransferClassifier.load(args.run)
        names = ["-" if image == piped else str(image) for image in images]
        writer = PredictionWriter(args.format, len(model.classes_), width=max(map(len, names), default=4))
        failed = False
        chunked = len(images) > PREDICT_CHUNK
        model.progress = False if chunked else args.show_progress  # one bar over every chunk, or the pass's own
        with progress.shown(args.show_progress):
            done = progress.bar(total=len(images), desc="predicting", unit="img") if chunked else None
            for start in range(0, len(images), PREDICT_CHUNK):
                rows = predict_images(model, images[start : start + PREDICT_CHUNK], top_k=args.top_k, reject=None if args.no_reject else "auto")
                for row, name in zip(rows, names[start:]):
                    row["path"] = name
                writer.write(rows)
                failed |= any("error" in row for row in rows)
                if done is not None:
                    done.update(len(rows))
            if done is not None:
                done.close()
        writer.close()
    return EXIT_PARTIAL if failed else 0


def cmd_evaluate(args) -> int:
    from .data.dataset import check_labels_known

    (meta,) = _read_runs(args.run)
    if args.report:
        _check_report_folder(Path(args.report).expanduser())
    dataset = _found(args, split=False)
    check_labels_known(dataset, meta["classes"])  # before PyTorch loads, as the rest
    from .estimator import TransferClassifier
    from .workflow import evaluate_folder

    model = TransferClassifier.load(args.run)
    model.progress = args.show_progress
    evaluation = evaluate_folder(model, dataset, none_of_these=_none_of_these(args))
    report = _write_evaluation_report(model, evaluation, args) if args.report else None
    if args.format == "json":
        from dataclasses import asdict

        print(json.dumps(asdict(evaluation), indent=2))
    else:
        print(format_evaluation_command(evaluation, args, report))
    return 0


def _check_report_folder(folder: Path) -> None:
    """evaluate --report writes FOLDER/report.html: refused before any work where FOLDER holds other
    files, as fit's -o is. Given the run itself, it replaced the fit's own report; given the images'
    folder, it wrote among them."""
    from ._text import shortened
    from .persistence import REPORT_FILE

    if folder.exists() and not folder.is_dir():
        raise HeadstartError(f"--report {folder} is a file; give a folder for the evaluation's {REPORT_FILE}.")
    other = sorted(entry.name for entry in folder.iterdir() if entry.name != REPORT_FILE and not entry.name.startswith(".")) if folder.is_dir() else []
    if other:
        raise HeadstartError(f"--report {folder} holds other files ({shortened(other, 3)}); the evaluation's {REPORT_FILE} goes in a folder of its own: give a new or empty one, e.g. {folder}-eval.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HeadstartError(f"cannot write the evaluation report to {folder} ({exc.strerror or exc}); give a folder you can write to.") from None


def _write_evaluation_report(model, evaluation, args) -> Path:
    from dataclasses import asdict

    from ._atomic import write_text
    from ._json import as_json
    from .persistence import REPORT_FILE
    from .report import render_report

    metrics = {
        "kind": "evaluation", "run": str(args.run), "data": str(args.data), "backbone": model.backbone_, "classes": [str(c) for c in model.classes_], "evaluation": asdict(evaluation),
        "diagnostics": {"errors": evaluation.analysis},
    }
    target = Path(args.report).expanduser() / REPORT_FILE
    write_text(target, render_report(as_json(metrics)))
    return target


def format_evaluation_command(ev, args, report: Path | None) -> str:
    """What `headstart evaluate` prints: the figures, every class's recall, the worst mistakes."""
    from .summary import format_evaluation

    scored = "all images" if ev.split == "pool" else f"its {ev.split} split"
    unreadable = f"; {len(ev.unreadable)} unreadable skipped" if ev.unreadable else ""
    masks = f"; {ev.masks} segmentation mask(s) passed over" if ev.masks else ""
    lines = [f"headstart evaluate: {args.run} on {args.data} ({scored}, {ev.n_images} images{masks}{unreadable})", format_evaluation(ev, indent="  ", all_classes=True)]
    if ev.mistakes:
        width, label_width = max(len(m["path"]) for m in ev.mistakes), max(len("label"), *(len(str(m["label"])) for m in ev.mistakes))
        wrong = ev.n_images - round(ev.accuracy * ev.n_images)
        shown = f"; the {len(ev.mistakes)} most confident" if wrong > len(ev.mistakes) else ", most confident first"
        lines.append(f"  mistakes    {wrong}{shown}:")
        lines.append(f"              {'path':<{width}}  {'label':<{label_width}}  predicted (probability)")
        lines.extend(f"              {m['path']:<{width}}  {str(m['label']):<{label_width}}  {m['predicted']} ({m['probability']:.0%})" for m in ev.mistakes)
    else:
        lines.append("  mistakes    none")
    for item in ev.unreadable[:10]:
        lines.append(f"  skipped     {item['path']}: {item['reason']}")
    if report is not None:
        lines.append(f"  report      {report}")
    return "\n".join(lines)


def _held_out_words(dataset) -> str:
    """What advise leaves out, as fit does: 10 images in class folders were "4 images per class"
    with no word of the 2 held out for testing."""
    held = [f"{len(dataset.split(name))} {name}" for name in dataset.splits if name != "train"]
    return f" (training images only: the {' and '.join(held)} images are held out, as fit holds them out)" if held else ""


def cmd_advise(args) -> int:
    dataset = _found(args, random_state=args.seed)
    from .estimator import TransferClassifier
    from .progress import announce, shown

    train = dataset.split("train")
    with shown(args.show_progress):
        announce(f"found {len(train)} training images of {len(dataset.classes)} classes in {args.data}")
        model = TransferClassifier(
            args.backbone, time_budget=args.time_budget, input_size=args.input_size, device=args.device, cache=not args.no_cache, random_state=args.seed
        )
        plan = model.advise([r.path for r in train], [r.label for r in train])
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
        return 0
    m = plan.measurements
    how = "plan reused from the cache (same images, labels and settings; --no-cache measures again)" if plan.from_cache else f"{m.n_measured} images measured in {plan.seconds:.1f} s"
    print(f"headstart advise: {args.data}, backbone {args.backbone} at {plan.input_size} px, {how}{_held_out_words(dataset)}")
    print(plan)
    return 0


def cmd_demo(args) -> int:
    from .demo import write_digits_folder
    from .recipe import check_time_budget
    from .workflow import fit_folder

    check_time_budget(args.time_budget)  # before anything is written or announced
    output = Path(args.output)
    images = write_digits_folder(output.parent / f"{output.name}-images")
    print(f"Wrote scikit-learn's handwritten digits to {images} (15 training images per class).")
    print(f"Fitting within a {args.time_budget:.0f} s time budget (--time-budget): fine-tuning that would not fit in it is skipped.")
    _, summary = fit_folder(images, output, backbone=args.backbone, time_budget=args.time_budget, progress=args.show_progress)
    print(summary)
    print(
        "\nNext, with your own images: put them in one folder per class (like "
        f"{images}/train/<class>/), then\n"
        "  headstart fit PATH/TO/IMAGES -o runs/mine    # no time budget: auto fine-tunes where its trial says so\n"
        "  headstart predict runs/mine NEW_IMAGE.jpg --top-k 3\n"
        "  headstart serve runs/mine                    # a page to try it at http://127.0.0.1:8000/, and a JSON API"
    )
    return 0


def cmd_serve(args) -> int:
    _read_runs(*args.runs)
    from .serve import Settings, check_exposure, load_runs, serve
    from .serve.app import MB
    from .serve.server import TOKEN_VARIABLE, bind

    token = args.token or os.environ.get(TOKEN_VARIABLE) or None
    check_exposure(args.host, token)
    if args.max_connections < 1:  # the other values are checked by Settings
        raise HeadstartError(f"--max-connections must be at least 1, got {args.max_connections}.")
    if not 0 <= args.port <= 65535:
        raise HeadstartError(f"--port must be 0 to 65535 (0 picks a free one), got {args.port}.")
    settings = Settings(
        token=token, max_upload=int(args.max_upload_mb * MB), timeout=args.timeout, max_batch=args.batch_size,
        max_wait=args.max_wait_ms / 1000, max_queue=args.queue, device=args.device,
        max_images=max(1, min(Settings.max_images, args.queue)),  # a request the queue could never hold is refused as too large
    )
    from .progress import shown

    sock = bind(args.host, args.port)
    with shown(args.show_progress):
        models = load_runs(args.runs, args.device)
    serve(models, settings, sock, quiet=args.quiet, max_connections=args.max_connections)
    return 0


def cmd_export(args) -> int:
    _read_runs(args.run)
    from .estimator import TransferClassifier
    from .export import export_onnx

    model = TransferClassifier.load(args.run)
    path = export_onnx(model, args.output or Path(args.run) / "model.onnx")
    print(f"wrote {path} and {path}.json (input preparation and labels); checked against PyTorch")
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    print(f"wrote {write_report(args.run)}")
    return 0


def cmd_inspect_weights(args) -> int:
    target = Path(args.target)
    a_run = target.is_dir()
    if a_run:
        _read_runs(target)
    from .diagnostics import model_weight_report, weight_report

    if a_run:
        from .estimator import TransferClassifier

        report = model_weight_report(TransferClassifier.load(target))
    else:
        from .backbones import get_backbone
        from .errors import BackboneError

        try:
            spec = get_backbone(args.target)
        except BackboneError as exc:
            if os.sep not in args.target:
                raise
            raise BackboneError(f"no run directory {target}, and {exc}") from None  # a path, mistyped
        report = weight_report(spec.build())
    if args.format == "json":
        print(json.dumps({"layers": report["layers"], "notes": report["notes"]}, indent=2))
    else:
        print(format_weights(report))
    return 0


def cmd_inspect_init(args) -> int:
    from .backbones import get_backbone
    from .weight_init import SCHEMES, check_scheme, first_filters, init_table

    schemes = tuple(args.schemes or SCHEMES)
    for scheme in schemes:
        check_scheme(scheme)
    network = get_backbone(args.backbone).build()
    tables = {scheme: init_table(network, scheme) for scheme in schemes}
    if args.output:
        from .report.plots import filters_by_scheme_plot, save_data_uri

        uri = filters_by_scheme_plot(first_filters(network, ("pretrained", *[s for s in schemes if s != "pretrained"])))
        if uri is None:
            raise HeadstartError(f"{args.backbone} has no 2-D convolution to draw.")
        save_data_uri(uri, args.output)
    if args.format == "json":
        print(json.dumps(tables, indent=2))
    else:
        print(format_init_tables(tables, args.layers))
        if args.output:
            print(f"first-layer filters: {args.output}")
    return 0


def _style_settings(args, base=None):
    """StyleSettings from the options given, on top of ``base`` (an existing index's settings)."""
    from dataclasses import replace

    from .style import StyleSettings

    given = {
        "backbone": args.backbone,
        "layers": tuple(args.layers) if args.layers else None,
        "input_size": args.size,
        "temperature": args.smooth,
        "sketch_dim": getattr(args, "sketch_dim", None),
        "precision": args.precision,
    }
    given = {k: v for k, v in given.items() if v is not None}
    base = base or StyleSettings()
    changed = [k for k, v in given.items() if getattr(base, k) != v]
    return replace(base, **given), changed


def cmd_style_index(args) -> int:
    from .style.index import writing_lock

    with writing_lock(args.output):
        return _style_index(args)


def _style_index(args) -> int:
    from ._atomic import check_replaceable
    from .style import StyleIndex
    from .style.index import INDEX_JSON, SKETCH_FILE

    output = Path(args.output)
    check_replaceable(output, (INDEX_JSON, SKETCH_FILE), "style index")  # saving replaces the folder as a whole
    is_index = (output / INDEX_JSON).is_file()
    if is_index and not args.rebuild:
        index = StyleIndex.load(output)
        settings, changed = _style_settings(args, index.settings)
        if changed:
            raise HeadstartError(f"{output} was indexed with other {', '.join(changed)}; add --rebuild to start afresh, or write to another -o.")
        if index.root != Path(args.folder).resolve():
            raise HeadstartError(f"{output} indexes {index.root}, not {args.folder}; add --rebuild to start afresh, or write to another -o.")
        report = index.update(progress=args.show_progress, checkpoint=lambda partial: partial.save(output))
    else:
        settings, _ = _style_settings(args)
        # Saved as it goes: an interrupted first indexing resumes from the last checkpoint.
        index, report = StyleIndex.build(args.folder, settings, progress=args.show_progress, checkpoint=lambda partial: partial.save(output))
    index.save(output)
    print(f"{output}: {len(index)} image{'' if len(index) == 1 else 's'} ({report.summary()})")
    for path, why in report.skipped[:10]:
        print(f"  skipped {path}: {why}")
    return EXIT_PARTIAL if any(why.startswith("unreadable") for _, why in report.skipped) else 0


def cmd_style_search(args) -> int:
    from .style import StyleIndex

    index = StyleIndex.load(args.index)
    matches = index.search(args.image, args.k, rerank=args.rerank)
    if args.format == "json":
        print(json.dumps([{"path": str(m.path), "distance": m.distance, "exact": m.exact, "note": m.note} for m in matches], indent=2))
        return 0
    print(format_style_matches(matches, args.index))
    return 0


# One description of the style distance, wherever it is printed (README and docs/style.md say the same).
STYLE_DISTANCE = "style distance: the mean over layers of ||G(a) - G(b)||^2 (squared Frobenius norm; Gram G = F F^T / (channels x positions))"


def format_style_matches(matches, index) -> str:
    """Rank, distance as a multiple of the nearest match's (1.00: as close as the best; 0.00: the same
    image), the distance, the path."""
    if not matches:
        return f"no indexed image in {index} could be compared"
    nearest = next((m.distance for m in matches if m.distance > 0), 1.0)
    lines = [f"{STYLE_DISTANCE}; closest first", f"{'rank':>4}  {'x nearest':>9}  {'distance':>10}  path"]
    for rank, m in enumerate(matches, start=1):
        kind = "  (estimate)" if not m.exact else ""
        note = f"  [{m.note}]" if m.note else ""
        lines.append(f"{rank:>4}  {m.distance / nearest:>9.2f}  {m.distance:>10.3g}  {m.path}{kind}{note}")
    return "\n".join(lines)


def cmd_style_compare(args) -> int:
    from .style import style_compare

    settings, _ = _style_settings(args)
    total, per_layer = style_compare(args.a, args.b, settings)
    if args.format == "json":
        print(json.dumps({"distance": total, "layers": dict(per_layer), "backbone": settings.backbone}, indent=2))
        return 0
    print(format_style_comparison(total, per_layer, settings.backbone))
    return 0


def format_style_comparison(total: float, per_layer: list, backbone: str) -> str:
    """The distance, then each layer's term and its share of the sum: which layers decide it."""
    terms = sum(d for _, d in per_layer) or 1e-300
    lines = [f"{STYLE_DISTANCE}, on {backbone}: {total:.4g}", f"  {'layer':<24} {'term':>10} {'share':>7}"]
    lines.extend(f"  {layer:<24} {d:>10.3g} {d / terms:>7.1%}" for layer, d in per_layer)
    top_layer, top = max(per_layer, key=lambda item: item[1])
    if len(per_layer) > 1 and top / terms > 0.9:
        lines.append(f"  {top_layer} decides {top / terms:.0%} of the distance; to hear the other layers, leave it out with --layers")
    return "\n".join(lines)


def cmd_style_evaluate(args) -> int:
    dataset = _found(args)
    from .style import evaluate_style
    from .style.descriptors import DEFAULT_STYLE_SIZE
    from .style.evaluate import DEFAULT_EVALUATE_BACKBONES, format_table

    images, labels = [r.path for r in dataset.records], [r.label for r in dataset.records]
    rows = evaluate_style(
        images, labels, backbones=args.backbones or DEFAULT_EVALUATE_BACKBONES, temperatures=(None, *args.smooth),
        input_size=args.size or DEFAULT_STYLE_SIZE, device=args.device, precision=args.precision, progress=args.show_progress,
    )
    if args.format == "json":
        print(json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        print(f"{len(images)} images in {len(set(labels))} styles")
        print(format_table(rows))
    return 0


def cmd_backbones(args) -> int:
    from .backbones import get_backbone, list_backbones

    rows = []
    for name in list_backbones():
        spec = get_backbone(name)
        sizes = f"{spec.preprocessing.crop}px" + (f" ({spec.test_crop}px on images that carry it)" if spec.test_crop else "")
        rows.append((name, sizes, f"taps: {len(spec.taps)}", spec.source))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths)) + f"  {row[3]}")
    print("Any torchvision or timm model name also works where its weights can be downloaded or are cached.")
    return 0


# ---------------------------------------------------------------------- output


def format_init_tables(tables: dict[str, list[dict]], layers: int) -> str:
    """Per scheme: the theoretical bound and std next to the observed min, max and std."""
    lines = []
    for scheme, rows in tables.items():
        if layers and len(rows) > layers:
            rows = [rows[round(i * (len(rows) - 1) / (layers - 1))] for i in range(layers)] if layers > 1 else rows[:1]
        lines.append(f"{scheme}")
        lines.append(f"  {'layer':<28} {'shape':>14} {'fan_in':>6} {'bound':>8} {'min':>8} {'max':>8} {'std':>8} {'expected':>8}")
        for r in rows:
            bound = f"{r['bound']:8.4f}" if r["bound"] is not None else f"{'-':>8}"
            want = f"{r['expected_std']:8.4f}" if r["expected_std"] is not None else f"{'-':>8}"
            shape = "x".join(map(str, r["shape"]))
            lines.append(f"  {r['layer'][:28]:<28} {shape:>14} {r['fan_in']:>6} {bound} {r['min']:8.4f} {r['max']:8.4f} {r['std']:8.4f} {want}")
    return "\n".join(lines)


def format_weights(report: dict) -> str:
    """The weight table: one row per layer (pretrained, or trained where the layer was trained)."""
    drift = any("drift" in row for row in report["layers"])
    header = f"{'layer':<34} {'shape':>16} {'mean':>8} {'std':>7} {'min':>7} {'max':>7} {'skew':>6} {'kurt':>6} normal  {'rand std':>8}"
    lines = [header + ("   drift" if drift else "")]
    for row in report["layers"]:
        s = row.get("trained") or row["pretrained"]
        shape = "x".join(map(str, row["shape"]))
        random_std = f"{row['random']['std']:8.4f}" if "random" in row else " " * 8
        line = (
            f"{row['layer'][:34]:<34} {shape:>16} {s['mean']:8.4f} {s['std']:7.4f} {s['min']:7.3f} {s['max']:7.3f} "
            f"{s['skewness']:6.2f} {s['excess_kurtosis']:6.2f} {'yes' if s['normal'] else 'no':<6}  {random_std}"
        )
        lines.append(line + (f"  {row['drift']:6.2%}" if "drift" in row else ""))
    lines.extend(f"- {note}" for note in report["notes"])
    return "\n".join(lines)


class PredictionWriter:
    """predict's rows in one format, printed as they come, chunk by chunk: a CSV's header once, a
    table's columns as wide as the longest path of every image, one JSON array."""

    def __init__(self, fmt: str, n_classes: int | None = None, *, width: int = 4, out=None):
        self.fmt, self.n_classes, self.width, self.out = fmt, n_classes, width, out or sys.stdout
        self.started = False

    def write(self, rows: list[dict]) -> None:
        if self.fmt == "json":  # json.dumps(all_rows, indent=2), a chunk at a time
            if rows:
                items = ",\n".join(textwrap.indent(json.dumps(row, indent=2), "  ") for row in rows)
                self.out.write((",\n" if self.started else "[\n") + items)
                self.started = True
        else:
            header = "" if self.started else self._header() + "\n"
            self.out.write(header + "".join(self._text(row) for row in rows))
            self.started = True
        self.out.flush()

    def close(self) -> None:
        if self.fmt == "json":
            self.out.write("\n]\n" if self.started else "[]\n")
        elif not self.started:
            self.out.write(self._header() + "\n")
        self.out.flush()

    def _header(self) -> str:
        if self.fmt == "csv":
            return "path,rank,label,probability,error,unknown,novelty,threshold"
        return f"{'path':<{self.width}}  prediction (probability)"

    def _text(self, row: dict) -> str:
        """The row's lines, each ending in a newline (a CSV field may hold one of its own)."""
        if self.fmt == "csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            novelty = [row.get("unknown", ""), row.get("novelty", ""), row.get("threshold", "")]
            if "error" in row:
                writer.writerow([row["path"], "", "", "", row["error"], "", "", ""])
            for rank, p in enumerate(row["predictions"], start=1):
                writer.writerow([row["path"], rank, p["label"], p["probability"], "", *novelty])
            return buffer.getvalue()
        shown = row.get("error") or "  ".join(f"{p['label']} ({p['probability']:.1%})" for p in row["predictions"])
        if row.get("unknown"):
            kinds = f"the {self.n_classes} classes" if self.n_classes else "the classes"
            shown = f"unknown: looks like none of {kinds} (score {row['novelty']:#.3g}, threshold {row['threshold']:#.3g}); nearest: {shown}"
        return f"{row['path']:<{self.width}}  {shown}\n"


# ---------------------------------------------------------------------- helpers
def _expand_images(items: list[str], stdin_to: Path | None = None) -> list[Path]:
    """Files as given; folders searched recursively for files that look like images, or are named
    as images and cannot be read (an empty .jpg is reported as unreadable, not passed over), but
    not segmentation masks beside their images (as fit and evaluate pass them over). With
    ``stdin_to``, "-" is the image piped in, saved there so that it is read as a file would be.
    A pattern no shell expanded (quoted, or Windows' cmd) is expanded here, as a folder's files are."""
    import glob

    from .data.dataset import archive_refusal, classify_file, files_under, is_archive, is_raw_photo, kinds_of, masks_beside_their_images
    from .summary import kinds_in_words

    paths: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if "://" in item:  # before patterns: a URL's query ('?size=large') reads as one
            raise HeadstartError(f"{item} is a URL: headstart reads local files only (it works offline); download it first and give its path, or pipe it in as '-'.")
        if not path.exists() and glob.has_magic(item):
            matched = [Path(p) for p in sorted(glob.glob(str(path), recursive=True))]
            if not matched:
                raise HeadstartError(f"{item} matches no files; give image files, folders of images, or a pattern that matches some.")
            paths += _expand_images([str(p) for p in matched if p.is_dir() or classify_file(p) != "not an image"])
            continue
        if item == "-" and stdin_to is not None:
            stdin_to.write_bytes(sys.stdin.buffer.read())
            paths.append(stdin_to)
        elif path.is_dir():
            reasons = {p: classify_file(p) for p in files_under(path)}
            masks = masks_beside_their_images([p for p, why in reasons.items() if why is None])
            if masks:
                log.warning("passed over %d segmentation mask(s) beside their images in %s", len(masks), path)
            others = [p for p, why in reasons.items() if why == "not an image"]
            if others:  # as fit counts them: a camera's raw files among the photos are not left unsaid
                log.warning("passed over %d non-image file(s) in %s%s", len(others), path, kinds_in_words(kinds_of(others)))
            paths += [p for p, why in reasons.items() if why != "not an image" and p not in masks]
        elif path.is_file() and is_raw_photo(path):  # as a folder's are: said and passed over, not an "unreadable" row
            log.warning("passed over %s: a camera's raw file; export it as JPEG, or read it with rawpy and pass the arrays to TransferClassifier", path)
        elif path.is_file() and classify_file(path) is not None and is_archive(path):  # a download not yet unpacked: not an "unreadable" row
            raise HeadstartError(archive_refusal(path))
        elif path.exists():
            paths.append(path)
        else:
            raise HeadstartError(f"{path} does not exist; give image files or folders of images.")
    if not paths:
        raise HeadstartError(f"no images found in {', '.join(items)}.")
    return paths


def _none_of_these(args) -> list[Path]:
    """The images ``--none-of-these`` names (none when it is not given)."""
    return _expand_images(args.none_of_these) if args.none_of_these else []


class _LowercaseLevelFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def _configure_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LowercaseLevelFormatter())
    # A warning the fit's summary prints (its WARNING line) is not also logged in the middle of the run.
    handler.addFilter(lambda record: not getattr(record, SHOWN_IN_SUMMARY, False))
    root = logging.getLogger("headstart")
    root.handlers[:] = [handler]
    root.setLevel(logging.ERROR if quiet else logging.WARNING)
    root.propagate = False


if __name__ == "__main__":
    sys.exit(main())

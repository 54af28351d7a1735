"""`videogemma infer`, `videogemma infer-batch` and `videogemma demo`.

videogemma infer VIDEO [--model tiny|DIR|RUN_DIR | --lm DIR --clip DIR --videomamba FILE]
                 [--prompt TEXT] [--system TEXT] [--stream] [--max-new-tokens N]
                 [--do-sample --temperature T --top-p P --top-k K --seed S]
videogemma infer-batch --data SPLIT.json|VIDEO_DIR --out predictions.jsonl [--batch-size N]
                 [--num-workers N] [--resume [--retry-errors] | --overwrite] [model and decoding options]

Every option is checked, and `--out` locked and checked against what it holds, before the model loads; a
refusal is one line on stderr (exit 2) and leaves every file as it was.
videogemma demo [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from videogemma.constants import (
    ATTN_IMPLEMENTATIONS,
    DEFAULT_INT4_ACTIVATIONS,
    INT4_ACTIVATION_CHOICES,
    PRESET_NAMES,
    QUANTIZE_CHOICES,
)
from videogemma.precision import DTYPE_CHOICES

PER_LAYER_CHOICES = {"auto": None, "disk": True, "memory": False}


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default=None,
        help="a preset (tiny, e2b: random weights), a saved model folder, or a training run folder "
        "(default: tiny)",
    )
    group.add_argument("--lm", help="Gemma-3n folder (with --clip and --videomamba, instead of --model)")
    group.add_argument("--clip", help="CLIP folder (openai/clip-vit-base-patch16 layout)")
    group.add_argument("--videomamba", help="original VideoMamba .pth checkpoint")
    group.add_argument(
        "--dtype",
        choices=DTYPE_CHOICES,
        default="auto",
        help="auto: bfloat16 where the device computes it natively (CUDA with bf16, CPUs with AVX512-BF16 or "
        "AMX), else float32",
    )
    group.add_argument(
        "--device", default="auto", help="auto (cuda when available, else cpu), cpu, cuda:1, ..."
    )
    group.add_argument(
        "--attn-implementation", choices=ATTN_IMPLEMENTATIONS, default=None, help="Gemma-3n's attention"
    )
    add_on_device_arguments(group)


def add_on_device_arguments(group: argparse._ArgumentGroup) -> None:
    """The CPU / edge options of a command that loads a model: quantisation, the per-layer table, the compile."""
    group.add_argument(
        "--quantize",
        choices=QUANTIZE_CHOICES,
        default=None,
        help="weight-only quantisation of the text decoder's linear layers (a saved quantised model is "
        "loaded quantised without it)",
    )
    group.add_argument(
        "--quantize-lm-head", action="store_true", help="with --quantize: the (untied) LM head too"
    )
    group.add_argument(
        "--int4-activations",
        choices=INT4_ACTIVATION_CHOICES,
        default=DEFAULT_INT4_ACTIVATIONS,
        help="an int4 decoder's decode steps on the CPU: int8 = each layer's input rounded to int8 per group of "
        "128 (faster where the CPU has AVX512-VNNI; cost measured in docs/ONDEVICE.md), exact = as it is",
    )
    group.add_argument(
        "--per-layer-embeddings",
        choices=PER_LAYER_CHOICES,
        default="auto",
        help="Gemma-3n's per-layer embedding table (4 GiB at E2B): disk = memory-mapped from the "
        "safetensors file, rows read on use; auto: disk on the CPU when the weights are safetensors",
    )
    group.add_argument(
        "--compile-prefill",
        action="store_true",
        help="CPU: compile the decoder layers for a prompt's prefill (torch.compile; needs a C++ compiler; "
        "the first prompt pays the compile, later prompts' prefill runs ~1.7-2.3x faster at E2B)",
    )


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("decoding (greedy unless --do-sample)")
    group.add_argument("--max-new-tokens", type=int, default=128)
    group.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    group.add_argument("--temperature", type=float, default=1.0)
    group.add_argument("--top-p", type=float, default=1.0)
    group.add_argument("--top-k", type=int, default=50)
    group.add_argument("--seed", type=int, default=None, help="seed of the sampler")


def register(subparsers: argparse._SubParsersAction) -> None:
    infer = subparsers.add_parser(
        "infer", help="answer a question about one video", description="Answer a question about one video."
    )
    infer.add_argument("video", type=Path, help="video file")
    infer.add_argument("--prompt", default=None, help="the question (default: QVED's form-evaluation prompt)")
    infer.add_argument("--system", default=None, help="system text (folded into the first user turn)")
    output = infer.add_mutually_exclusive_group()
    output.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    output.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (answer, model, tokens, timings) instead of the text and the timing line",
    )
    add_model_arguments(infer)
    add_generation_arguments(infer)
    infer.set_defaults(func=run_infer)

    batch = subparsers.add_parser(
        "infer-batch",
        help="answer every sample of a split file or a folder of videos into prediction records",
        description="Batched generation over a conversation split file or a folder of videos. Writes one "
        "JSON Lines record per sample as it finishes, then JSON and CSV exports and throughput statistics.",
    )
    batch.add_argument("--data", type=Path, required=True, help="split file (.json / .jsonl) or video folder")
    batch.add_argument("--out", type=Path, required=True, help="prediction file to write (.jsonl)")
    batch.add_argument(
        "--dataset-root", type=Path, default=None, help="videos' root (default: split's folder)"
    )
    batch.add_argument("--batch-size", type=int, default=4)
    batch.add_argument(
        "--num-workers", type=int, default=1, help="processes decoding videos ahead of the model"
    )
    batch.add_argument("--resume", action="store_true", help="keep --out and skip the samples it holds")
    batch.add_argument("--retry-errors", action="store_true", help="with --resume, redo the failed samples")
    batch.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an --out (and its exports) that holds earlier results",
    )
    batch.add_argument("--prompt", default=None, help="question for a video folder (default: QVED's prompt)")
    batch.add_argument("--system", default=None, help="system text (folded into the first user turn)")
    add_model_arguments(batch)
    add_generation_arguments(batch)
    batch.set_defaults(func=run_infer_batch)


def check_model_arguments(args: argparse.Namespace) -> None:
    """Refuse a `--model` / component path that does not exist before anything else happens."""
    if args.model is not None and args.model not in PRESET_NAMES and not Path(args.model).exists():
        raise FileNotFoundError(
            f"--model {args.model}: no such folder, and not a preset ({', '.join(sorted(PRESET_NAMES))})"
        )
    for option in ("lm", "clip", "videomamba"):
        value = getattr(args, option)
        # A component may also be a Hub id (used where a network exists); a path-like value must exist.
        if value and (Path(value).is_absolute() or value.startswith(".")) and not Path(value).exists():
            raise FileNotFoundError(f"--{option} {value}: no such file or folder")


def on_device_options(args: argparse.Namespace) -> dict[str, Any]:
    """`load`'s keyword arguments for the options of `add_on_device_arguments`."""
    return {
        "quantize": args.quantize,
        "quantize_lm_head": args.quantize_lm_head,
        "int4_activations": args.int4_activations,
        "per_layer_on_disk": PER_LAYER_CHOICES[args.per_layer_embeddings],
        "compile_prefill": args.compile_prefill,
    }


def load_from_args(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """(model, processor, model name) from the model options."""
    from videogemma.loading import load

    options = {
        "dtype": args.dtype,
        "device": args.device,
        "attn_implementation": args.attn_implementation,
        **on_device_options(args),
    }
    if args.lm or args.clip or args.videomamba:
        model, processor = load(args.model, lm=args.lm, clip=args.clip, videomamba=args.videomamba, **options)
        return model, processor, f"components(lm={args.lm})"
    name = args.model or "tiny"
    model, processor = load(name, **options)
    if not Path(name).exists():
        print(
            f"note: preset {name!r} has random weights; pass a trained model or run folder", file=sys.stderr
        )
    return model, processor, str(name)


def settings_from_args(args: argparse.Namespace) -> Any:
    from videogemma.inference.generate import GenerationSettings

    return GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        do_sample=args.do_sample,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
    )


def _refuse(command: str, error: Exception) -> int:
    print(f"videogemma {command}: error: {error}", file=sys.stderr)
    return 2


def run_infer(args: argparse.Namespace) -> int:
    # The cheap checks come first, before torch and transformers are even imported (seconds) and the model
    # loads (more): a mistyped video or model path fails at once.
    try:
        if not args.video.is_file():
            from videogemma.errors import VideoDecodeError

            raise VideoDecodeError(args.video, "no such file" if not args.video.exists() else "not a file")
        check_model_arguments(args)
        settings = settings_from_args(args)
        from videogemma.inference.generate import check_device

        check_device(args.device)
        model, processor, model_name = load_from_args(args)
    except (ValueError, FileNotFoundError) as error:  # VideoGemmaDataError, TrainConfigError: bad input
        return _refuse("infer", error)
    from videogemma.console import plain_warnings

    with plain_warnings("videogemma infer"):  # e.g. a model whose projectors were never trained
        return _answer_and_print(args, model, processor, model_name, settings)


def _answer_and_print(
    args: argparse.Namespace, model: Any, processor: Any, model_name: str, settings: Any
) -> int:
    import json

    from transformers import TextStreamer

    from videogemma.errors import VideoGemmaDataError
    from videogemma.inference.generate import answer

    streamer = (
        TextStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True) if args.stream else None
    )
    try:
        result = answer(
            model,
            processor,
            args.video,
            args.prompt,
            system=args.system,
            settings=settings,
            streamer=streamer,
        )
    except VideoGemmaDataError as error:
        return _refuse("infer", error)
    if args.json:
        record = {
            "video": str(args.video),
            "model": model_name,
            "prompt": args.prompt if args.prompt is not None else processor.default_prompt,
            "answer": result.text,
            "error": result.error,
            "generated_tokens": result.generated_tokens,
            "generation_time_s": round(result.generation_time, 4),
            "time_to_first_token_s": _rounded(result.time_to_first_token),
            "tokens_per_second": _rounded(result.tokens_per_second),
        }
        print(json.dumps(record, ensure_ascii=False))
        return 0 if result.error is None else 1
    if result.error is not None:
        print(f"videogemma infer: error: {args.video}: {result.error}", file=sys.stderr)
        return 1
    if not args.stream:
        print(result.text)
    rate = result.tokens_per_second or 0.0
    first = result.time_to_first_token or 0.0
    print(
        f"[{result.generated_tokens} tokens in {result.generation_time:.2f} s, {rate:.1f} tokens/s, "
        f"first token after {first:.2f} s]",
        file=sys.stderr,
    )
    return 0


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def run_infer_batch(args: argparse.Namespace) -> int:
    from videogemma.console import plain_warnings
    from videogemma.inference.batch import check_batch_arguments, list_samples, run_batch_inference
    from videogemma.inference.generate import check_device
    from videogemma.inference.output import PredictionOutput

    # Options first, then the input, then the output (locked, checked): all before the model loads.
    try:
        settings = settings_from_args(args)
        check_batch_arguments(args.batch_size, args.num_workers)
        check_device(args.device)
        check_model_arguments(args)
        samples = list_samples(args.data, dataset_root=args.dataset_root, prompt=args.prompt)
        output = PredictionOutput.claim(
            args.out, samples, resume=args.resume, overwrite=args.overwrite, retry_errors=args.retry_errors,
            data=args.data,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as error:  # VideoGemmaDataError is a ValueError
        return _refuse("infer-batch", error)
    with output, plain_warnings("videogemma infer-batch"):
        try:
            model, processor, model_name = load_from_args(args)
        except (ValueError, FileNotFoundError) as error:  # VideoGemmaDataError, TrainConfigError: bad input
            return _refuse("infer-batch", error)
        run_batch_inference(
            model,
            processor,
            samples,
            output,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            settings=settings,
            system=args.system,
            model_name=model_name,
            dataset_name=str(args.data),
        )
    return 0

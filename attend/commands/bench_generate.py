"""``attend bench generate``: our decoder's cached and uncached decoding against
``transformers.generate`` on identical weights, and llama.cpp on a GGUF generator when
``llama-cpp-python`` is installed (see ``eval.bench_generate``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from attend.commands.args import positive_int_list


def register(parsers) -> None:
    p = parsers.bench.add_parser(
        "generate",
        help="decode tokens/s with and without the KV cache, prefill tokens/s, peak memory, vs transformers",
    )
    p.add_argument("--checkpoint", default=None, help="decoder directory (default: random weights of --preset)")
    p.add_argument("--preset", default="attend-qa-small", help="DecoderConfig preset without a checkpoint")
    p.add_argument("--generator", default=None, metavar="NAME",
                   help="chat model weights: smollm2, a .gguf file or a Llama-family directory (instead of --checkpoint)")
    p.add_argument("--quant", choices=("none", "int8"), default="none",
                   help="int8: our decoder with weight-only int8 linears; transformers holds the dequantized weights")
    p.add_argument("--prompt-lens", type=positive_int_list, default=[256, 1024, 2048], help="comma-separated (default 256,1024,2048)")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens generated per cached run (default 64)")
    p.add_argument("--uncached-tokens", type=int, default=8, help="tokens per uncached run; each recomputes the sequence (default 8)")
    p.add_argument("--runs", type=int, default=3, help="timed runs per implementation; figures are medians (default 3)")
    p.add_argument("--batch-size", type=int, default=1, help="prompts per batch (default 1)")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="weights of both models (default fp32)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-reference", action="store_true", help="skip transformers")
    p.add_argument("--no-llama-cpp", action="store_true", help="skip llama.cpp even when llama-cpp-python is installed")
    p.add_argument("--agreement-tokens", type=int, default=16,
                   help="with --quant int8: greedy tokens per fixed prompt compared with the float model (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from eval.bench_generate import GenerateBenchConfig, format_report, run_generate_bench
    from eval.report import write_json

    cfg = GenerateBenchConfig(
        checkpoint=args.checkpoint, preset=args.preset, prompt_lens=tuple(args.prompt_lens),
        new_tokens=args.new_tokens, uncached_tokens=args.uncached_tokens, runs=args.runs,
        reference=not args.no_reference, device=args.device, dtype=args.dtype, threads=args.threads,
        seed=args.seed, batch_size=args.batch_size, generator=args.generator, quant=args.quant,
        llama_cpp=not args.no_llama_cpp, agreement_tokens=args.agreement_tokens,
    )
    result = run_generate_bench(cfg, log=print)
    print(format_report(result))
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0

"""``attend generate``: run a decoder checkpoint (ours, Llama, Mistral, Qwen2, a GGUF file or a
packaged chat model such as ``smollm2``) on a prompt; ``--chat`` wraps it in the chat template."""

from __future__ import annotations

import argparse
import sys


def register(parsers) -> None:
    p = parsers.top.add_parser("generate", help="generate text from a prompt with a decoder checkpoint")
    p.add_argument("prompt", help="the prompt text")
    p.add_argument("--checkpoint", required=True,
                   help="model directory, a name under models/, a .gguf file, or smollm2")
    p.add_argument("--chat", action="store_true", help="send the prompt as a user turn of the model's chat template")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="seed for sampling (reproducible output)")
    p.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    p.add_argument("--prefix-lm", action="store_true", help="read the prompt bidirectionally (prefix-LM models)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default=None, help="default: fp32 on CPU")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import torch

    from common.errors import CheckpointError, InvalidInput
    from generator.chat_model import is_generative, load_chat_model
    from generator.checkpoint import load_decoder
    from generator.generate import stream_generate

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(args.dtype or "")
    stops = None
    if is_generative(args.checkpoint):
        chat = load_chat_model(args.checkpoint, device=args.device, dtype=dtype)
        model, tokenizer, stops = chat.decoder, chat.tokenizer, chat.stop_ids
        text = chat.render([{"role": "user", "content": args.prompt}]) if args.chat else args.prompt
        prompt_ids = chat.encode(text)
    else:
        if args.chat:
            raise InvalidInput(f"{args.checkpoint} is not a chat model: --chat needs a chat template")
        model, tokenizer = load_decoder(args.checkpoint, device=args.device, dtype=dtype)
        if tokenizer is None:
            raise CheckpointError(f"{args.checkpoint} has no tokenizer.json (or vocab.txt) to encode the prompt")
        prompt_ids = tokenizer.encode(args.prompt).ids
    steps = stream_generate(
        model, prompt_ids, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, seed=args.seed, prefix_lm=args.prefix_lm, stop_token_ids=stops,
    )
    ids: list[int] = []
    shown = ""
    for step in steps:
        if not step.emitted[0]:
            break
        ids.append(int(step.tokens[0]))
        if args.stream:
            text = tokenizer.decode(ids)
            if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                sys.stdout.write(text[len(shown):] if text.startswith(shown) else text)
                sys.stdout.flush()
                shown = text
    text = tokenizer.decode(ids)
    if args.stream:
        sys.stdout.write((text[len(shown):] if text.startswith(shown) else "") + "\n")
    else:
        print(text)
    return 0

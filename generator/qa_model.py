"""The grounded QA generator: our decoder (prefix-LM mask) with a copy/pointer head.

The model reads the prompt of :mod:`generator.prompt` bidirectionally, then decodes the answer
causally with the KV cache. Each decoding step chooses a class among ``[ABSTAIN, END]`` and the
prompt positions (a pointer, See et al. 2017, restricted to copying): choosing a position copies
that prompt token, which is fed back as the next input. Answers are therefore spans of the chunks,
returned with the original characters and offsets, and the chunk copied from is the citation.

Decoding is constrained to contiguous copies inside one chunk (the model is trained that way):
step 0 picks ABSTAIN or a start position; each later step picks END or the next position.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.errors import CheckpointError, ContextTooLong
from generator.checkpoint import from_bert_checkpoint, read_state_dict
from generator.config import DecoderConfig
from generator.model import Decoder
from generator.prompt import Prompt, PromptBuilder
from generator.qa_data import ABSTAIN_CLASS, END_CLASS, POINTER_OFFSET
from retriever.tokenizer import Tokenizer

QA_FORMAT = "attend-grounded-qa"
NEG_INF = -1e4
# An ``abstain_threshold`` no probability reaches: the model always answers (when any chunk token can
# be copied) and the caller applies its own threshold to ``QAAnswer.abstain_prob`` afterwards.
NEVER_ABSTAIN = 2.0


@dataclass
class QAConfig:
    """Settings of the QA head and of decoding."""

    pointer_dim: int = 256
    max_answer_tokens: int = 30
    abstain_threshold: float = 0.5  # abstain when p(ABSTAIN) at step 0 is at least this


@dataclass
class QAAnswer:
    """An answer (a span of one chunk) or an abstention, with the model's confidence."""

    abstained: bool
    chunk_index: int = -1  # index into prompt.chunks
    char_start: int = 0  # in the chunk's text
    char_end: int = 0
    text: str = ""
    token_span: tuple[int, int] = (0, 0)  # prompt positions [first, last]
    abstain_prob: float = 0.0
    confidence: float = 0.0  # probability of the chosen start (or of ABSTAIN)
    answer_ids: tuple[int, ...] = ()  # the decoder inputs of the answer ([ANS] + copied tokens)


class GroundedQA(nn.Module):
    """A :class:`Decoder` plus the pointer head. ``forward`` returns per-step class logits."""

    def __init__(self, decoder: Decoder, config: QAConfig | None = None) -> None:
        super().__init__()
        self.decoder = decoder
        self.config = config or QAConfig()
        d, p = decoder.config.dim, self.config.pointer_dim
        self.ptr_query = nn.Linear(d, p)
        self.ptr_key = nn.Linear(d, p)
        self.special = nn.Linear(d, 2)  # ABSTAIN, END
        for m in (self.ptr_query, self.ptr_key, self.special):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    # Training -----------------------------------------------------------------------------------

    def step_logits(self, h_steps: Tensor, h_prompt: Tensor, pointer_mask: Tensor) -> Tensor:
        """Class logits for answer steps.

        h_steps (B, A, D), h_prompt (B, P, D), pointer_mask (B, P) bool -> (B, A, 2 + P)."""
        q = self.ptr_query(h_steps)  # (B, A, p)
        k = self.ptr_key(h_prompt)  # (B, P, p)
        ptr = torch.einsum("bap,bkp->bak", q, k) / math.sqrt(q.shape[-1])  # (B, A, P)
        ptr = ptr.masked_fill(~pointer_mask[:, None, :], NEG_INF)
        return torch.cat([self.special(h_steps), ptr], dim=-1)  # (B, A, 2 + P)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        position_ids: Tensor,
        block: Tensor,
        prefix_len: Tensor,
        pointer_mask: Tensor,
        answer_pos: Tensor,
    ) -> Tensor:
        """Teacher-forced pass over right-padded ``input_ids`` (B, T) = prompt + answer inputs.

        ``position_ids`` (B, T); ``block`` (B, P) prompt blocks (see :mod:`generator.prompt`);
        ``prefix_len`` (B,) prompt lengths; ``pointer_mask`` (B, P) which prompt positions may be
        copied (P = max prompt length); ``answer_pos`` (B, A) positions of the answer inputs (pad
        with 0 where a row has fewer). Returns logits (B, A, 2 + P)."""
        mask = parallel_context_mask(block, prefix_len, attention_mask.bool())  # (B, 1, T, T)
        out = self.decoder(
            input_ids, position_ids=position_ids, attn_mask=mask, output_hidden=True, compute_logits=False
        )
        h = out.hidden  # (B, T, D)
        p = pointer_mask.shape[1]
        h_steps = torch.gather(h, 1, answer_pos[..., None].expand(-1, -1, h.shape[-1]))  # (B, A, D)
        return self.step_logits(h_steps, h[:, :p], pointer_mask)

    # Inference ----------------------------------------------------------------------------------

    @property
    def max_prompt_len(self) -> int:
        """The longest prompt that leaves room for ``[ANS]`` and a full answer (one token spare)."""
        return self.decoder.config.max_seq_len - self.config.max_answer_tokens - 2

    @torch.inference_mode()
    def read(self, prompt: Prompt, answer_token_id: int, *, abstain_threshold: float | None = None) -> QAAnswer:
        """Decode one answer for ``prompt`` with the KV cache (prefill, then one token a step)."""
        cfg = self.config
        threshold = cfg.abstain_threshold if abstain_threshold is None else abstain_threshold
        dec = self.decoder
        p_len = len(prompt.input_ids)
        total = p_len + 1 + cfg.max_answer_tokens
        if total > dec.config.max_seq_len or prompt.answer_start_position + cfg.max_answer_tokens >= dec.config.max_seq_len:
            raise ContextTooLong(
                f"prompt of {p_len} tokens plus an answer of {cfg.max_answer_tokens} exceeds the "
                f"generator's context of {dec.config.max_seq_len} tokens"
            )
        device = dec.device
        dec.setup_caches(1, dec.config.max_seq_len)
        ids = torch.tensor([prompt.input_ids + [answer_token_id]], device=device)  # (1, P + 1)
        a0 = prompt.answer_start_position
        positions = torch.tensor([prompt.position_ids + [a0]], device=device)  # (1, P + 1)
        block = torch.tensor([prompt.block], device=device)  # (1, P)
        mask = parallel_context_mask(block, torch.tensor([p_len], device=device), torch.ones_like(ids, dtype=torch.bool))
        out = dec(ids, start_pos=0, position_ids=positions, attn_mask=mask, output_hidden=True, compute_logits=False)
        h_prompt = out.hidden[:, :p_len]  # (1, P, D)
        keys = self.ptr_key(h_prompt)[0]  # (P, p)
        valid = torch.tensor([c >= 0 for c in prompt.token_chunk], device=device)  # (P,)
        first = self._classes(out.hidden[:, -1], keys, valid)  # (2 + P,)
        probs = first.softmax(-1)
        p_abstain = float(probs[ABSTAIN_CLASS])
        pointer_probs = probs[POINTER_OFFSET:]
        if p_abstain >= threshold or not bool(valid.any()):
            return QAAnswer(abstained=True, abstain_prob=p_abstain, confidence=p_abstain, answer_ids=(answer_token_id,))
        start = int(pointer_probs.argmax())
        conf = float(pointer_probs[start])
        end = start
        answer_ids = [answer_token_id, prompt.input_ids[start]]
        chunk = prompt.token_chunk[start]
        pos = p_len + 1
        while end - start + 1 < cfg.max_answer_tokens:
            nxt = end + 1
            if nxt >= p_len or prompt.token_chunk[nxt] != chunk:
                break
            step = dec(
                torch.tensor([[prompt.input_ids[end]]], device=device),
                start_pos=pos,
                position_ids=torch.tensor([[a0 + pos - p_len]], device=device),
                output_hidden=True,
                compute_logits=False,
            )
            pos += 1
            logits = self._classes(step.hidden[:, -1], keys, valid)
            if float(logits[END_CLASS]) >= float(logits[POINTER_OFFSET + nxt]):
                break
            end = nxt
            answer_ids.append(prompt.input_ids[end])
        ci, a, b = prompt.span_text(start, end)
        return QAAnswer(
            abstained=False,
            chunk_index=ci,
            char_start=a,
            char_end=b,
            text=prompt.chunks[ci].text[a:b],
            token_span=(start, end),
            abstain_prob=p_abstain,
            confidence=conf,
            answer_ids=tuple(answer_ids),
        )

    def _classes(self, h: Tensor, keys: Tensor, valid: Tensor) -> Tensor:
        """Logits over ``[ABSTAIN, END] + prompt positions`` for one hidden state h (1, D)."""
        q = self.ptr_query(h)[0]  # (p,)
        ptr = (keys @ q) / math.sqrt(q.shape[-1])  # (P,)
        ptr = ptr.masked_fill(~valid, NEG_INF)
        return torch.cat([self.special(h)[0], ptr]).float()  # (2 + P,)

    def extend_context(self, length: int) -> None:
        """Grow the context window (the KV cache and the learned position table) to ``length``
        tokens, tiling the position table (:func:`generator.checkpoint.extend_positions`). With the
        parallel-context layout positions restart for every chunk, so the rows past the trained
        ones are only reached by a single chunk longer than the trained length."""
        from generator.checkpoint import extend_positions

        dec = self.decoder
        if length <= dec.config.max_seq_len:
            return
        if dec.pos_embeddings is not None:
            table = extend_positions(dec.pos_embeddings.weight.data, length)
            dec.pos_embeddings = nn.Embedding.from_pretrained(table, freeze=False).to(table.device)
        dec.config = dec.config.replace(max_seq_len=length)
        dec.clear_caches()
        dec.reset_buffers()

    # Persistence --------------------------------------------------------------------------------

    def save(self, path: str | Path, tokenizer: Tokenizer, *, half: bool = True, extra: dict | None = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` (fp16 unless ``half=False``) and
        ``tokenizer.json``."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        cfg = {
            "format": QA_FORMAT,
            "decoder_config": self.decoder.config.to_dict(),
            "qa_config": asdict(self.config),
            **(extra or {}),
        }
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        if self.decoder.config.tie_word_embeddings:
            state.pop("decoder.output.weight", None)
        if half:
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        tmp = path / "model.safetensors.tmp"
        save_file(state, str(tmp), metadata={"format": "pt"})
        tmp.replace(path / "model.safetensors")
        (path / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        tokenizer.save(path)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None) -> tuple[GroundedQA, PromptBuilder]:
        """Load a saved model in float32 with its prompt builder, in eval mode."""
        from common.paths import resolve_model_dir

        path = resolve_model_dir(path)
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise CheckpointError(f"{path} has no config.json")
        cfg = json.loads(cfg_file.read_text())
        if cfg.get("format") != QA_FORMAT:
            raise CheckpointError(f"{path} is not a grounded QA model (format {cfg.get('format')!r})")
        decoder = Decoder(DecoderConfig.from_dict(cfg["decoder_config"]))
        model = cls(decoder, QAConfig(**cfg["qa_config"]))
        state = read_state_dict(path, torch.float32)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if k != "decoder.output.weight"]
        if missing or unexpected:
            raise CheckpointError(f"{path}: missing weights {missing[:5]}, unexpected {unexpected[:5]}")
        if device is not None:
            model.to(device)
        model.eval()
        return model, PromptBuilder(Tokenizer.from_dir(path))

    @classmethod
    def from_bert(cls, path: str | Path, *, max_seq_len: int = 1024, config: QAConfig | None = None) -> GroundedQA:
        """Warm start from a BERT / sentence-transformers checkpoint (BERT2BERT, Rothe et al. 2020)."""
        return cls(from_bert_checkpoint(path, max_seq_len=max_seq_len), config)


def parallel_context_mask(block: Tensor, prefix_len: Tensor, valid: Tensor) -> Tensor:
    """Boolean attention mask (B, 1, T, T) of the parallel-context layout (see
    :mod:`generator.prompt`): a prompt token sees the question and its own block; an answer token
    sees every real token up to itself.

    ``block`` (B, P) block id per prompt token (-1 question); ``prefix_len`` (B,) prompt lengths;
    ``valid`` (B, T) real tokens (T >= P)."""
    b, t = valid.shape
    p = block.shape[1]
    idx = torch.arange(t, device=valid.device)
    blk = torch.full((b, t), -2, dtype=torch.long, device=valid.device)  # -2: not a prompt token
    blk[:, :p] = block
    in_prompt = idx[None, :] < prefix_len.to(valid.device)[:, None]  # (B, T)
    blk = blk.masked_fill(~in_prompt, -2)
    key_q = blk[:, None, :] == -1  # (B, 1, Tk) question keys
    same = blk[:, :, None] == blk[:, None, :]  # (B, Tq, Tk)
    prompt_rows = in_prompt[:, None, :] & (key_q | same)  # keys in the prompt: question or own block
    causal = idx[None, :] <= idx[:, None]  # (Tq, Tk)
    allowed = torch.where(in_prompt[:, :, None], prompt_rows, causal[None]) & valid[:, None, :]
    allowed = allowed | torch.eye(t, dtype=torch.bool, device=valid.device)[None]  # never an empty row
    return allowed[:, None]  # (B, 1, T, T)


def collate(examples: list, pad_id: int = 0) -> dict[str, Tensor]:
    """Right-pad :class:`generator.qa_data.QAExample` objects into a training batch."""
    b = len(examples)
    t = max(len(e.input_ids) for e in examples)
    p = max(e.prefix_len for e in examples)
    a = max(len(e.targets) for e in examples)
    input_ids = torch.full((b, t), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((b, t), dtype=torch.long)
    pointer_mask = torch.zeros((b, p), dtype=torch.bool)
    answer_pos = torch.zeros((b, a), dtype=torch.long)
    targets = torch.full((b, a), -100, dtype=torch.long)
    prefix_len = torch.zeros(b, dtype=torch.long)
    position_ids = torch.zeros((b, t), dtype=torch.long)
    block = torch.full((b, p), -1, dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[i, :n] = torch.tensor(e.input_ids)
        position_ids[i, :n] = torch.tensor(e.position_ids)
        block[i, : e.prefix_len] = torch.tensor(e.block)
        attention_mask[i, :n] = 1
        pointer_mask[i, : e.prefix_len] = torch.tensor(e.pointer_mask, dtype=torch.bool)
        k = len(e.targets)
        answer_pos[i, :k] = torch.arange(e.prefix_len, e.prefix_len + k)
        tg = torch.tensor(e.targets)
        # pointer classes are positions in this row's prompt, which is also their place in the batch
        targets[i, :k] = tg
        prefix_len[i] = e.prefix_len
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "block": block,
        "prefix_len": prefix_len,
        "pointer_mask": pointer_mask,
        "answer_pos": answer_pos,
        "targets": targets,
    }


def qa_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over the answer steps (targets -100 are padding)."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)

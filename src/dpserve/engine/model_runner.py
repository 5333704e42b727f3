"""Model runner: owns the model and the KV cache tensors; turns a scheduled batch into tensors,
runs one forward pass and samples."""

from __future__ import annotations

from pathlib import Path

import torch

from dpserve.engine.attention import AttentionMetadata, PrefillSegment
from dpserve.engine.models.llama import RMSNorm, load_llama, rope_tables
from dpserve.engine.models.llama_args import LlamaArgs
from dpserve.engine.models.packed_linear import PackedLinear
from dpserve.engine.sampler import SampleFailure, is_greedy, make_generator, sample
from dpserve.engine.scheduler import ScheduledSeq
from dpserve.engine.sequence import Sequence

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class ModelRunner:
    """One model + its paged KV cache ([num_blocks, block_size, KV, D] per layer, K and V)."""

    def __init__(self, model_dir: Path, *, device: str, dtype: str, num_blocks: int, block_size: int,
                 max_model_len: int) -> None:
        self.device = torch.device(device)
        self.dtype = DTYPES[dtype]
        self.block_size = block_size
        self.args = LlamaArgs.from_model_dir(model_dir)
        self.model = load_llama(model_dir, self.dtype, self.device)
        self.cos_table, self.sin_table = rope_tables(self.args, max_model_len, self.dtype, self.device)
        shape = (num_blocks, block_size, self.args.num_kv_heads, self.args.head_dim)
        # zeros, not empty: padded decode slots are masked, but 0 * NaN garbage would still be NaN.
        self.kv_caches = [(torch.zeros(shape, dtype=self.dtype, device=self.device),
                           torch.zeros(shape, dtype=self.dtype, device=self.device))
                          for _ in range(self.args.num_layers)]
        self._generators: dict[str, torch.Generator] = {}

    @property
    def decode_weight_bytes(self) -> int:
        """Weight bytes one decode step streams: every linear (lm_head included) and norm; the
        embedding table is only indexed, so it is left out."""
        total = 0
        for module in self.model.modules():
            if isinstance(module, PackedLinear):
                total += module.nbytes
            elif isinstance(module, torch.nn.Linear | RMSNorm):
                total += sum(p.numel() * p.element_size() for p in module.parameters(recurse=False))
        return total

    def release(self, seq: Sequence) -> None:
        """Forget per-request state (its sampling generator) once the request is done."""
        self._generators.pop(seq.request_id, None)

    @torch.inference_mode()
    def run(self, batch: list[ScheduledSeq]) -> dict[Sequence, int | SampleFailure]:
        """Forward the batch; returns the sampled token (or why there is none) of every sequence
        whose chunk reached its end."""
        # decodes first: they share one batched attention call; prefill chunks follow as segments
        ordered = ([it for it in batch if it.num_new_tokens == 1]
                   + [it for it in batch if it.num_new_tokens > 1])
        input_ids, positions, slots, sample_rows = self._pack(ordered)
        meta = self._metadata(ordered, positions, slots)
        hidden = self.model(input_ids, meta, self.kv_caches)  # [T, hidden]
        samplers = [it.seq for it in ordered if it.samples]
        if not samplers:
            return {}
        logits = self.model.logits(hidden.index_select(0, sample_rows))  # [S, vocab]
        generators = [self._generator(seq) for seq in samplers]
        tokens = sample(logits, [seq.sampling for seq in samplers], generators)
        return dict(zip(samplers, tokens, strict=True))

    def _generator(self, seq: Sequence) -> torch.Generator | None:
        if is_greedy(seq.sampling):
            return None
        gen = self._generators.get(seq.request_id)
        if gen is None:
            gen = self._generators[seq.request_id] = make_generator(seq.sampling.seed, self.device)
        return gen

    def _pack(self, ordered: list[ScheduledSeq]) -> tuple[torch.Tensor, list[int], list[int], torch.Tensor]:
        bs = self.block_size
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        sample_rows: list[int] = []
        for it in ordered:
            seq, start = it.seq, it.seq.num_computed_tokens
            end = start + it.num_new_tokens
            ids.extend(seq.token_ids[start:end])
            positions.extend(range(start, end))
            table = seq.block_table
            slots.extend(table[p // bs] * bs + p % bs for p in range(start, end))
            if it.samples:
                sample_rows.append(len(ids) - 1)
        return (self._tensor(ids), positions, slots, self._tensor(sample_rows))

    def _metadata(self, ordered: list[ScheduledSeq], positions: list[int],
                  slots: list[int]) -> AttentionMetadata:
        pos = self._tensor(positions)
        decodes = [it.seq for it in ordered if it.num_new_tokens == 1]
        decode_slots, decode_mask = self._decode_tensors(decodes) if decodes else (None, None)
        prefills: list[PrefillSegment] = []
        row = len(decodes)
        for it in ordered[len(decodes):]:
            prefills.append(self._prefill_segment(it, row))
            row += it.num_new_tokens
        return AttentionMetadata(
            cos=self.cos_table.index_select(0, pos).unsqueeze(1),
            sin=self.sin_table.index_select(0, pos).unsqueeze(1),
            slot_mapping=self._tensor(slots), num_decodes=len(decodes), decode_slots=decode_slots,
            decode_mask=decode_mask, prefills=tuple(prefills))

    def _decode_tensors(self, seqs: list[Sequence]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Padded block tables → context slots [B*L] and mask [B, 1, 1, L], L a block multiple
        (one sequence: its exact context and no mask)."""
        bs = self.block_size
        ctx_lens = [seq.num_computed_tokens + 1 for seq in seqs]
        max_blocks = -(-max(ctx_lens) // bs)
        tables = [seq.block_table[:max_blocks] + [0] * (max_blocks - len(seq.block_table[:max_blocks]))
                  for seq in seqs]
        table = self._tensor(tables)  # [B, M]
        offsets = torch.arange(bs, device=self.device)
        slots = (table.unsqueeze(-1) * bs + offsets).view(-1)  # [B*M*bs]
        if len(seqs) == 1:  # nothing to pad to: gather exactly the context, attend without a mask
            return slots[:ctx_lens[0]], None
        span = torch.arange(max_blocks * bs, device=self.device)
        mask = span.unsqueeze(0) < self._tensor(ctx_lens).unsqueeze(1)  # [B, L]
        return slots, mask.view(len(seqs), 1, 1, -1)

    def _prefill_segment(self, it: ScheduledSeq, row: int) -> PrefillSegment:
        start, n = it.seq.num_computed_tokens, it.num_new_tokens
        if start == 0:
            return PrefillSegment(row, row + n, None, None)
        bs, table = self.block_size, it.seq.block_table
        ctx = start + n
        context_slots = self._tensor([table[p // bs] * bs + p % bs for p in range(ctx)])
        keys = torch.arange(ctx, device=self.device)
        queries = torch.arange(start, ctx, device=self.device)
        mask = keys.unsqueeze(0) <= queries.unsqueeze(1)  # [n, L]: causal, offset by the prefix
        return PrefillSegment(row, row + n, context_slots, mask)

    def _tensor(self, values: list[int] | list[list[int]]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=self.device)

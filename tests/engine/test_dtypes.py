"""bf16 and int8 weights, and the compiled paged attention kernel: quality against fp32, footprints,
reproducibility across batch compositions, and the kernel against SDPA on gathered copies."""

from __future__ import annotations

import pytest
import torch

from infercloud.bench.quality import agreement, measure, parity_prompts
from infercloud.engine.attention import AttentionMetadata, PrefillChunk, SdpaPlan, paged_attention
from infercloud.engine.config import EngineConfig, cpu_has_bf16
from infercloud.engine.engine import LLMEngine
from infercloud.engine.footprint import chat_weight_bytes, model_memory_bytes
from infercloud.engine.kernels import KernelUnavailable, cpu_ops
from infercloud.engine.quant import KERNEL_MAX_ROWS, Int8Linear, cpu_has_vnni, int8_kernel, quantize_int8
from infercloud.engine.sampling import SamplingParams


@pytest.fixture(scope="module")
def quality(smollm2_dir):
    return {q.setting: q for q in measure(smollm2_dir)}


def test_bf16_perplexity_within_1_percent_of_fp32(quality):
    assert abs(quality["bfloat16"].perplexity_vs_fp32 - 1) <= 0.01, quality
    assert quality["bfloat16"].agreeing_prefix > 0.5, quality   # reported in docs/benchmarks.md


def test_int8_perplexity_within_3_percent_of_fp32(quality):
    assert abs(quality["bfloat16+int8"].perplexity_vs_fp32 - 1) <= 0.03, quality
    assert quality["float32"].identical_replies == 1.0 and quality["float32"].perplexity_vs_fp32 == 1.0


def test_agreement_counts_identical_replies_and_prefixes():
    assert agreement([[1, 2, 3, 4], [5, 6]], [[1, 2, 9, 4], [5, 6]]) == (0.5, 0.75)


def test_auto_dtype_follows_the_cpu():
    expected = torch.bfloat16 if cpu_has_bf16() else torch.float32
    assert EngineConfig().torch_dtype(torch.device("cpu")) == expected
    assert EngineConfig(dtype="float32").torch_dtype(torch.device("cpu")) == torch.float32
    with pytest.raises(ValueError, match="quantization"):
        EngineConfig(quantization="int4")
    with pytest.raises(ValueError, match="dtype"):
        EngineConfig(dtype="fp8")


@pytest.mark.parametrize("quantization", [None, "int8"])
def test_footprint_counts_what_the_engine_holds(smollm2_dir, quantization):
    config = EngineConfig(dtype="bfloat16", quantization=quantization, num_kv_blocks=8)
    engine = LLMEngine(smollm2_dir, config)
    held = sum(t.numel() * t.element_size() for t in [*engine.model.parameters(), *engine.model.buffers()])
    vnni = quantization is not None and cpu_has_vnni(torch.device("cpu"))
    assert chat_weight_bytes(smollm2_dir, torch.bfloat16, quantization, packed=quantization is None, vnni=vnni) == held
    kv = sum(t.numel() * t.element_size() for pair in engine.runner.kv_caches for t in pair)
    assert model_memory_bytes(smollm2_dir, "chat", config) == held + kv


def test_int8_linear_kernels_and_dequantized_path_agree():
    """The VNNI kernel (int8 activations in groups of 64), aten's int8 weight-only kernel and the dequantized GEMM
    give the same products within quantization error, at decode and prefill row counts."""
    assert int8_kernel(torch.device("cpu"), torch.bfloat16) == ("vnni" if cpu_has_vnni(torch.device("cpu")) else "aten")
    torch.manual_seed(0)
    weight, bias = torch.randn(96, 128).to(torch.bfloat16), torch.randn(96).to(torch.bfloat16)
    q, scale = quantize_int8(weight)
    assert q.dtype == torch.int8 and int(q.abs().max()) == 127
    assert torch.allclose(q.float() * scale.float()[:, None], weight.float(), atol=float(scale.max()) / 2 + 1e-3)
    layers = {kernel: Int8Linear(weight, bias, kernel) for kernel in ("aten", None)}
    if cpu_has_vnni(torch.device("cpu")):
        layers["vnni"] = Int8Linear(weight, bias, "vnni")
        assert layers["vnni"].qweight.shape == (6, 32, 16, 4) and torch.equal(layers["vnni"].weight_int8(), q)
    assert Int8Linear(torch.randn(96, 40), None, "vnni").kernel is None   # K not a multiple of 64: dequantized
    for rows in (1, 5, KERNEL_MAX_ROWS + 24):   # above KERNEL_MAX_ROWS: aten's path is dequantized
        x = torch.randn(rows, 128).to(torch.bfloat16)
        exact = x.float() @ (q.float() * scale.float()[:, None]).T + bias.float()
        for kernel, layer in layers.items():
            y = layer(x)
            assert y.dtype == torch.bfloat16 and y.shape == (rows, 96)
            assert (y.float() - exact).norm() / exact.norm() < 0.02, (kernel, rows)
    if "vnni" in layers:   # fp32 activations go through the same kernel
        x = torch.randn(3, 128)
        exact = x @ (q.float() * scale.float()[:, None]).T + bias.float()
        assert (layers["vnni"](x) - exact).norm() / exact.norm() < 0.02


def _random_step(dtype, block_size=16, kv_heads=3, group=3, head_dim=64):
    """A step of three decodes, a prefill chunk after 7 cached tokens and a fresh prompt, in both cache layouts."""
    torch.manual_seed(1)
    q_lens, lens = [1, 1, 1, 20, 11], [5, 16, 33, 27, 11]
    num_blocks = 32
    tables = [torch.randperm(num_blocks)[:3].tolist() for _ in lens]
    total = sum(q_lens)
    q = torch.randn(total, kv_heads * group, head_dim).to(dtype)
    keys = [torch.randn(n, kv_heads, head_dim).to(dtype) for n in lens]
    values = [torch.randn(n, kv_heads, head_dim).to(dtype) for n in lens]
    slots, new_k, new_v, old = [], [], [], []
    for s, (n, t) in enumerate(zip(lens, tables)):
        first_new = n - q_lens[s]
        for p in range(n):
            slot = t[p // block_size] * block_size + p % block_size
            (slots if p >= first_new else old).append(slot)
            if p >= first_new:
                new_k.append(keys[s][p])
                new_v.append(values[s][p])
            else:
                old.append((keys[s][p], values[s][p]))
    return q_lens, lens, tables, q, torch.stack(new_k), torch.stack(new_v), slots, old


def _caches(dtype, kernel_layout, old, block_size=16, num_blocks=32, kv_heads=3, head_dim=64):
    k = torch.zeros(num_blocks, block_size, kv_heads, head_dim, dtype=dtype)
    v = torch.zeros_like(k)
    for slot, (kk, vv) in zip(old[0::2], old[1::2]):
        k.view(-1, kv_heads, head_dim)[slot] = kk
        v.view(-1, kv_heads, head_dim)[slot] = vv
    if not kernel_layout:
        return k, v
    k_pairs = k.view(num_blocks, block_size, kv_heads, head_dim // 2, 2).permute(0, 2, 3, 1, 4).contiguous()
    v_pairs = v.view(num_blocks, block_size // 2, 2, kv_heads, head_dim).permute(0, 1, 3, 4, 2).contiguous()
    return k_pairs, v_pairs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_matches_sdpa_on_gathered_copies(dtype):
    assert cpu_ops(torch.device("cpu")), "the C++ kernels must build on this machine (a compiler is part of the setup)"
    op = torch.ops.infercloud.paged_attention.default
    q_lens, lens, tables, q, k, v, slots, old = _random_step(dtype)
    scale, slot_mapping = 64 ** -0.5, torch.tensor(slots)
    starts = [0]
    for n in q_lens:
        starts.append(starts[-1] + n)
    meta = AttentionMetadata(slot_mapping, op, torch.tensor(tables), torch.tensor(starts), torch.tensor(lens))
    out = paged_attention(q, k, v, *_caches(dtype, True, old), meta, scale)

    decode_tables = torch.tensor(tables[:3])
    mask = (torch.arange(3 * 16)[None] < torch.tensor(lens[:3])[:, None])[:, None, None, :]
    keys = torch.arange(27)
    chunk_mask = keys[None, :] <= (torch.arange(20) + 7)[:, None]
    plan = SdpaPlan(3, decode_tables, mask, [PrefillChunk(3, 20, 7, torch.tensor(tables[3][:2]), chunk_mask),
                                             PrefillChunk(23, 11, 0, torch.tensor(tables[4][:1]), None)])
    reference = paged_attention(q, k, v, *_caches(dtype, False, old), AttentionMetadata(slot_mapping, None, sdpa=plan),
                                scale)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    assert torch.allclose(out.float(), reference.float(), atol=tolerance), (out.float() - reference.float()).abs().max()


def test_attention_kernel_refuses_shapes_it_cannot_run(smollm2_dir):
    with pytest.raises(KernelUnavailable, match="block_size"):
        LLMEngine(smollm2_dir, EngineConfig(block_size=8, num_kv_blocks=64, attention="kernel"))
    assert LLMEngine(smollm2_dir, EngineConfig(block_size=8, num_kv_blocks=64)).runner.kernel is None   # auto: SDPA


# int8 is reproducible across batches through the VNNI kernel only (aten's path and the dequantized one choose by rows)
REPRODUCIBLE = [None, "int8"] if cpu_has_vnni(torch.device("cpu")) else [None]


@pytest.mark.parametrize("quantization", REPRODUCIBLE)
@pytest.mark.parametrize("params", [SamplingParams(max_tokens=32, temperature=0.0),
                                    SamplingParams(max_tokens=32, temperature=1.0, seed=7)], ids=["greedy", "seeded"])
def test_bf16_outputs_do_not_depend_on_the_batch(smollm2_dir, params, quantization):
    """A sequence's tokens are the same alone, in a batch with others, with its prompt chunked, and after a prefix
    cache hit: the kernel computes each row alike, and one bf16 row runs through the GEMM as two; the int8 VNNI
    kernel quantizes and sums each row alone."""
    engine = LLMEngine(smollm2_dir, EngineConfig(dtype="bfloat16", quantization=quantization, num_kv_blocks=1024))
    chunked = LLMEngine(smollm2_dir, EngineConfig(dtype="bfloat16", quantization=quantization, num_kv_blocks=1024,
                                                  max_num_batched_tokens=40))
    assert engine.runner.kernel is not None
    prompts = parity_prompts(engine.tokenizer)
    alone = [engine.generate([p], params)[0].outputs[0].token_ids for p in prompts]
    batched = [o.outputs[0].token_ids for o in engine.generate(prompts * 2, params)]   # the second copy hits the cache
    split = [o.outputs[0].token_ids for o in chunked.generate(prompts, params)]
    assert batched == alone * 2
    assert split == alone
    assert engine.stats().prefix_cache_hit_tokens > 0 and chunked.stats().num_steps > len(prompts)


def test_plain_pytorch_path_matches_the_compiled_one(smollm2_dir, smollm2_engine):
    """Where the C++ kernels cannot run (CUDA, no compiler): SDPA on gathered copies and unfused elementwise ops
    give fp32's greedy tokens, as the compiled path does."""
    plain = LLMEngine(smollm2_dir, EngineConfig(dtype="float32", num_kv_blocks=512, attention="sdpa"))
    plain.model.fused = False
    assert plain.runner.kernel is None and smollm2_engine.model.fused
    params = SamplingParams(max_tokens=16, temperature=0.0)
    prompts = parity_prompts(plain.tokenizer)
    assert [o.outputs[0].token_ids for o in plain.generate(prompts, params)] == \
        [o.outputs[0].token_ids for o in smollm2_engine.generate(prompts, params)]

#!/usr/bin/env python3
"""The PyTorch side of `s3pet bench`: training-step time of transformers (+ PEFT for lora) on a fixed batch.

    python tools/bench_peer.py --shape minilm,bert-base --workload full,lora --batch-size 16 \
        --seq-len 128 --warmup 2 --steps 5 --device cpu --threads 4

Shapes: minilm (6 layers, hidden 384, 12 heads, FFN 1536), bert-base (12, 768, 12, 3072), bert-large
(24, 1024, 16, 4096), vocab 30522, random weights (BertForSequenceClassification(config) after
torch.manual_seed(0), 2 labels); or a model directory (its weights, a fresh 2-label classifier).
Workloads: full (everything trainable), lora (PEFT r 8, alpha 16, no LoRA dropout, on query and value,
the classifier in modules_to_save). The batch is the one s3pet bench builds: B rows of T token ids
1000 + (7919 i + 104729 j) mod (vocab - 1000), token type 0, no padding, labels i mod 2. Train mode
(the config's dropout 0.1). One step = zero_grad, forward with labels (cross-entropy), backward,
clip_grad_norm_ 1.0 over the trainable parameters, AdamW (lr 1e-5) step. --dtype bf16 runs forward and
loss under torch.autocast(bfloat16); weights, gradients and optimiser state stay fp32. CUDA is
synchronised before the clock is read. Peak memory: torch.cuda.max_memory_allocated on CUDA, VmHWM of
/proc/self/status on CPU (reset per row through /proc/self/clear_refs, as s3pet does).
One JSON line per row on stdout.
"""
import argparse
import gc
import json
import sys
import time

SHAPES = {
    "minilm": (6, 384, 12, 1536),
    "bert-base": (12, 768, 12, 3072),
    "bert-large": (24, 1024, 16, 4096),
}


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def build(shape, workload, device, attn):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    if shape in SHAPES:
        layers, d, heads, f = SHAPES[shape]
        cfg = BertConfig(vocab_size=30522, hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
                         intermediate_size=f, num_labels=2)
        if attn:
            cfg._attn_implementation = attn
        with torch.device(device):
            model = BertForSequenceClassification(cfg)
    else:
        kw = {"attn_implementation": attn} if attn else {}
        model = BertForSequenceClassification.from_pretrained(shape, num_labels=2, dtype=torch.float32,
                                                              ignore_mismatched_sizes=True, **kw)
    model.to(device)
    if workload == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                 target_modules=["query", "value"], modules_to_save=["classifier"]))
    elif workload == "full":
        for p in model.parameters():
            p.requires_grad = True
    else:
        raise SystemExit(f"bench_peer.py: unknown workload {workload!r} (full, lora)")
    model.train()
    return model


def fixed_batch(batch, seq_len, vocab, device):
    import torch

    i = torch.arange(batch).view(-1, 1)
    j = torch.arange(seq_len).view(1, -1)
    lo = 1000 if vocab > 2000 else 0  # s3pet's ids; small test vocabularies use all ids
    ids = lo + (i * 7919 + j * 104729) % (vocab - lo)
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "token_type_ids": torch.zeros_like(ids).to(device),
        "labels": (torch.arange(batch) % 2).to(device),
    }


def bench_row(shape, workload, a):
    import torch
    import transformers

    device = torch.device(a.device)
    cuda = device.type == "cuda"
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()
    model = build(shape, workload, device, a.attn)
    vocab = model.config.vocab_size
    inputs = fixed_batch(a.batch_size, a.seq_len, vocab, device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    bf16 = a.dtype == "bf16"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    for _ in range(a.warmup):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    ms = (time.perf_counter() - t0) * 1e3 / max(a.steps, 1)
    row = {
        "shape": shape,
        "workload": workload,
        "device": str(device),
        "dtype": a.dtype,
        "threads": torch.get_num_threads(),
        "batch": a.batch_size,
        "seq_len": a.seq_len,
        "steps": a.steps,
        "ms_per_step": ms,
        "examples_per_s": a.batch_size * 1e3 / ms,
        "tokens_per_s": a.batch_size * a.seq_len * 1e3 / ms,
        "trainable_params": sum(p.numel() for p in params),
        "peak_mem_bytes": torch.cuda.max_memory_allocated(device) if cuda else peak_rss(),
        "attn": getattr(model.config, "_attn_implementation", None),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    del model, opt, params, inputs
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="minilm", help="minilm, bert-base, bert-large or a model dir; comma-separated")
    ap.add_argument("--workload", default="full,lora", help="full, lora; comma-separated")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--attn", default=None, choices=["sdpa", "eager"],
                    help="attention implementation (default: transformers' choice, sdpa)")
    a = ap.parse_args(argv)

    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    for shape in a.shape.split(","):
        for workload in a.workload.split(","):
            print(json.dumps(bench_row(shape, workload, a)), flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""What the Python reference scripts need to know of each encoder family s3pet supports (by config.json's
`model_type`): module-name suffixes as PEFT's target_modules match them, the task head's modules, the
backbone prefix in the task model, whether token types are used, and the input length s3pet uses.
No torch import (parity_table.py imports parity.py, which imports this)."""
import json
import os

# q, k, v, attention output, FFN in
NAMES = {
    "bert": ("query", "key", "value", "attention.output.dense", "intermediate.dense"),
    "roberta": ("query", "key", "value", "attention.output.dense", "intermediate.dense"),
    "xlm-roberta": ("query", "key", "value", "attention.output.dense", "intermediate.dense"),
    "mpnet": ("attn.q", "attn.k", "attn.v", "attn.o", "intermediate.dense"),
    "deberta-v2": ("query_proj", "key_proj", "value_proj", "attention.output.dense", "intermediate.dense"),
    "distilbert": ("q_lin", "k_lin", "v_lin", "out_lin", "ffn.lin1"),
}
# LayerNorm module-name suffixes (LN_TUNING target_modules)
NORMS = {"distilbert": ["LayerNorm", "sa_layer_norm", "output_layer_norm"]}
# the head's modules in the task model (PEFT's modules_to_save)
HEADS = {"deberta-v2": ["pooler", "classifier"], "distilbert": ["pre_classifier", "classifier"]}
PREFIX = {"bert": "bert.", "roberta": "roberta.", "xlm-roberta": "roberta.", "mpnet": "mpnet.",
          "deberta-v2": "deberta.", "distilbert": "distilbert."}


def config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return json.load(f)


def model_type(model_dir):
    return config(model_dir).get("model_type", "bert")


def heads(mt):
    return HEADS.get(mt, ["classifier"])


def norms(mt):
    return NORMS.get(mt, ["LayerNorm"])


def query_value(mt):
    """s3pet's manual LoRA targets: the query and value projections."""
    q, _, v, _, _ = NAMES[mt]
    return [q.split(".")[-1], v.split(".")[-1]]


def uses_token_types(mt):
    """BERT feeds token types; RoBERTa's type table has one row, the others have none."""
    return mt == "bert"


def max_tokens(model_dir, requested=128):
    """s3pet's input length: `requested`, cut to what the position table holds (RoBERTa and MPNet count
    positions from the padding index + 1; DeBERTa without absolute positions has no table)."""
    cfg = config(model_dir)
    mt = cfg.get("model_type", "bert")
    if mt == "deberta-v2" and not cfg.get("position_biased_input", True):
        return requested
    table = cfg.get("max_position_embeddings", 512)
    if mt in ("roberta", "xlm-roberta", "mpnet"):
        table -= (1 if mt == "mpnet" else cfg.get("pad_token_id", 1)) + 1
    return min(requested, table)

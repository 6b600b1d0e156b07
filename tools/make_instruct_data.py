#!/usr/bin/env python3
"""An instruction-style task from SuperGLUE COPA (../shared/data): the user gives a premise and two
options and asks for the more plausible cause (or effect), the assistant answers with that option's
text, word for word. Exact match of the greedy reply then measures the task; the reply's
log-likelihood too. Writes chat JSONL (`{"messages": [user, assistant]}`) for `reader = "chat"`:

    python3 tools/make_instruct_data.py DATA_DIR        # reads DATA_DIR/superglue/COPA/{train,val}.jsonl
                                                       # writes DATA_DIR/instruct/copa/{train,val}.jsonl

Standard library only; deterministic (file order, no randomness). The task spec is
tasks/copa-instruct.toml (`--task tasks/copa-instruct.toml --data-dir DATA_DIR`).
"""
import json
import sys
from pathlib import Path


def convert(row):
    word = "cause" if row["question"] == "cause" else "effect"
    user = (f"{row['premise']}\nWhat was the {word} of this?\nOption 1: {row['choice1']}\n"
            f"Option 2: {row['choice2']}\nReply with the more plausible option, word for word.")
    answer = row["choice1"] if int(row["label"]) == 0 else row["choice2"]
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def main():
    data = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
    out = data / "instruct" / "copa"
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        rows = [json.loads(l) for l in (data / "superglue" / "COPA" / f"{split}.jsonl").read_text().splitlines() if l.strip()]
        with open(out / f"{split}.jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps(convert(r), ensure_ascii=False) + "\n")
        print(f"{out / split}.jsonl: {len(rows)} conversations")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Small dataset repos in the Hugging Face Hub's layout, for the loopback hub mirror of tests/hub_data.rs.

Writes tests/fixtures/hub/datasets/<org>/<name>/... (relative to the repository root):
  nyu-mll/glue/<config>/{train,validation*,test}-00000-of-00001.parquet   as on the Hub's main branch
  aps/super_glue/<config>/{train,validation,test}-00000-of-00001.parquet  as on the Hub's main branch
  s3pet-test/sentiment/{train,validation}.csv                            a user CSV repo (no config)
and the seeds of the `hub_rows` fuzz target, fuzz/corpus/hub_rows/ (a few rows each).

The rows are the real rows of ../shared/data (GLUE TSV, SuperGLUE JSONL; S3PET_DATA overrides) turned
into the Hub's rows by the same logic as the Hugging Face loading scripts that built the Hub's files
(datasets/glue/glue.py and datasets/super_glue/super_glue.py): column names, integer class labels in
the scripts' ClassLabel order, `idx`, MultiRC exploded into one row per answer, WSC's target spans
lifted to the top level, COPA's label as choice1/choice2, MRPC split from msr_paraphrase_train.txt by
dev_ids.tsv. The tasks whose files are not in ../shared/data (MNLI, QQP, QNLI, WiC) come from the tiny
hand-made files in tests/fixtures/data. Each split keeps its first rows only (MultiRC: whole passages),
so the Rust test can compare them with the first rows the TSV/JSONL readers give.

The parquet files are written like `datasets` writes them (pyarrow, snappy, the `huggingface` schema
metadata with the features), in row groups of 64 rows so that readers meet several row groups. A
`test` split (labels -1, as on the Hub) is written for RTE only. Deterministic: re-running gives
byte-identical files (pyarrow 26.0.1, tools/requirements.txt).

Usage: tools/.venv/bin/python tools/make_hub_fixtures.py
"""
import csv
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("S3PET_DATA", ROOT.parent / "shared" / "data"))
TINY = ROOT / "tests" / "fixtures" / "data"
OUT = ROOT / "tests" / "fixtures" / "hub" / "datasets"
SEEDS = ROOT / "fuzz" / "corpus" / "hub_rows"
N_TRAIN, N_DEV, N_TEST = 200, 100, 20
ROW_GROUP = 64

STR = {"dtype": "string", "_type": "Value"}
I32 = {"dtype": "int32", "_type": "Value"}
F32 = {"dtype": "float32", "_type": "Value"}


def label(*names):
    return {"names": list(names), "_type": "ClassLabel"}


def arrow_type(feature):
    if feature.get("_type") == "ClassLabel":
        return pa.int64()
    if "_type" not in feature:  # a struct (MultiRC's idx)
        return pa.struct([(k, arrow_type(v)) for k, v in feature.items()])
    return {"string": pa.string(), "int32": pa.int32(), "float32": pa.float32()}[feature["dtype"]]


def write_parquet(path, rows, features):
    fields = [(name, arrow_type(f)) for name, f in features.items()]
    meta = {"huggingface": json.dumps({"info": {"features": features}}, sort_keys=True)}
    schema = pa.schema(fields, metadata=meta)
    table = pa.Table.from_pylist(rows, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="snappy", row_group_size=ROW_GROUP)


def tsv_dicts(path, header=True):
    # glue.py: open(encoding="utf8"), csv with delimiter="\t" and QUOTE_NONE
    f = open(path, encoding="utf8")
    if header:
        return csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    return csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)


def glue_rows(path, text_features, label_column, classes, cola=False, score=False):
    """glue.py _generate_examples: one row per TSV line, rows with an empty value dropped."""
    rows = []
    for n, row in enumerate(tsv_dicts(path, header=not cola)):
        if cola:
            row = {"sentence": row[3], "is_acceptable": row[1]}
        example = {feat: row[col] for feat, col in text_features.items()}
        value = row[label_column]
        if score:
            example["label"] = float(value)
        elif value in classes:
            example["label"] = classes.index(value)
        else:
            example["label"] = int(value) if value else None
        example["idx"] = n
        if all(v is not None for v in example.values()):
            rows.append(example)
    return rows


def mrpc_rows(split):
    """glue.py _generate_example_mrpc_files: msr_paraphrase_train.txt split by dev_ids.tsv."""
    dev_ids = [[r[0], r[1]] for r in tsv_dicts(DATA / "glue/MRPC/dev_ids.tsv", header=False)]
    with open(DATA / "glue/MRPC/msr_paraphrase_train.txt", encoding="utf8") as f:
        f.seek(3)  # the UTF-8 BOM
        rows = []
        for n, row in enumerate(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)):
            if ([row["#1 ID"], row["#2 ID"]] in dev_ids) == (split == "validation"):
                rows.append({"sentence1": row["#1 String"], "sentence2": row["#2 String"],
                             "label": int(row["Quality"]), "idx": n})
    return rows


def cast_label(value, classes):
    """super_glue.py _cast_label, then the ClassLabel index."""
    if isinstance(value, bool):
        value = "True" if value else "False"
    elif isinstance(value, int):
        value = str(value)
    return classes.index(value)


def superglue_rows(path, config, features, classes):
    """super_glue.py _generate_examples for the flat tasks (not MultiRC)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if config == "wsc":
                row.update(row["target"])
            example = {k: row[k] for k in features if k not in ("idx", "label")}
            example["idx"] = row["idx"]
            if config == "copa":
                example["label"] = classes.index("choice2" if row["label"] else "choice1")
            else:
                example["label"] = cast_label(row["label"], classes)
            rows.append(example)
    return rows


def multirc_rows(path, min_rows):
    """super_glue.py for MultiRC: one row per answer; whole passages until `min_rows` rows (2 at least)."""
    rows, passages = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if len(rows) >= min_rows and passages >= 2:
                break
            row = json.loads(line)
            paragraph = row["passage"]
            for question in paragraph["questions"]:
                for answer in question["answers"]:
                    rows.append({
                        "paragraph": paragraph["text"], "question": question["question"],
                        "answer": answer["text"], "idx": {"paragraph": row["idx"], "question": question["idx"],
                                                          "answer": answer["idx"]},
                        "label": cast_label(bool(answer["label"]), ["False", "True"]),
                    })
            passages += 1
    return rows


GLUE_PAIR = {"sentence1": STR, "sentence2": STR}
NLI = ["entailment", "not_entailment"]
MNLI = ["entailment", "neutral", "contradiction"]
GLUE = {
    # config: (features, [(split, rows thunk)])
    "cola": ({"sentence": STR, "label": label("unacceptable", "acceptable"), "idx": I32}, [
        (s, lambda f=f: glue_rows(DATA / f"glue/CoLA/{f}.tsv", {"sentence": "sentence"}, "is_acceptable",
                                  ["unacceptable", "acceptable"], cola=True))
        for s, f in [("train", "train"), ("validation", "dev")]]),
    "sst2": ({"sentence": STR, "label": label("negative", "positive"), "idx": I32}, [
        (s, lambda f=f: glue_rows(DATA / f"glue/SST-2/{f}.tsv", {"sentence": "sentence"}, "label",
                                  ["negative", "positive"]))
        for s, f in [("train", "train"), ("validation", "dev")]]),
    "mrpc": ({**GLUE_PAIR, "label": label("not_equivalent", "equivalent"), "idx": I32}, [
        (s, lambda s=s: mrpc_rows(s)) for s in ["train", "validation"]]),
    "stsb": ({**GLUE_PAIR, "label": F32, "idx": I32}, [
        (s, lambda f=f: glue_rows(DATA / f"glue/STS-B/{f}.tsv", {"sentence1": "sentence1", "sentence2": "sentence2"},
                                  "score", None, score=True))
        for s, f in [("train", "train"), ("validation", "dev")]]),
    "rte": ({**GLUE_PAIR, "label": label(*NLI), "idx": I32}, [
        (s, lambda f=f: glue_rows(DATA / f"glue/RTE/{f}.tsv", {"sentence1": "sentence1", "sentence2": "sentence2"},
                                  "label", NLI))
        for s, f in [("train", "train"), ("validation", "dev")]]),
    "wnli": ({**GLUE_PAIR, "label": label("not_entailment", "entailment"), "idx": I32}, [
        (s, lambda f=f: glue_rows(DATA / f"glue/WNLI/{f}.tsv", {"sentence1": "sentence1", "sentence2": "sentence2"},
                                  "label", ["not_entailment", "entailment"]))
        for s, f in [("train", "train"), ("validation", "dev")]]),
    "qqp": ({"question1": STR, "question2": STR, "label": label("not_duplicate", "duplicate"), "idx": I32}, [
        (s, lambda f=f: glue_rows(TINY / f"glue/QQP/{f}.tsv", {"question1": "question1", "question2": "question2"},
                                  "is_duplicate", ["not_duplicate", "duplicate"]))
        for s, f in [("train", "train"), ("validation", "dev")]]),
    "mnli": ({"premise": STR, "hypothesis": STR, "label": label(*MNLI), "idx": I32}, [
        (s, lambda f=f: glue_rows(TINY / f"glue/MNLI/{f}.tsv", {"premise": "sentence1", "hypothesis": "sentence2"},
                                  "gold_label", MNLI))
        for s, f in [("train", "train"), ("validation_matched", "dev_matched"),
                     ("validation_mismatched", "dev_mismatched")]]),
    "qnli": ({"question": STR, "sentence": STR, "label": label(*NLI), "idx": I32}, [
        (s, lambda f=f: glue_rows(TINY / f"glue/QNLI/{f}.tsv", {"question": "question", "sentence": "sentence"},
                                  "label", NLI))
        for s, f in [("train", "train"), ("validation", "dev")]]),
}

TF = ["False", "True"]
SUPERGLUE = {
    # config: (features, classes, [(split, file)])
    "boolq": ({"question": STR, "passage": STR, "idx": I32, "label": label(*TF)}, TF,
              [("validation", DATA / "superglue/BoolQ/val.jsonl")]),
    "cb": ({"premise": STR, "hypothesis": STR, "idx": I32,
            "label": label("entailment", "contradiction", "neutral")}, ["entailment", "contradiction", "neutral"],
           [("train", DATA / "superglue/CB/train.jsonl"), ("validation", DATA / "superglue/CB/val.jsonl")]),
    "copa": ({"premise": STR, "choice1": STR, "choice2": STR, "question": STR, "idx": I32,
              "label": label("choice1", "choice2")}, ["choice1", "choice2"],
             [("train", DATA / "superglue/COPA/train.jsonl"), ("validation", DATA / "superglue/COPA/val.jsonl")]),
    "wsc": ({"text": STR, "span1_index": I32, "span2_index": I32, "span1_text": STR, "span2_text": STR,
             "idx": I32, "label": label(*TF)}, TF, [("validation", DATA / "superglue/WSC/val.jsonl")]),
    "wic": ({"word": STR, "sentence1": STR, "sentence2": STR, "start1": I32, "start2": I32, "end1": I32,
             "end2": I32, "idx": I32, "label": label(*TF)}, TF,
            [("train", TINY / "superglue/WiC/train.jsonl"), ("validation", TINY / "superglue/WiC/val.jsonl")]),
}
MULTIRC = {"paragraph": STR, "question": STR, "answer": STR,
           "idx": {"paragraph": I32, "question": I32, "answer": I32}, "label": label(*TF)}


def first(rows, split):
    return rows[: N_TRAIN if split == "train" else N_DEV]


def shard(repo, config, split):
    return OUT / repo / config / f"{split}-00000-of-00001.parquet"


def write_glue():
    for config, (features, splits) in GLUE.items():
        for split, rows in splits:
            write_parquet(shard("nyu-mll/glue", config, split), first(rows(), split), features)
    # an unlabelled test split as on the Hub (label -1): the first dev rows of RTE
    features, splits = GLUE["rte"]
    test = [dict(r, label=-1, idx=i) for i, r in enumerate(splits[1][1]()[:N_TEST])]
    write_parquet(shard("nyu-mll/glue", "rte", "test"), test, features)


def write_superglue():
    for config, (features, classes, splits) in SUPERGLUE.items():
        for split, path in splits:
            rows = first(superglue_rows(path, config, features, classes), split)
            write_parquet(shard("aps/super_glue", config, split), rows, features)
    for split, name, n in [("train", "train", N_TRAIN), ("validation", "val", N_DEV)]:
        rows = multirc_rows(DATA / f"superglue/MultiRC/{name}.jsonl", n)
        write_parquet(shard("aps/super_glue", "multirc", split), rows, MULTIRC)


def write_user_csv():
    """A user's sentiment repo in CSV, no config: SST-2 rows with word labels."""
    words = ["negative", "positive"]
    for split, f in [("train", "train"), ("validation", "dev")]:
        rows = first(glue_rows(DATA / f"glue/SST-2/{f}.tsv", {"sentence": "sentence"}, "label", words), split)
        path = OUT / "s3pet-test/sentiment" / f"{split}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as out:
            w = csv.writer(out, lineterminator="\n")
            w.writerow(["review", "sentiment"])
            for r in rows:
                w.writerow([r["sentence"], words[r["label"]]])


def write_fuzz_seeds():
    """Small files of each kind the `hub_rows` fuzz target reads: a few rows, so that libFuzzer's
    default input size stays small."""
    shutil.rmtree(SEEDS, ignore_errors=True)
    SEEDS.mkdir(parents=True)
    rte_features, rte = GLUE["rte"]
    write_parquet(SEEDS / "rte.parquet", rte[1][1]()[:4], rte_features)
    stsb_features, stsb = GLUE["stsb"]
    write_parquet(SEEDS / "stsb.parquet", stsb[1][1]()[:4], stsb_features)
    multirc = multirc_rows(DATA / "superglue/MultiRC/val.jsonl", 1)
    write_parquet(SEEDS / "multirc.parquet", [dict(r, paragraph=r["paragraph"][:80]) for r in multirc[:6]], MULTIRC)
    copa_features, classes, copa = SUPERGLUE["copa"]
    rows = superglue_rows(copa[1][1], "copa", copa_features, classes)[:3]
    (SEEDS / "copa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    lines = (OUT / "s3pet-test/sentiment/validation.csv").read_text(encoding="utf-8").splitlines()[:4]
    (SEEDS / "sentiment.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main():
    if not (DATA / "glue").is_dir():
        raise SystemExit(f"{DATA}: no GLUE data (set S3PET_DATA to the shared data directory)")
    shutil.rmtree(OUT, ignore_errors=True)
    write_glue()
    write_superglue()
    write_user_csv()
    write_fuzz_seeds()
    files = sorted(p for p in OUT.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    print(f"wrote {len(files)} files, {total} bytes, under {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

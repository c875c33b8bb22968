#!/usr/bin/env python3
"""hnswlib (PyPI) on a TEXMEX-format dataset, for graph_bench and build_bench.

Builds an index with M=16, ef_construction=64 (cosine, or l2) with the given
number of threads, timing the build (wall and CPU seconds), then runs the
queries one call at a time on one thread for each ef_search and measures
recall@10 against the dataset's ground truth and QPS (wall and CPU).
Prints one JSON object.

    python3 bench/hnswlib_build.py --dataset DIR [--threads 1] [--efs 10,20,40,80,160,320] [--space cosine|l2] [--seed 100]
"""
import argparse
import json
import os
import sys
import time

import hnswlib
import numpy as np


def read_vecs(path, dtype):
    raw = np.fromfile(path, dtype=np.int32)
    d = raw[0]
    rows = raw.reshape(-1, d + 1)[:, 1:]
    return rows.view(np.float32) if dtype == "f" else rows


def mean_degree0(index):
    """Mean layer-0 neighbor count, read from a saved index (hnswlib 0.8's
    format: a 96-byte header, then one record per element that starts with
    its layer-0 count as a 16-bit integer)."""
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        index.save_index(f.name)
        raw = np.fromfile(f.name, dtype=np.uint8)
    count, size = (int(x) for x in raw[16:32].view(np.uint64))
    records = raw[96 : 96 + count * size].reshape(count, size)
    return float(records[:, :2].copy().view(np.uint16).mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--efs", default="10,20,40,80,160,320")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--space", default="cosine", choices=["cosine", "l2"])
    ap.add_argument("--seed", type=int, default=100)
    a = ap.parse_args()
    base = read_vecs(os.path.join(a.dataset, "base.fvecs"), "f")
    queries = read_vecs(os.path.join(a.dataset, "queries.fvecs"), "f")
    truth = read_vecs(os.path.join(a.dataset, "groundtruth.ivecs"), "i")[:, :10]

    index = hnswlib.Index(space=a.space, dim=base.shape[1])
    index.init_index(max_elements=base.shape[0], M=16, ef_construction=64, random_seed=a.seed)
    index.set_num_threads(a.threads)
    cpu, wall = time.process_time(), time.perf_counter()
    index.add_items(base, np.arange(base.shape[0]))
    build_s, build_cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    degree0 = mean_degree0(index)

    index.set_num_threads(1)
    runs = []
    for ef in [int(x) for x in a.efs.split(",")]:
        index.set_ef(ef)
        for q in queries[:50]:
            index.knn_query(q, k=10)
        best_wall, best_cpu, hits = 0.0, 0.0, 0
        for _ in range(a.repeats):
            hits = 0
            cpu, wall = time.process_time(), time.perf_counter()
            for q, tr in zip(queries, truth):
                labels, _ = index.knn_query(q, k=10)
                hits += len(set(labels[0].tolist()) & set(tr.tolist()))
            w, c = time.perf_counter() - wall, time.process_time() - cpu
            best_wall = max(best_wall, len(queries) / w)
            best_cpu = max(best_cpu, len(queries) / max(c, 1e-3))
        runs.append({"ef_search": ef, "recall_at_10": hits / (10 * len(queries)), "qps": best_wall, "qps_cpu": best_cpu})
    json.dump({"threads": a.threads, "build_s": build_s, "build_cpu_s": build_cpu_s, "degree0": degree0, "runs": runs}, sys.stdout)
    print()


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""hnswlib on the same dataset, in process: the algorithm's ceiling.

Builds with --m and --ef-construction (default 16 and 64; cosine, one
thread), then for each
ef_search runs the 1,000 queries one call at a time and measures QPS,
p50/p99 latency and recall@10 against the dataset's exact ground truth.
Writes JSON to --out.
"""
import argparse, json, os, sys, time

import numpy as np
import hnswlib


def read_vecs(path, dtype):
    raw = np.fromfile(path, dtype=np.int32)
    d = raw[0]
    rows = raw.reshape(-1, d + 1)[:, 1:]
    return rows.view(dtype) if dtype == np.float32 else rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--efs", default="10,20,40,80,160,320")
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=64)
    a = ap.parse_args()
    base = read_vecs(os.path.join(a.dataset, "base.fvecs"), np.float32)
    queries = read_vecs(os.path.join(a.dataset, "queries.fvecs"), np.float32)
    truth = read_vecs(os.path.join(a.dataset, "groundtruth.ivecs"), np.int32)[:, :10]

    index = hnswlib.Index(space="cosine", dim=base.shape[1])
    index.init_index(max_elements=base.shape[0], M=a.m, ef_construction=a.ef_construction, random_seed=100)
    index.set_num_threads(1)
    t = time.perf_counter()
    index.add_items(base, np.arange(base.shape[0]))
    build = time.perf_counter() - t
    print(f"  hnswlib build {build:.1f} s", flush=True)
    path = a.out + ".index"
    index.save_index(path)
    size = os.path.getsize(path)
    os.remove(path)

    runs = []
    for ef in [int(x) for x in a.efs.split(",")]:
        index.set_ef(ef)
        for q in queries[:20]:
            index.knn_query(q, k=10)
        lat, hits = [], 0
        start = time.perf_counter()
        for q, tr in zip(queries, truth):
            t = time.perf_counter()
            labels, _ = index.knn_query(q, k=10)
            lat.append((time.perf_counter() - t) * 1000)
            hits += len(set(labels[0].tolist()) & set(tr.tolist()))
        total = time.perf_counter() - start
        lat.sort()
        print(f"  hnswlib ef_search {ef:>3}: recall@10 {hits / (10 * len(queries)):.4f}, "
              f"{len(queries) / total:.0f} QPS", flush=True)
        runs.append({
            "ef_search": ef,
            "qps": len(queries) / total,
            "p50_ms": lat[len(lat) // 2],
            "p99_ms": lat[int(round((len(lat) - 1) * 0.99))],
            "recall_at_10": hits / (10 * len(queries)),
        })
    json.dump({"build_s": build, "index_bytes": size, "runs": runs}, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    sys.exit(main())

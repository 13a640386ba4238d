"""Time and peak memory of NT-Xent forward + backward: tiled (ours) against the direct N x N form.

For each number of pairs N (2N views, dimension ``--dim``) and each implementation, a fresh Python
subprocess creates z1, z2 (N, D) float32 leaves, records its peak resident set size (``ru_maxrss``)
as the baseline, runs ``loss = nt_xent(z1, z2, 0.1, chunk_size=C); loss.backward()`` ``--repeats``
times (one untimed warm-up first where N <= 8192), and reports the times and the peak RSS minus
the baseline. The direct form (``nt_xent`` with ``chunk_size`` unset and the automatic threshold
lifted) is skipped where its estimated peak exceeds
``--direct-limit-gib``; the estimate is printed.

    python bench/tiled_info_nce.py [--sizes 1024,2048,...] [--chunk 1024] [--threads 1]
    python bench/tiled_info_nce.py --sweep-chunks 512,1024,2048,4096 --sizes 4096
    python bench/tiled_info_nce.py --sizes 4096 --impls interleaved --repeats 7

Prints one JSON object on stdout; progress goes to stderr; ``--markdown`` adds table rows there.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

#: Bytes per entry of the (2N)^2 logit matrix at the direct form's peak resident memory, measured
#: with this script: 15.5 at N = 2,048, 13.4 at N = 8,192 (several float32 N x N temporaries and
#: gradients, a boolean mask); rounded up.
DIRECT_BYTES_PER_ENTRY = 16


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(args: argparse.Namespace) -> None:
    """One configuration in this (fresh) process; prints one JSON line."""
    import torch

    from contrastlab.losses.info_nce import nt_xent

    if args.threads:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    z1 = torch.randn(args.n, args.dim, generator=generator).requires_grad_()
    z2 = torch.randn(args.n, args.dim, generator=generator).requires_grad_()
    baseline = peak_rss_mib()
    chunk = args.chunk if args.impl == "tiled" else None

    def step(tile: int | None) -> tuple[float, float]:
        """Wall and process CPU seconds of one forward + backward."""
        z1.grad = z2.grad = None
        start, start_cpu = time.perf_counter(), time.process_time()
        if tile is None:
            loss = direct_nt_xent(z1, z2, 0.1)
        else:
            loss = nt_xent(z1, z2, 0.1, chunk_size=tile)
        loss.backward()
        return time.perf_counter() - start, time.process_time() - start_cpu

    if args.impl == "interleaved":
        # tiled and direct alternately in one process: their ratio is robust to load drift
        step(args.chunk), step(None)
        pairs = [(step(args.chunk), step(None)) for _ in range(args.repeats)]
        ratios = sorted(t[0] / d[0] for t, d in pairs)
        print(json.dumps({
            "pairs": args.n, "views": 2 * args.n, "dim": args.dim, "impl": "interleaved",
            "chunk_size": args.chunk, "threads": torch.get_num_threads(),
            "tiled_s": [round(t[0], 4) for t, _ in pairs],
            "direct_s": [round(d[0], 4) for _, d in pairs],
            "median_ratio_tiled_over_direct": round(ratios[len(ratios) // 2], 3),
        }))
        return
    if args.n <= 8192:
        step(chunk)  # warm-up
    runs = [step(chunk) for _ in range(args.repeats)]
    peak = peak_rss_mib()
    print(json.dumps({
        "pairs": args.n, "views": 2 * args.n, "dim": args.dim, "impl": args.impl,
        "chunk_size": chunk, "threads": torch.get_num_threads(),
        "time_s": round(min(r[0] for r in runs), 4),
        "times_s": [round(r[0], 4) for r in runs], "cpu_s": [round(r[1], 4) for r in runs],
        "baseline_rss_mib": round(baseline, 1), "peak_rss_mib": round(peak, 1),
        "peak_minus_baseline_mib": round(peak - baseline, 1),
    }))


def direct_nt_xent(z1, z2, temperature):  # noqa: ANN001, ANN201
    """The library's direct form (the 2N x 2N matrix), whatever the automatic threshold says."""
    from contrastlab.losses import info_nce, tiled

    tiled.DIRECT_LOGITS_LIMIT_BYTES = float("inf")  # this process only runs the direct form
    return info_nce.nt_xent(z1, z2, temperature)


def run_one(n: int, impl: str, args: argparse.Namespace, chunk: int) -> dict:
    command = [sys.executable, __file__, "--worker", "--n", str(n), "--impl", impl,
               "--dim", str(args.dim), "--chunk", str(chunk), "--repeats",
               str(args.repeats if n <= 8192 else 1), "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"pairs": n, "impl": impl, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,2048,4096,8192,16384,32768,65536",
                        help="numbers of pairs N, comma-separated")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=None,
                        help="tile size of the tiled form (default: the library's)")
    parser.add_argument("--sweep-chunks", default=None,
                        help="comma-separated tile sizes to compare (tiled form only)")
    parser.add_argument("--impls", default="tiled,direct",
                        help="tiled, direct, interleaved (both alternately in one process)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs where N <= 8192")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--direct-limit-gib", type=float, default=8.0)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from contrastlab.losses.tiled import default_chunk_size

    chunk = args.chunk or default_chunk_size("cpu")
    chunks = [int(c) for c in args.sweep_chunks.split(",")] if args.sweep_chunks else [chunk]
    impls = ["tiled"] if args.sweep_chunks else args.impls.split(",")
    results, skipped = [], []
    for n in [int(s) for s in args.sizes.split(",")]:
        for impl in impls:
            if impl == "direct":
                estimate = DIRECT_BYTES_PER_ENTRY * (2 * n) ** 2 / 2**30
                if estimate > args.direct_limit_gib:
                    log(f"N={n} direct: skipped, estimated peak {estimate:.1f} GiB")
                    skipped.append({"pairs": n, "impl": "direct",
                                    "estimated_peak_gib": round(estimate, 1)})
                    continue
            for c in chunks if impl in ("tiled", "interleaved") else [0]:
                result = run_one(n, impl, args, c)
                log(json.dumps(result))
                results.append(result)
    print(json.dumps({
        "benchmark": "tiled_info_nce", "load_average_1min": os.getloadavg()[0],
        "cpu_count": os.cpu_count(), "results": results, "skipped": skipped,
    }))
    if args.markdown:
        for r in results:
            if "error" in r or r["impl"] == "interleaved":
                continue
            log(f"| {r['pairs']:,} | {r['views']:,} | {r['impl']} | {r['chunk_size'] or '-'} | "
                f"{r['time_s']:.3f} | {r['peak_minus_baseline_mib']:,.0f} | "
                f"{r['peak_rss_mib']:,.0f} |")
        for s in skipped:
            log(f"| {s['pairs']:,} | {2 * s['pairs']:,} | direct | - | skipped | "
                f"est. {s['estimated_peak_gib']} GiB | |")


if __name__ == "__main__":
    main()

"""Online-adaptation soak: hours of unattended adaptation with faults injected, in minutes.

A worker process adapts the tiny artifact online (θ and optimiser carried from batch to batch)
on a stream of synthetic fog frames and saves θ with its optimiser state every few batches, as a
robot would.  While it runs, the faults a device meets are injected:

- NaN frames (a broken camera decoder) every `--nan-every` batches: the batch must be skipped;
- a full disk: from 40% to 50% of the run, writes past 4 KB fail (RLIMIT_FSIZE, as `ulimit -f`):
  every save must fail in one line and leave the previous θ file intact;
- SIGKILL at a random moment after 60% of the run (possibly in the middle of a save); the worker
  is restarted, resumes from the θ file (verified by its sha256) and goes on.

It records, per interval: batches, RSS, θ drift from the source, loss, guard counts and saves;
the summary says whether memory stayed flat and whether any saved θ was lost.  Results:
``benchmarks/results/soak.json`` and ``soak.md``.

    python benchmarks/soak.py --minutes 30            # the acceptance run
    python benchmarks/soak.py --minutes 1 --check     # a quick dry run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _common import DEFAULT_WORKDIR, RESULTS, ensure_artifact, ensure_run, log, md_table

FULL_DISK_BYTES = 4096


def worker(args: argparse.Namespace) -> None:
    """One life of the device loop; JSON lines on stdout (a pipe: the full-disk limit applies to
    files only) until killed or done."""
    import numpy as np

    from s4t_edge.data import synth
    from s4t_edge.errors import S4TError
    from s4t_edge.measure.memory import current_rss
    from s4t_edge.runtime import Adapter, load

    t_end = float(args.t_end)
    disk = (float(args.disk_from), float(args.disk_to))

    def emit(**rec: Any) -> None:
        print(json.dumps({"t": time.time(), "pid": os.getpid(), **rec}), flush=True)

    session = load(args.artifact, intra_op_threads=1)
    adapter = Adapter(
        session, steps=args.steps, mode="online", seed=args.seed, lr=args.lr,
        max_drift=args.max_drift,
    )  # fmt: skip
    theta_path = Path(args.theta)
    if theta_path.exists():
        adapter.load_theta(theta_path)  # verified; resumes optimiser, generator, counters
        emit(event="resumed", batches=adapter.batches)
    frames = synth("fog", 64, session.input_size[0], 7).image  # a pool, cycled: flat input memory
    bad = np.full((session.batch, *session.input_size, 3), np.nan, np.float32)
    bad = np.ascontiguousarray(bad.transpose(0, 3, 1, 2))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    disk_full = False
    saves = {"ok": 0, "failed": 0}
    last_save: dict[str, Any] = {}
    i = adapter.batches
    next_report = time.time()
    while time.time() < t_end:
        now = time.time()
        want_full = disk[0] <= now < disk[1]
        if want_full != disk_full:
            resource.setrlimit(
                resource.RLIMIT_FSIZE, (FULL_DISK_BYTES if want_full else soft, hard)
            )
            disk_full = want_full
            emit(event="disk_full" if want_full else "disk_ok")
        if args.nan_every and i % args.nan_every == args.nan_every - 1:
            res = adapter.adapt(bad)
        else:
            start = (i * session.batch) % len(frames)
            res = adapter.adapt(frames[start : start + session.batch])
        i += 1
        if i % args.save_every == 0:
            try:
                digest = adapter.save_theta(theta_path, include_optimizer=True)
                saves["ok"] += 1
                last_save = {"batches": adapter.batches, "sha256": digest}
                emit(event="saved", **last_save)
            except S4TError as e:
                saves["failed"] += 1
                emit(event="save_failed", message=str(e), one_line="\n" not in str(e))
        if time.time() >= next_report:
            next_report = time.time() + args.report_s
            emit(
                event="stats",
                batches=adapter.batches,
                rss=current_rss(),
                drift=adapter.drift(),
                loss=None if res.skipped else float(res.loss_trace[-1]),
                guards=dict(adapter.guards),
                saves=dict(saves),
            )
    emit(event="done", batches=adapter.batches, guards=dict(adapter.guards), saves=saves)


def _copy_lines(stream: Any, path: Path) -> None:
    with open(path, "a", buffering=1) as f:
        for line in stream:
            f.write(line)


def _read_log(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # the line being written when SIGKILL came
            pass
    return out


def _verify_theta(artifact: Path, theta: Path) -> dict[str, Any]:
    from s4t_edge.runtime import Artifact
    from s4t_edge.runtime.state import load_theta

    _, info = load_theta(theta, Artifact.load(artifact).theta_specs)  # raises if torn or corrupt
    meta = info["metadata"]
    return {"sha256": meta["sha256"], "batches": int(json.loads(meta["batches"]))}


def summarise(records: list[dict[str, Any]], lives: list[dict[str, Any]]) -> dict[str, Any]:
    stats = [r for r in records if r.get("event") == "stats"]
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for r in stats:
        by_pid.setdefault(r["pid"], []).append(r)
    rss = []
    for pid, rs in by_pid.items():
        rs = rs[max(1, len(rs) // 10) :]  # after warm-up
        if len(rs) >= 4:
            k = max(1, len(rs) // 10)
            first = sorted(r["rss"] for r in rs[:k])[k // 2]
            last = sorted(r["rss"] for r in rs[-k:])[k // 2]
            rss.append({
                "pid": pid, "samples": len(rs), "first_mib": first / 2**20,
                "last_mib": last / 2**20, "max_mib": max(r["rss"] for r in rs) / 2**20,
                "growth_mib": (last - first) / 2**20,
            })  # fmt: skip
    fails = [r for r in records if r.get("event") == "save_failed"]
    done = next((r for r in reversed(records) if r.get("event") == "done"), {})
    # guard counters live in each worker process: the run's total is the sum of the last
    # report of every life (a killed life's last interval is lost with it)
    guards: dict[str, int] = {}
    for rs in by_pid.values():
        last = (done if done.get("pid") == rs[-1]["pid"] else rs[-1]).get("guards", {})
        for k, v in last.items():
            guards[k] = guards.get(k, 0) + int(v)
    drift = [(r["t"], r["drift"]) for r in stats]
    return {
        "batches": done.get("batches", stats[-1]["batches"] if stats else 0),
        "guards": guards,
        "saves_ok": sum(1 for r in records if r.get("event") == "saved"),
        "saves_failed_full_disk": len(fails),
        "failed_save_messages_one_line": all(r.get("one_line") for r in fails),
        "rss": rss,
        "drift_first": drift[0][1] if drift else None,
        "drift_last": drift[-1][1] if drift else None,
        "drift_max": max((d for _, d in drift), default=None),
        "lives": lives,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--artifact", default=None, help="artifact to soak (default: tiny, trained)")
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR.with_name("s4t-soak"))
    ap.add_argument("--steps", type=int, default=10, help="S4T steps per batch")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--max-drift", type=float, default=None)
    ap.add_argument("--nan-every", type=int, default=50)
    ap.add_argument("--save-every", type=int, default=20)
    ap.add_argument("--report-s", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--check", action="store_true", help="dry run: untrained model, short")
    ap.add_argument(
        "--from-log", action="store_true", help="re-summarise the last run's log, no new run"
    )
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--theta", help=argparse.SUPPRESS)
    ap.add_argument("--t-end", help=argparse.SUPPRESS)
    ap.add_argument("--disk-from", help=argparse.SUPPRESS)
    ap.add_argument("--disk-to", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    from s4t_edge.export import ExportConfig

    if args.from_log:  # the same summary from the last run's log (e.g. after a summary fix)
        name = "soak_check" if args.check else "soak"
        prev = json.loads((args.out / f"{name}.json").read_text())
        summary = summarise(_read_log(args.workdir / "soak.jsonl"), prev["lives"])
        keep = ("minutes", "artifact", "steps", "lr", "nan_every", "save_every", "max_drift")
        summary.update({k: prev[k] for k in (*keep, "final_theta")})
        return write_results(args.out, name, summary)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.artifact:
        art = Path(args.artifact)
    else:
        run = ensure_run("tiny", args.workdir, None, trained=not args.check)
        # the published batch-statistics graphs the README's figures were measured on
        art = ensure_artifact(run, args.workdir / "art", ExportConfig(bn_stats="batch"))
    log_path = args.workdir / "soak.jsonl"
    theta = args.workdir / "theta.safetensors"
    log_path.unlink(missing_ok=True)
    theta.unlink(missing_ok=True)
    t0 = time.time()
    t_end = t0 + args.minutes * 60
    disk = (t0 + 0.4 * args.minutes * 60, t0 + 0.5 * args.minutes * 60)
    kill_at = t0 + random.Random(args.seed).uniform(0.6, 0.8) * args.minutes * 60
    cmd = [
        sys.executable, __file__, "--worker", "--artifact", str(art),
        "--theta", str(theta), "--t-end", str(t_end), "--disk-from", str(disk[0]),
        "--disk-to", str(disk[1]), "--steps", str(args.steps), "--lr", str(args.lr),
        "--nan-every", str(args.nan_every), "--save-every", str(args.save_every),
        "--report-s", str(args.report_s), "--seed", str(args.seed),
    ] + (["--max-drift", str(args.max_drift)] if args.max_drift else [])  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    lives: list[dict[str, Any]] = []
    log(f"soak {args.minutes} min on {art}; full disk {0.4 * args.minutes:.1f}-"
        f"{0.5 * args.minutes:.1f} min, SIGKILL at {(kill_at - t0) / 60:.1f} min")  # fmt: skip

    def start() -> subprocess.Popen:
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
        # the parent writes the log: the worker's file-size limit must not silence it
        threading.Thread(target=_copy_lines, args=(p.stdout, log_path), daemon=True).start()
        return p

    proc = start()
    lives.append({"pid": proc.pid, "start_s": 0.0})
    while time.time() < kill_at and proc.poll() is None:
        time.sleep(0.5)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.5)  # let the copier drain the pipe
        recs = _read_log(log_path)
        saved = [r for r in recs if r.get("event") == "saved"]
        check = {"killed_s": time.time() - t0, "last_logged_save": saved[-1] if saved else None}
        try:
            on_disk = _verify_theta(art, theta)
            check["theta_file"] = on_disk
            # the file is the last save the worker confirmed, or one it finished just before
            # the kill without logging it: never older, never torn
            last = saved[-1]["batches"] if saved else 0
            check["lost"] = on_disk["batches"] < last
        except Exception as e:  # noqa: BLE001 - a torn or missing file is the finding
            check["theta_file"] = f"unreadable: {e}"
            check["lost"] = True
        lives[-1].update(check)
        log(f"SIGKILL at {check['killed_s'] / 60:.1f} min; θ file: {check['theta_file']}")
        proc = start()
        lives.append({"pid": proc.pid, "start_s": time.time() - t0})
    rc = proc.wait()
    time.sleep(0.5)
    lives[-1]["rc"] = rc
    summary = summarise(_read_log(log_path), lives)
    summary.update(
        minutes=args.minutes, artifact=str(art), steps=args.steps, lr=args.lr,
        nan_every=args.nan_every, save_every=args.save_every, max_drift=args.max_drift,
        final_theta=_verify_theta(art, theta) if theta.exists() else None,
    )  # fmt: skip
    write_results(args.out, "soak_check" if args.check else "soak", summary)
    lost = any(life.get("lost") for life in lives)
    sys.exit(1 if lost or rc != 0 else 0)


def write_results(out: Path, name: str, summary: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    rows = [
        [str(r["pid"]), str(r["samples"]), f"{r['first_mib']:.1f}", f"{r['last_mib']:.1f}",
         f"{r['max_mib']:.1f}", f"{r['growth_mib']:+.1f}"]
        for r in summary["rss"]
    ]  # fmt: skip
    minutes = summary["minutes"]
    md = [
        f"# Online soak ({minutes:g} min, `python benchmarks/soak.py --minutes {minutes:g}`)",
        "",
        f"{summary['batches']} batches of 8 (K = {summary['steps']}, SGD lr {summary['lr']:g}, "
        f"online); guards over all worker lives {json.dumps(summary['guards'])}; saves ok "
        f"{summary['saves_ok']}, failed on the full disk {summary['saves_failed_full_disk']} "
        f"(one line each: {summary['failed_save_messages_one_line']}); θ drift from the source "
        f"{summary['drift_first']:.3g} -> {summary['drift_last']:.3g} (max {summary['drift_max']:.3g}).",
        "",
        md_table(
            ["worker pid", "samples", "RSS first MiB", "RSS last MiB", "max MiB", "growth"], rows
        ),
        "",
        "SIGKILL / restart: " + json.dumps(summary["lives"]),
    ]
    (out / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()

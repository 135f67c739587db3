"""One command: the gateway's added latency and throughput against a fast fake upstream.

    .venv/bin/python bench/run.py                  # full matrix, uvicorn
    .venv/bin/python bench/run.py --quick          # a smoke run (fewer requests)
    .venv/bin/python bench/run.py --server daphne  # the same under daphne
    .venv/bin/python bench/run.py --repeat 3       # the matrix 3 times: best and spread

What it does:

1. a throwaway SQLite database in a temporary ``GATEWAY_VAR_DIR``: ``manage.py migrate``,
   then a tenant, a key, an ``openai``-kind provider pointing at the fake upstream, a
   model and its deployment, through the service layer (``manage.py shell -c``);
2. starts ``bench/fake_upstream.py`` and ONE gateway server process (uvicorn with uvloop
   and httptools, ``--no-access-log``, log level warning; ``GATEWAY_LOG_LEVEL=INFO`` so
   the per-request JSON log line stays on, written to a file);
3. warms both up, then for concurrency 1, 10 and 50, non-streaming and streaming, runs
   ``bench/loadgen.py`` directly against the upstream and through the gateway;
4. prints tables and writes ``bench/results/<time>-<server>.json``.

With ``taskset`` available (and at least two CPUs) the gateway runs on CPU 0 and the
upstream and the load generator on CPU 1 (``--no-pin`` turns that off).
See ``bench/README.md`` for what every number means.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
MODEL = "bench-model"
UPSTREAM_MODEL = "fake-model"

TARGETS = {
    "added_p50_ms_c1_chat": 3.0,
    "rps_c50_chat": 250.0,
    "ttft_added_p50_ms_c1_stream": 4.0,
}

SETUP = """
import json, os
from apps.tenants.services import tenant_create
from apps.keys.services import key_create
from apps.providers.services import deployment_create, model_create, provider_create

tenant = tenant_create(name="bench", display_name="Benchmark")
limits = {}
if os.environ.get("BENCH_LIMITS") == "1":
    # Limits and a budget far above what the run uses: every request goes through
    # admission (rpm, tpm, concurrency, budget reservation) and settlement, none refused.
    from apps.billing.services import budget_set

    limits = {"rpm": 100_000_000, "tpm": 2_000_000_000, "max_concurrent": 10_000}
    budget_set(tenant=tenant, period="monthly", limit_usd="1000000")
created = key_create(tenant=tenant, name="bench", secret=os.environ["BENCH_KEY"], **limits)
provider = provider_create(
    name="fake-upstream",
    kind="openai",
    base_url=os.environ["BENCH_UPSTREAM_URL"],
    credential="sk-bench-upstream-credential",
)
model = model_create(
    name=os.environ["BENCH_MODEL"], input_price_per_million="0.15", output_price_per_million="0.60"
)
deployment_create(model=model, provider=provider, upstream_model=os.environ["BENCH_UPSTREAM_MODEL"])
print("BENCH_SETUP " + json.dumps({"tenant": tenant.pk, "key": created.key.prefix, "model": model.pk}))
"""


# --- processes ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def runqueue_wait_ns(pid: int) -> int:
    """Time the process's main thread (the event loop) was runnable but waiting for a CPU.

    From /proc/<pid>/schedstat, in ns. It grows when another process, or one of the
    gateway's own threads (the usage writer, the config poll), holds the gateway's CPU.
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1])
    return 0


def proc_status(pid: int, field: str) -> int | None:
    """A ``kB`` field of /proc/<pid>/status (VmHWM, VmRSS) in kB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def pinned(cmd: list[str], cpu: str | None) -> list[str]:
    return ["taskset", "-c", cpu, *cmd] if cpu is not None else cmd


def wait_http(url: str, headers: dict[str, str], timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} while starting")
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, headers=headers), timeout=5
            ) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s: {last}")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
        self.procs: list[subprocess.Popen] = []
        self.key = "gw-bench-" + secrets.token_urlsafe(24)
        self.upstream_port = free_port()
        self.gateway_port = free_port()
        pin = not args.no_pin and shutil.which("taskset") and (os.cpu_count() or 1) >= 2
        self.gateway_cpu = args.gateway_cpu if pin else None
        self.client_cpu = args.client_cpu if pin else None
        self.env = {
            **os.environ,
            "GATEWAY_VAR_DIR": str(self.tmp),
            "GATEWAY_LOG_LEVEL": "INFO",
            "DEBUG": "false",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        # The embedded setup: SQLite and in-process memory, whatever the shell has.
        for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "SECRET_KEY"):
            self.env.pop(name, None)
        self.gateway: subprocess.Popen | None = None
        self.upstream: subprocess.Popen | None = None
        self.gateway_log = self.tmp / "gateway.log"

    # set-up
    def manage(self, *argv: str, extra_env: dict[str, str] | None = None) -> str:
        out = subprocess.run(
            [PYTHON, str(ROOT / "manage.py"), *argv],
            cwd=ROOT,
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise RuntimeError(f"manage.py {argv[0]} failed:\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def setup_database(self) -> None:
        self.manage("migrate", "--noinput")
        out = self.manage(
            "shell",
            "-c",
            SETUP,
            extra_env={
                "BENCH_KEY": self.key,
                "BENCH_UPSTREAM_URL": f"http://127.0.0.1:{self.upstream_port}/v1",
                "BENCH_MODEL": MODEL,
                "BENCH_UPSTREAM_MODEL": UPSTREAM_MODEL,
                "BENCH_LIMITS": "1" if self.args.limits else "0",
            },
        )
        if "BENCH_SETUP " not in out:
            raise RuntimeError(f"set-up printed nothing useful:\n{out}")

    def start_upstream(self) -> None:
        cmd = [
            PYTHON,
            str(BENCH / "fake_upstream.py"),
            "--port",
            str(self.upstream_port),
            "--chunks",
            str(self.args.chunks),
            "--chunk-delay-ms",
            str(self.args.chunk_delay_ms),
        ]
        self.upstream = subprocess.Popen(
            pinned(cmd, self.client_cpu),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=open(self.tmp / "upstream.err", "wb"),  # noqa: SIM115
            text=True,
        )
        self.procs.append(self.upstream)
        line = self.upstream.stdout.readline() if self.upstream.stdout else ""
        if not line.startswith("READY"):
            raise RuntimeError(f"fake upstream did not start: {line!r}")

    def server_cmd(self) -> list[str]:
        host, port = "127.0.0.1", str(self.gateway_port)
        app = self.args.app
        if self.args.server == "daphne":
            # -v 0: no access log (like uvicorn's --no-access-log), warnings only.
            return [PYTHON, "-m", "daphne", "-b", host, "-p", port, "-v", "0", app]
        return [
            PYTHON,
            "-m",
            "uvicorn",
            app,
            "--host",
            host,
            "--port",
            port,
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ]

    def start_gateway(self) -> None:
        self.gateway = subprocess.Popen(
            pinned(self.server_cmd(), self.gateway_cpu),
            cwd=ROOT,
            env=self.env,
            # The JSON log goes through logging.StreamHandler, i.e. to stderr: both
            # streams go to the file, so writing the log line is part of the cost.
            stdout=open(self.gateway_log, "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        self.procs.append(self.gateway)
        try:
            wait_http(
                f"http://127.0.0.1:{self.gateway_port}/v1/models",
                {"Authorization": f"Bearer {self.key}"},
                60,
                self.gateway,
            )
        except RuntimeError as exc:
            tail = self.gateway_log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{exc}\n--- end of the gateway's log ---\n{tail}") from None

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # measuring
    def loadgen(self, *, through_gateway: bool, stream: bool, concurrency: int, requests: int):
        if through_gateway:
            url = f"http://127.0.0.1:{self.gateway_port}/v1/chat/completions"
            extra = ["--key", self.key, "--model", MODEL]
        else:
            url = f"http://127.0.0.1:{self.upstream_port}/v1/chat/completions"
            extra = ["--model", UPSTREAM_MODEL]
        cmd = [
            PYTHON,
            str(BENCH / "loadgen.py"),
            "--url",
            url,
            "--concurrency",
            str(concurrency),
            "--requests",
            str(requests),
            *extra,
        ]
        if stream:
            cmd.append("--stream")
        watched = [p for p in (self.gateway if through_gateway else None, self.upstream) if p]
        before = {p.pid: cpu_ticks(p.pid) for p in watched}
        waited = runqueue_wait_ns(self.gateway.pid) if through_gateway else 0  # type: ignore[union-attr]
        out = subprocess.run(pinned(cmd, self.client_cpu), capture_output=True, text=True)
        after = {p.pid: cpu_ticks(p.pid) for p in watched}
        if through_gateway:
            waited = runqueue_wait_ns(self.gateway.pid) - waited  # type: ignore[union-attr]
        if out.returncode != 0:
            raise RuntimeError(f"loadgen failed:\n{out.stderr}")
        result = json.loads(out.stdout)
        n = max(result["ok"], 1)
        if through_gateway:
            pid = self.gateway.pid  # type: ignore[union-attr]
            result["gateway_cpu_ms_per_request"] = round(
                (after[pid] - before[pid]) * 1000 / CLK_TCK / n, 3
            )
            result["gateway_runqueue_wait_ms"] = round(waited / 1e6, 1)
        pid = self.upstream.pid  # type: ignore[union-attr]
        result["upstream_cpu_ms_per_request"] = round(
            (after[pid] - before[pid]) * 1000 / CLK_TCK / n, 3
        )
        return result

    def warm_up(self) -> None:
        n = self.args.warmup
        if not n:
            return
        for through_gateway in (False, True):
            for stream in (False, True):
                for concurrency in (1, max(self.args.concurrency)):
                    self.loadgen(
                        through_gateway=through_gateway,
                        stream=stream,
                        concurrency=concurrency,
                        requests=n,
                    )

    def scenario(self, stream: bool, concurrency: int) -> dict[str, Any]:
        requests = self.args.requests
        if concurrency == 1 and self.args.requests_c1:
            requests = self.args.requests_c1
        direct = self.loadgen(
            through_gateway=False, stream=stream, concurrency=concurrency, requests=requests
        )
        gateway = self.loadgen(
            through_gateway=True, stream=stream, concurrency=concurrency, requests=requests
        )
        return derive(stream, concurrency, direct, gateway)


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def derive(stream: bool, concurrency: int, direct: dict, gateway: dict) -> dict[str, Any]:
    row: dict[str, Any] = {
        "mode": "stream" if stream else "chat",
        "concurrency": concurrency,
        "direct_p50_ms": direct["latency_ms"]["p50"],
        "direct_p99_ms": direct["latency_ms"]["p99"],
        "gateway_p50_ms": gateway["latency_ms"]["p50"],
        "gateway_p99_ms": gateway["latency_ms"]["p99"],
        "added_p50_ms": _sub(gateway["latency_ms"]["p50"], direct["latency_ms"]["p50"]),
        "added_p99_ms": _sub(gateway["latency_ms"]["p99"], direct["latency_ms"]["p99"]),
        "direct_rps": direct["rps"],
        "gateway_rps": gateway["rps"],
        "gateway_cpu_ms_per_request": gateway["gateway_cpu_ms_per_request"],
        # % of the run's wall time the event loop was ready to run but its CPU was taken
        "gateway_runqueue_wait_pct": round(
            100 * gateway["gateway_runqueue_wait_ms"] / 1000 / max(gateway["wall_s"], 1e-9), 2
        ),
        "upstream_cpu_ms_per_request": gateway["upstream_cpu_ms_per_request"],
        "loadgen_cpu_ms_per_request": gateway["loadgen_cpu_ms_per_request"],
        "errors": {"direct": direct["errors"], "gateway": gateway["errors"]},
        "requests": {"direct": direct["ok"], "gateway": gateway["ok"]},
        "raw": {"direct": direct, "gateway": gateway},
    }
    if stream:
        row.update(
            {
                "direct_ttft_p50_ms": direct["ttft_ms"]["p50"],
                "direct_ttft_p99_ms": direct["ttft_ms"]["p99"],
                "gateway_ttft_p50_ms": gateway["ttft_ms"]["p50"],
                "gateway_ttft_p99_ms": gateway["ttft_ms"]["p99"],
                "ttft_added_p50_ms": _sub(gateway["ttft_ms"]["p50"], direct["ttft_ms"]["p50"]),
                "ttft_added_p99_ms": _sub(gateway["ttft_ms"]["p99"], direct["ttft_ms"]["p99"]),
            }
        )
    return row


# --- reporting ----------------------------------------------------------------


def best_of(runs: list[dict]) -> dict[str, Any]:
    """Per figure, the best value over the repeats (max for req/s, min otherwise) and the spread."""
    best: dict[str, Any] = {"mode": runs[0]["mode"], "concurrency": runs[0]["concurrency"]}
    spread: dict[str, list] = {}
    for name in runs[0]:
        values = [r[name] for r in runs if isinstance(r.get(name), int | float)]
        if not values or name == "concurrency":
            continue
        spread[name] = [min(values), max(values)]
        best[name] = max(values) if name.endswith("rps") else min(values)
    best["spread"] = spread
    return best


def fmt(value: Any, width: int = 8) -> str:
    if value is None:
        return "-".rjust(width)
    if isinstance(value, float):
        return (f"{value:.0f}" if abs(value) >= 1000 else f"{value:.2f}").rjust(width)
    return str(value).rjust(width)


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    header = "".join(title.rjust(max(8, len(title)) + 1) for _, title in columns)
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append("".join(" " + fmt(row.get(key), max(8, len(title))) for key, title in columns))
    return "\n".join(lines)


CHAT_COLUMNS = [
    ("concurrency", "conc"),
    ("direct_p50_ms", "direct p50"),
    ("direct_p99_ms", "direct p99"),
    ("gateway_p50_ms", "gw p50"),
    ("gateway_p99_ms", "gw p99"),
    ("added_p50_ms", "added p50"),
    ("added_p99_ms", "added p99"),
    ("direct_rps", "direct rps"),
    ("gateway_rps", "gw rps"),
    ("gateway_cpu_ms_per_request", "gw cpu/req"),
    ("gateway_runqueue_wait_pct", "cpu wait %"),
]
STREAM_COLUMNS = [
    *CHAT_COLUMNS,
    ("gateway_ttft_p50_ms", "gw ttft p50"),
    ("gateway_ttft_p99_ms", "gw ttft p99"),
    ("ttft_added_p50_ms", "ttft+ p50"),
    ("ttft_added_p99_ms", "ttft+ p99"),
]


def check_targets(rows: list[dict]) -> dict[str, dict]:
    def pick(mode: str, concurrency: int) -> dict:
        return next(r for r in rows if r["mode"] == mode and r["concurrency"] == concurrency)

    found: dict[str, Any] = {}
    with contextlib.suppress(StopIteration):
        found["added_p50_ms_c1_chat"] = pick("chat", 1)["added_p50_ms"]
    with contextlib.suppress(StopIteration):
        found["rps_c50_chat"] = pick("chat", 50)["gateway_rps"]
    with contextlib.suppress(StopIteration):
        found["ttft_added_p50_ms_c1_stream"] = pick("stream", 1)["ttft_added_p50_ms"]
    out = {}
    for name, value in found.items():
        target = TARGETS[name]
        ok = value >= target if name.startswith("rps") else value <= target
        out[name] = {"measured": value, "target": target, "met": ok}
    return out


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in (
        "django",
        "uvicorn",
        "uvloop",
        "httptools",
        "daphne",
        "httpx",
        "httpx-aiohttp",
        "aiohttp",
        "orjson",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
    }


def git_revision() -> str | None:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    return None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(bench: Bench) -> None:
    print(
        f"gateway pid {bench.gateway.pid}: http://127.0.0.1:{bench.gateway_port}/v1 "  # type: ignore[union-attr]
        f"(model {MODEL}, key {bench.key})\n"
        f"upstream pid {bench.upstream.pid}: http://127.0.0.1:{bench.upstream_port}/v1 "  # type: ignore[union-attr]
        f"(model {UPSTREAM_MODEL})\n"
        f"gateway log: {bench.gateway_log}\n"
        f"load: {PYTHON} bench/loadgen.py --url http://127.0.0.1:{bench.gateway_port}"
        f"/v1/chat/completions --key {bench.key} --model {MODEL} -c 50 -d 20\n"
        f"profile: py-spy record -p {bench.gateway.pid} -o profile.svg -d 15\n"  # type: ignore[union-attr]
        "Ctrl-C stops.",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        while all(p.poll() is None for p in bench.procs):
            time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Gateway added-latency and throughput benchmark (see bench/README.md)."
    )
    parser.add_argument("--server", choices=("uvicorn", "daphne"), default="uvicorn")
    parser.add_argument("--quick", action="store_true", help="300 requests a run, short warm-up")
    parser.add_argument("--requests", "-n", type=int, help="requests per run (default 3000)")
    parser.add_argument("--requests-c1", type=int, help="requests per run at concurrency 1")
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10, 50]
    )
    parser.add_argument("--modes", default="chat,stream", help="chat,stream or one of them")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--warmup", type=int, help="requests per warm-up run (default 500)")
    parser.add_argument("--repeat", type=int, default=1, help="run the matrix this many times")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--gateway-cpu", default="0")
    parser.add_argument("--client-cpu", default="1", help="CPU(s) of the upstream and loadgen")
    parser.add_argument(
        "--app",
        default="gateway_project.asgi:application",
        help="the ASGI application to serve (a variant to compare, importable via PYTHONPATH)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--limits",
        action="store_true",
        help="give the key rpm/tpm/concurrency limits and the tenant a budget (none reached)",
    )
    parser.add_argument("--label", default="", help="a note stored with the results")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="set up, start the upstream and the gateway, print how to reach them and wait "
        "(for profiling with py-spy); Ctrl-C stops",
    )
    args = parser.parse_args(argv)
    if args.requests is None:
        args.requests = 300 if args.quick else 3000
    if args.warmup is None:
        args.warmup = 100 if args.quick else 500
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]

    # Stop cleanly (the finally below ends the servers) on Ctrl-C and on SIGTERM, also when
    # started in the background, where the shell ignores SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    bench = Bench(args)
    started = dt.datetime.now(dt.UTC)
    load_before = loadavg()
    print(f"load average before: {load_before}", flush=True)
    print(
        f"server: {args.server}; pinning: gateway on CPU {bench.gateway_cpu}, "
        f"upstream and loadgen on CPU {bench.client_cpu}; temp dir {bench.tmp}",
        flush=True,
    )
    runs: list[list[dict]] = []
    try:
        bench.setup_database()
        bench.start_upstream()
        bench.start_gateway()
        gateway_pid = bench.gateway.pid  # type: ignore[union-attr]
        rss_start = proc_status(gateway_pid, "VmRSS")
        if args.serve:
            serve(bench)
            return 0
        bench.warm_up()
        for repeat in range(args.repeat):
            rows = []
            for mode in modes:
                for concurrency in args.concurrency:
                    row = bench.scenario(mode == "stream", concurrency)
                    rows.append(row)
                    print(
                        f"[{repeat + 1}/{args.repeat}] {mode:6} c={concurrency:<3} "
                        f"gw p50 {row['gateway_p50_ms']} ms, added p50 {row['added_p50_ms']} ms, "
                        f"{row['gateway_rps']} req/s, cpu {row['gateway_cpu_ms_per_request']} ms/req"
                        + (
                            f", ttft+ p50 {row['ttft_added_p50_ms']} ms" if mode == "stream" else ""
                        ),
                        flush=True,
                    )
            runs.append(rows)
        vm_hwm = proc_status(gateway_pid, "VmHWM")
        rss_end = proc_status(gateway_pid, "VmRSS")
        log_lines = sum(
            1
            for line in bench.gateway_log.read_text(errors="replace").splitlines()
            if '"gateway.request"' in line
        )
    finally:
        bench.stop()
    load_after = loadavg()

    summary = [best_of([rows[i] for rows in runs]) for i in range(len(runs[0]))]
    # One JSON log line per chat request through the gateway: measured + warm-up.
    warmup_requests = args.warmup * 2 * 2 if args.warmup else 0
    expected_lines = sum(r["requests"]["gateway"] for rows in runs for r in rows) + warmup_requests
    result = {
        "started": started.isoformat(timespec="seconds"),
        "server": args.server,
        "label": args.label,
        "git": git_revision(),
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "pinning": {"gateway": bench.gateway_cpu, "upstream_and_loadgen": bench.client_cpu},
        "settings": {
            "requests": args.requests,
            "requests_c1": args.requests_c1 or args.requests,
            "warmup": args.warmup,
            "repeat": args.repeat,
            "chunks": args.chunks,
            "chunk_delay_ms": args.chunk_delay_ms,
            "concurrency": args.concurrency,
        },
        "gateway": {
            "command": bench.server_cmd()[1:],
            "vm_hwm_kb": vm_hwm,
            "rss_after_start_kb": rss_start,
            "rss_end_kb": rss_end,
            "request_log_lines": log_lines,
            "expected_request_log_lines": expected_lines,
        },
        "summary": summary,
        "targets": check_targets(summary),
        "runs": runs,
    }

    title = f"best of {args.repeat} runs" if args.repeat > 1 else "one run"
    print()
    print(f"== {args.server}, {title}; latencies in ms ==")
    if "chat" in modes:
        print("\nnon-streaming chat completions")
        print(table([r for r in summary if r["mode"] == "chat"], CHAT_COLUMNS))
    if "stream" in modes:
        print(f"\nstreaming ({args.chunks} content chunks; ttft = first content chunk)")
        print(table([r for r in summary if r["mode"] == "stream"], STREAM_COLUMNS))
    if args.repeat > 1:
        print("\nspread over the runs (min-max)")
        for row in summary:
            s = row["spread"]
            bits = [
                f"added p50 {s['added_p50_ms'][0]:.2f}-{s['added_p50_ms'][1]:.2f}",
                f"rps {s['gateway_rps'][0]:.0f}-{s['gateway_rps'][1]:.0f}",
                f"cpu/req {s['gateway_cpu_ms_per_request'][0]:.2f}-{s['gateway_cpu_ms_per_request'][1]:.2f}",
            ]
            if "ttft_added_p50_ms" in s:
                bits.append(
                    f"ttft+ p50 {s['ttft_added_p50_ms'][0]:.2f}-{s['ttft_added_p50_ms'][1]:.2f}"
                )
            print(f"  {row['mode']:6} c={row['concurrency']:<3} " + ", ".join(bits))
    print(
        f"\ngateway peak RSS (VmHWM): {vm_hwm / 1024:.1f} MiB; "
        f"request log lines: {log_lines} (requests sent: {expected_lines})"
        if vm_hwm
        else ""
    )
    print(f"load average before: {load_before}; after: {load_after}")
    print("\ntargets:")
    for name, t in result["targets"].items():
        print(f"  {name}: {t['measured']} (target {t['target']}) {'met' if t['met'] else 'MISSED'}")
    errors = {
        f"{r['mode']} c={r['concurrency']}": r["errors"]
        for rows in runs
        for r in rows
        if r["errors"]["direct"] or r["errors"]["gateway"]
    }
    if errors:
        print(f"\nERRORS: {errors}")

    RESULTS.mkdir(exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{stamp}-{args.server}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults: {path.relative_to(ROOT)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

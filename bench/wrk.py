"""Closed-loop maximum rates with wrk: Lua scripts for Herald's requests, results as JSON."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "BENCH_JSON "

# wrk calls done() once, in its main Lua state, after every thread has finished.
_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\\n',
    "MARKER", summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
""".replace("MARKER", MARKER)


def lua_headers(headers: Mapping[str, str]) -> str:
    # wrk.format, and the requests wrk builds itself, send wrk.headers.
    return "".join(f'wrk.headers["{name}"] = "{value}"\n' for name, value in headers.items())


def post_script(path: str, body: str, headers: Mapping[str, str]) -> str:
    """Every request the same POST with a JSON body, and headers (the key)."""
    return f"""
wrk.method = "POST"
wrk.path = "{path}"
wrk.headers["Content-Type"] = "application/json"
{lua_headers(headers)}wrk.body = [==[{body}]==]
{_DONE}"""


def random_get_script(ids_file: Path, template: str, headers: Mapping[str, str]) -> str:
    """GET template % id for an id drawn at random from ids_file (one id per line), with
    headers (the key)."""
    prefix, suffix = template.split("{id}")
    return f"""
{lua_headers(headers)}local ids = {{}}
init = function(args)
  for line in io.lines("{ids_file}") do ids[#ids + 1] = line end
  math.randomseed(os.time() + tonumber(tostring(ids):match("0x(%x+)") or "0", 16) % 100000)
end
request = function()
  local id = ids[math.random(#ids)]
  return wrk.format("GET", "{prefix}" .. id .. "{suffix}")
end
{_DONE}"""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: the rate of good answers, latencies in ms, and every error counted."""

    requests: int
    seconds: float
    errors: dict[str, int]
    latency_ms: dict[str, float]

    @property
    def good(self) -> int:
        # wrk counts non-2xx/3xx answers as requests too, and as "status" errors.
        return self.requests - self.errors["status"]

    @property
    def rate(self) -> float:
        return self.good / self.seconds

    def as_json(self) -> dict[str, Any]:
        return {
            "rate": round(self.rate, 1),
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "errors": self.errors,
            "latency_ms": self.latency_ms,
        }


def run_wrk(
    url: str,
    script: str,
    *,
    seconds: float,
    connections: int,
    threads: int,
    timeout_s: float = 10.0,
) -> WrkResult:
    """Run wrk against url with a Lua script; SystemExit if it fails or prints no result."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-") as lua:
        lua.write(script)
        lua.flush()
        argv = [
            "wrk",
            f"-t{min(threads, connections)}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            f"--timeout={max(1, round(timeout_s))}s",
            "-s",
            lua.name,
            url,
        ]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"bench: wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    raw = json.loads(lines[-1][len(MARKER) :])
    errors = {k: int(raw[k]) for k in ("connect", "read", "write", "status", "timeout")}
    latency = {k[:-3]: raw[k] / 1000 for k in ("p50_us", "p90_us", "p99_us", "max_us", "mean_us")}
    return WrkResult(int(raw["requests"]), raw["duration_us"] / 1e6, errors, latency)

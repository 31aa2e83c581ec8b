"""Prometheus text metrics, kept by hand (no client library): counters, gauges read at scrape
time, and histograms of request and streamed-frame latencies."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable

# Seconds: a streamed tiny frame takes milliseconds, a full-size CPU frame minutes.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out, running = [], 0
        for bound, count in zip((*BUCKETS, "+Inf"), self.counts):
            running += count
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {running}')
        suffix = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{suffix} {self.total:.6f}")
        out.append(f"{name}_count{suffix} {running}")
        return out


class Metrics:
    """Thread-safe counters and histograms; `render` writes the exposition format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.frames_tracked = 0
        self.sessions_expired = 0
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._latency: dict[str, _Histogram] = defaultdict(_Histogram)
        self._frame_latency = _Histogram()
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """A value read when scraped (open sessions, running streams)."""
        self._gauges[name] = (help_text, read)

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(method, route, status)] += 1
            self._latency[route].observe(seconds)

    def frame(self, seconds: float) -> None:
        """One frame tracked by a propagation (its compute and encoding time)."""
        with self._lock:
            self.frames_tracked += 1
            self._frame_latency.observe(seconds)

    def expired(self, count: int) -> None:
        with self._lock:
            self.sessions_expired += count

    def render(self) -> str:
        lines: list[str] = []
        for name, (help_text, read) in self._gauges.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {read()}"]
        with self._lock:
            lines += [
                "# HELP sam3video_frames_tracked_total Frames yielded by propagations.",
                "# TYPE sam3video_frames_tracked_total counter",
                f"sam3video_frames_tracked_total {self.frames_tracked}",
                "# HELP sam3video_sessions_expired_total Sessions closed after their idle TTL.",
                "# TYPE sam3video_sessions_expired_total counter",
                f"sam3video_sessions_expired_total {self.sessions_expired}",
                "# HELP sam3video_requests_total HTTP requests by route and status.",
                "# TYPE sam3video_requests_total counter",
            ]
            for (method, route, status), count in sorted(self._requests.items()):
                labels = f'method="{method}",route="{route}",status="{status}"'
                lines.append(f"sam3video_requests_total{{{labels}}} {count}")
            lines += [
                "# HELP sam3video_request_duration_seconds Time to the end of the response.",
                "# TYPE sam3video_request_duration_seconds histogram",
            ]
            for route, histogram in sorted(self._latency.items()):
                lines += histogram.lines("sam3video_request_duration_seconds", f'route="{route}"')
            lines += [
                "# HELP sam3video_frame_seconds Time to track and encode one streamed frame.",
                "# TYPE sam3video_frame_seconds histogram",
                *self._frame_latency.lines("sam3video_frame_seconds", ""),
            ]
        return "\n".join(lines) + "\n"

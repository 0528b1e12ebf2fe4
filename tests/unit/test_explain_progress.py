"""explain --flows: progress on a terminal only, and a summary line at the end either way."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from pathlib import Path

from drop_explainer import demo
from drop_explainer.progress import CHECK_EVERY, Progress

DAEMON = Path(__file__).resolve().parents[2] / "daemon"
INCIDENT = demo.incident_dir()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.01
        return self.now


def test_progress_is_drawn_on_a_terminal_only_and_gives_way_to_the_summary(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_text("x" * 1000)
    for tty in (True, False):
        err = io.StringIO()
        p = Progress(err, str(path), clock=Clock(), tty=tty)
        for _ in range(CHECK_EVERY * 200):
            p.tick()
        line = p.summary(dropped=7, kinds=2, malformed=1, unexplainable=0, other=3)
        text = err.getvalue()
        assert text.endswith(line + "\n")
        assert line.startswith(f"explain: {path}: {CHECK_EVERY * 200:,} records in ")
        assert "7 dropped or audit flow(s) in 2 kind(s) of drop, 3 of other verdicts, 1 malformed" in line
        if tty:
            assert "\rexplain: 51,200 records read of a 0.0 MB file" in text
            assert "\r\033[K" + line in text, "the progress line is cleared before the summary"
        else:
            assert "\r" not in text


def _big_file(tmp_path: Path, copies: int) -> Path:
    lines = (INCIDENT / "hubble-flows.jsonl").read_text().splitlines()
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(lines * copies) + "\n")
    return path


def _explain(flows: Path, stderr: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "drop_explainer.cli", "explain", "--state", str(INCIDENT),
                             "--flows", str(flows), "-o", "json"], stdout=subprocess.DEVNULL, stderr=stderr,
                            env={**os.environ, "PYTHONPATH": str(DAEMON)})


def test_the_real_cli_draws_progress_on_a_pty_and_not_on_a_pipe(tmp_path: Path) -> None:
    """40,000 records (~2 s): on a pseudo-terminal the progress line appears; on a pipe only the summary."""
    flows = _big_file(tmp_path, 40_000 // 24)
    primary, secondary = pty.openpty()
    try:
        proc = _explain(flows, secondary)
        os.close(secondary)
        seen = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(timeout=120) == 0
    finally:
        os.close(primary)
    text = seen.decode()
    assert "\rexplain: " in text
    assert "records read of a " in text
    assert text.rstrip().splitlines()[-1].split("\x1b[K")[-1].startswith(f"explain: {flows}: 39,984 records in ")

    piped = _explain(flows, subprocess.PIPE)
    _, err = piped.communicate(timeout=120)
    assert piped.returncode == 0
    assert b"\r" not in err
    assert err.decode().splitlines() == [err.decode().splitlines()[-1]]
    assert err.decode().startswith(f"explain: {flows}: 39,984 records in ")

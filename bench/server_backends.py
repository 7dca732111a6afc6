"""What refineloop adds per image on top of a ComfyUI server, and how far the server backends reach into the rest.

Run from the repository root: `python bench/server_backends.py`. A fake ComfyUI (tests/fake_comfyui.py) that
answers at once draws 64 px images; the same protocol is then spoken twice against it:

- **bare**: a plain script queues the workflow (POST /prompt), waits on its websocket (opened once, as
  refineloop's is) for the prompt to finish, reads /history and fetches the PNG from /view: the transfer and the
  server's own work, nothing else;
- **refineloop**: `ComfyImageModel.generate` (fill the workflow, queue, follow, fetch, decode), one image a call,
  and `generate_many` with four candidates queued at once.

The difference per image is what refineloop adds. It also counts the files the backends touched outside their
own packages (from `git diff` against the commit before them). Prints figures only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE_COMMIT = "8ff8748"  # the backend table, before the server backends


def _import_path() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


class Bare:
    """The plainest client the API allows, holding one websocket like refineloop's: the floor any client pays."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self.url, self.client = url, uuid.uuid4().hex
        self.held = contextlib.ExitStack()
        address = url.replace("http", "ws", 1) + f"/ws?clientId={self.client}"
        self.socket = self.held.enter_context(connect(address, compression=None))

    def image(self, workflow: dict[str, object]) -> bytes:
        """Queue, wait for the socket's word, read the history (once it is filed), fetch the PNG."""
        body = json.dumps({"prompt": workflow, "client_id": self.client}).encode()
        request = urllib.request.Request(self.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request) as answer:
            prompt_id = json.loads(answer.read())["prompt_id"]
        while True:
            event = json.loads(self.socket.recv())
            data = event.get("data") or {}
            if event.get("type") == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                break
        entry = None
        while entry is None:  # ComfyUI files the history a moment after announcing the prompt done
            with urllib.request.urlopen(f"{self.url}/history/{prompt_id}") as answer:
                entry = json.loads(answer.read()).get(prompt_id)
        reference = entry["outputs"]["9"]["images"][0]
        with urllib.request.urlopen(f"{self.url}/view?filename={reference['filename']}&subfolder=&type=output") as got:
            data_bytes: bytes = got.read()
        return data_bytes


def serve_fake() -> None:
    """Child process: run the fake ComfyUI, print its URL, and serve until stdin closes."""
    _import_path()
    from tests.fake_comfyui import fake_comfyui

    with fake_comfyui() as (_, url):
        print(url, flush=True)
        sys.stdin.read()


def measure(fn: Callable[[], object], images: int) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) per image of one call of `fn` making `images` images."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - wall) / images, (time.process_time() - cpu) / images


RUN_IMAGES = 12


def whole_run(spec: str, url: str) -> float:
    """Best of three: seconds per image of a whole `refineloop run` (the loop around the backend included)."""
    import io

    from refineloop.cli.main import main as cli

    best = float("inf")
    for _ in range(3):
        out = Path(tempfile.mkdtemp()) / "run"
        flags = ["--max-iterations", str(RUN_IMAGES), "--seed", "1", "--output-dir", str(out), "--final-pick", "0"]
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            cli(["run", "--image-model", spec, "--comfyui-url", url, "--strategy", "greedy", *flags])
        made = len(list(out.glob("[0-9][0-9].png")))  # a DONE may stop the run early
        best = min(best, (time.perf_counter() - started) / max(1, made))
    return best


def touched_files() -> tuple[list[str], list[str]]:
    """(files that existed before and were edited, new files) since BASE_COMMIT, outside the backends' own
    packages, tests, docs and bench."""

    def names(*flags: str) -> list[str]:
        return subprocess.run(
            ["git", "diff", "--name-only", *flags, BASE_COMMIT, "--", "refineloop", "pyproject.toml"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()

    own = ("refineloop/backends/image/comfyui/", "refineloop/backends/image/a1111/")
    edited = [n for n in names("--diff-filter=M") if not n.startswith(own)]
    added = [n for n in names("--diff-filter=A") if not n.startswith(own)]
    return edited, added


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_fake()
        return
    _import_path()
    from refineloop.backends.image.comfyui.client import ComfyClient
    from refineloop.backends.image.comfyui.entry import read_workflow
    from refineloop.backends.image.comfyui.model import ComfyImageModel
    from refineloop.backends.image.comfyui.workflow import Values, fill
    from refineloop.backends.image.protocol import ImageRequest
    from tests.fake_comfyui import api_workflow

    # The fake runs in its own process, so this one's CPU time is the client's alone.
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        url = (child.stdout.readline() if child.stdout else "").strip()
        path = Path(tempfile.mkdtemp()) / "workflow_api.json"
        path.write_text(json.dumps(api_workflow()))
        _, text, workflow, places = read_workflow(f"comfyui:{path}")
        model = ComfyImageModel(path, text, workflow, places, ComfyClient(url))
        one = ImageRequest(prompt="a hotdog on fire", negative_prompt="blur", seeds=(7,), width=64, height=64)
        four = ImageRequest(prompt=one.prompt, negative_prompt="blur", seeds=(1, 2, 3, 4), width=64, height=64)
        filled = fill(workflow, places, Values(one.prompt, "blur", 7, width=64, height=64))[0]
        bare = Bare(url)
        rows: dict[str, list[tuple[float, float]]] = {"bare": [], "one": [], "four": []}
        for round_number in range(args.repeats + 3):  # interleaved, so a busy moment hits all three alike
            figures = {
                "bare": measure(lambda: bare.image(filled), 1),
                "one": measure(lambda: model.generate(one), 1),
                "four": measure(lambda: model.generate(four), 4),
            }
            if round_number >= 3:  # the first rounds warm imports and connections
                for key, value in figures.items():
                    rows[key].append(value)
        loop = {
            name: whole_run(spec, url) for name, spec in (("sketch", "sketch:size=64"), ("comfyui", f"comfyui:{path}"))
        }
    finally:
        if child.stdin:
            child.stdin.close()
        child.wait(timeout=10)
    wall = {key: statistics.median(v[0] for v in values) * 1000 for key, values in rows.items()}
    cpu = {key: statistics.median(v[1] for v in values) * 1000 for key, values in rows.items()}
    print(f"fake ComfyUI in its own process, 64 px images, {args.repeats} interleaved rounds, medians per image:")
    labels = {
        "bare": "bare protocol script (queue, websocket, history, view)",
        "one": "refineloop generate, one image a call",
        "four": "refineloop generate, 4 candidates queued at once",
    }
    for key, label in labels.items():
        print(f"  {label:<56} {wall[key]:6.1f} ms wall {cpu[key]:5.1f} ms CPU")
    added_wall, added_cpu = wall["one"] - wall["bare"], cpu["one"] - cpu["bare"]
    print(
        f"  {'refineloop adds per image (one a call, over bare)':<56} {added_wall:6.1f} ms wall {added_cpu:5.1f} ms CPU"
    )
    print(f"whole runs through the CLI (up to {RUN_IMAGES} images, greedy, demo critic, best of 3), per image made:")
    for name, seconds in loop.items():
        print(f"  --image-model {name:<8} {seconds * 1000:6.1f} ms")
    edited, added = touched_files()
    print(f"existing files edited outside the backends' packages: {len(edited)}: {', '.join(edited)}")
    print(f"new files outside them: {len(added)}: {', '.join(added)}")


if __name__ == "__main__":
    main()

"""What refineloop adds per image on top of a ComfyUI server, and how far the server backends reach into the rest.

Run from the repository root: `python bench/server_backends.py`. A fake ComfyUI (tests/fake_comfyui.py) that
answers at once draws 64 px images; the same protocol is then spoken twice against it:

- **bare**: a plain script queues the workflow (POST /prompt), waits on the websocket for the prompt to finish,
  reads /history and fetches the PNG from /view: the transfer and the server's own work, nothing else;
- **refineloop**: `ComfyImageModel.generate` (fill the workflow, queue, follow, fetch, decode), one image a call,
  and `generate_many` with four candidates queued at once.

The difference per image is what refineloop adds. It also counts the files the backends touched outside their
own packages (from `git diff` against the commit before them). Prints figures only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE_COMMIT = "8ff8748"  # the backend table, before the server backends


def _import_path() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def bare_image(url: str, workflow: dict[str, object]) -> bytes:
    """One image the plainest way the API allows: the floor any client pays."""
    from websockets.sync.client import connect

    client = uuid.uuid4().hex
    with connect(url.replace("http", "ws", 1) + f"/ws?clientId={client}", compression=None) as socket:
        body = json.dumps({"prompt": workflow, "client_id": client}).encode()
        request = urllib.request.Request(url + "/prompt", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request) as answer:
            prompt_id = json.loads(answer.read())["prompt_id"]
        while True:
            event = json.loads(socket.recv())
            data = event.get("data") or {}
            if event.get("type") == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                break
    with urllib.request.urlopen(f"{url}/history/{prompt_id}") as answer:
        entry = json.loads(answer.read())[prompt_id]
    reference = entry["outputs"]["9"]["images"][0]
    with urllib.request.urlopen(f"{url}/view?filename={reference['filename']}&subfolder=&type=output") as answer:
        data: bytes = answer.read()
    return data


def per_image(fn: object, images: int, repeats: int) -> float:
    """Median seconds per image over `repeats` calls of `fn`, each making `images` images."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - start) / images)
    return statistics.median(times)


def touched_files() -> list[str]:
    """Files changed since BASE_COMMIT outside the backends' own packages, tests and bench."""
    names = subprocess.run(
        ["git", "diff", "--name-only", BASE_COMMIT, "--", "refineloop", "pyproject.toml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    own = ("refineloop/backends/image/comfyui/", "refineloop/backends/image/a1111/")
    return [name for name in names if not name.startswith(own)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    _import_path()
    from refineloop.backends.image.comfyui.entry import read_workflow
    from refineloop.backends.image.comfyui.model import ComfyImageModel
    from refineloop.backends.image.comfyui.workflow import Values, fill
    from refineloop.backends.image.protocol import ImageRequest
    from tests.fake_comfyui import api_workflow, fake_comfyui

    folder = Path(__import__("tempfile").mkdtemp())
    path = folder / "workflow_api.json"
    path.write_text(json.dumps(api_workflow()))
    with fake_comfyui() as (_, url):
        from refineloop.backends.image.comfyui.client import ComfyClient

        _, text, workflow, places = read_workflow(f"comfyui:{path}")
        model = ComfyImageModel(path, text, workflow, places, ComfyClient(url))
        request = ImageRequest(prompt="a hotdog on fire", negative_prompt="blur", seeds=(7,), width=64, height=64)
        four = ImageRequest(prompt=request.prompt, negative_prompt="blur", seeds=(1, 2, 3, 4), width=64, height=64)
        filled = fill(workflow, places, Values(request.prompt, "blur", 7, width=64, height=64))[0]
        for _ in range(3):  # warm both paths (imports, first connections)
            bare_image(url, filled)
            model.generate(request)
        bare = per_image(lambda: bare_image(url, filled), 1, args.repeats)
        ours = per_image(lambda: model.generate(request), 1, args.repeats)
        batched = per_image(lambda: model.generate(four), 4, max(3, args.repeats // 4))
    print(f"bare ComfyUI protocol (queue, websocket, history, view), 64 px: {bare * 1000:.1f} ms per image")
    print(f"refineloop ComfyImageModel.generate, one image a call:         {ours * 1000:.1f} ms per image")
    print(f"refineloop adds per image:                                      {(ours - bare) * 1000:.1f} ms")
    print(f"refineloop generate_many-style call of 4 candidates queued at once: {batched * 1000:.1f} ms per image")
    files = touched_files()
    print(f"files touched outside the server backends' packages: {len(files)}: {', '.join(files)}")


if __name__ == "__main__":
    main()
